"""Why SAO works, in figures and tables (paper Figs. 7–11, Table 6).

Each analysis writes PNG + CSV + Markdown into an output folder:

- :func:`run_spectrum` — adjacency spectra of SAO layers vs random biregular graphs and EOI (Fig. 7);
- :func:`run_reachability` — input→output reachability over depth per method (Fig. 8);
- :func:`run_singular_values` — one layer's Jacobian spectrum and KS test vs dense orthogonal
  (Figs. 9–10, Table 6);
- :func:`run_jacobian` — end-to-end Jacobian spectrum of FNN-N at initialisation (static Fig. 11).
"""

from sao._extras import require_extra

require_extra(__name__)  # the experiments extra, before any module that needs it

from sao.analysis.jacobian import run_jacobian
from sao.analysis.reachability import run_reachability
from sao.analysis.singular_values import run_singular_values
from sao.analysis.spectrum import run_spectrum

__all__ = ["run_jacobian", "run_reachability", "run_singular_values", "run_spectrum"]
