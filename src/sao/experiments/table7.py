"""Paper Table 7 / Fig. 11: deep sparse tanh MLPs (FNN-N) on MNIST, every method, every depth.

One run = one (method, depth, seed). The model is FNN-N (paper Table 1), every layer orthogonal
with the paper's gain 1.1, then made sparse by the method at degree 4 (98.4 % sparse in the
256-wide layers; the first and last layers stay dense). SGD with momentum 0.9, weight decay
1e-4, the learning rate by depth of the paper's Table 7 settings (:func:`lr_for_depth`).
The presets are listed in :data:`TABLE7` (``sao reproduce table7 --help``): ``paper`` keeps these
settings; ``quick`` and ``cpu`` use gain 1.02 and lr 1e-3 at batch 32, where a 1000-layer bias-free
tanh network is near-critical and trains in a few epochs (``docs/study-depth1000.md``; at gain 1.1 it
is chaotic at that depth).
"""

from __future__ import annotations

from sao._validation import as_int
from sao.experiments.config import MethodConfig, ModelConfig, RunConfig
from sao.experiments.spec import EXPERIMENTS, ExperimentSpec, Preset
from sao.training import TrainConfig

__all__ = ["PAPER_METHODS", "TABLE7", "lr_for_depth"]


def lr_for_depth(depth: int) -> float:
    """The paper's FNN-N learning rate for depth ``N`` (paper Table 2, used for Table 7).

    The paper gives ``N ≤ 60: 1e-2``, ``200: 1e-3``, ``400: 1e-3``, ``600–1000: 1e-4``.
    Depths between table entries take the rate of the next listed depth up
    (``60 < N ≤ 400 → 1e-3``); every ``N > 400`` gets ``1e-4``.

    Example:
        >>> [lr_for_depth(n) for n in (50, 100, 400, 1000)]
        [0.01, 0.001, 0.001, 0.0001]
    """
    depth = as_int(depth, "depth", minimum=1)
    if depth <= 60:
        return 1e-2
    if depth <= 400:
        return 1e-3
    return 1e-4


#: The six methods of the paper's Table 7.
PAPER_METHODS = ("dense", "gmp-t", "gmp-s", "rg-u", "rg-n", "sao")
PAPER_DEPTHS = (50, 200, 400, 600, 800, 1000)

TABLE7 = ExperimentSpec(
    title="Table 7: FNN-N on MNIST",
    base=RunConfig(model=ModelConfig("fnn", gain=1.1), method=MethodConfig(degree=4), train=TrainConfig(),
                   experiment="table7"),
    lr_by_depth=lr_for_depth,
    presets={
        "quick": Preset(("dense", "gmp-s", "rg-n", "sao"), (50, 1000), epochs=2, batch_size=32, gain=1.02, lr=1e-3,
                        description="the headline in about 4 minutes on 2 CPU cores (--workers 2): N = 50 and "
                                    "1000 on MNIST-5k, gain 1.02, lr 1e-3, batch 32, 2 epochs"),
        "cpu": Preset(PAPER_METHODS, PAPER_DEPTHS, epochs=3, batch_size=32, gain=1.02, lr=1e-3, seeds=(0, 1, 2),
                      description="every depth 50-1000 on MNIST-5k, the paper's six methods, 3 seeds, "
                                  "gain 1.02, lr 1e-3, batch 32, 3 epochs (about 75 min with --workers 2)"),
        "paper": Preset(PAPER_METHODS, PAPER_DEPTHS, epochs=100, seeds=(0, 1, 2), dataset="mnist",
                        description="the paper's grid and settings: full MNIST (--data-root), gain 1.1, the paper's lr "
                                    "by depth, batch 128, 100 epochs, 3 seeds (a GPU job)"),
        "study": Preset(("sao", "rg-n", "dense"), (1000,), epochs=3, batch_size=32, gain=1.02, lr=1e-3,
                        seeds=(0, 1, 2),
                        variants=({"model.gain": 1.0}, {}, {"model.gain": 1.05}, {"model.gain": 1.1},
                                  {"train.lr": 1e-4}, {"data.normalize": "feature"}),
                        description="the depth-1000 study (docs/study-depth1000.md): N = 1000 at gain 1.02 and lr "
                                    "1e-3, then gains 1.0-1.1, the paper's lr 1e-4, per-feature inputs; 3 seeds "
                                    "(about 45 min with --workers 2)"),
    },
    # what survives of Table 7 in the paper's text: at N = 1000 pruning and the other Ramanujan
    # constructions stay at chance (SAO's "within 1.65 points of dense" is relative); shown beside
    # MNIST-5k runs too, chance being chance
    known={(m, 1000): 10.0 for m in ("gmp-t", "gmp-s", "rg-u", "rg-n")},
)
EXPERIMENTS.register("table7", TABLE7)
