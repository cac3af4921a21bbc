"""Paper Table 7 / Fig. 11: deep sparse tanh MLPs (FNN-N) on MNIST, every method, every depth.

One run = one (method, depth, seed). The model is FNN-N (paper Table 1), every layer orthogonal
with the paper's gain 1.1, then made sparse by the method at degree 4 (98.4 % sparse in the
256-wide layers; the first and last layers stay dense). SGD with momentum 0.9, weight decay
1e-4, the learning rate by depth of the paper's Table 7 settings (:func:`sao.training.lr_for_depth`).
The presets are listed in :data:`TABLE7` (``sao reproduce table7 --help``).
"""

from __future__ import annotations

from sao.experiments.config import MethodConfig, ModelConfig, RunConfig
from sao.experiments.spec import EXPERIMENTS, ExperimentSpec, Preset
from sao.training import TrainConfig, lr_for_depth

__all__ = ["PAPER_METHODS", "TABLE7"]

#: The six methods of the paper's Table 7.
PAPER_METHODS = ("dense", "gmp-t", "gmp-s", "rg-u", "rg-n", "sao")
PAPER_DEPTHS = (50, 200, 400, 600, 800, 1000)

TABLE7 = ExperimentSpec(
    title="Table 7: FNN-N on MNIST",
    base=RunConfig(model=ModelConfig("fnn", gain=1.1), method=MethodConfig(degree=4), train=TrainConfig(),
                   experiment="table7"),
    lr_by_depth=lr_for_depth,
    presets={
        "quick": Preset(("dense", "sao", "gmp-s", "rg-n"), (10, 50, 200), epochs=3,
                        description="minutes on 2 CPU cores: MNIST-5k, depths 10/50/200, 3 epochs"),
        "cpu": Preset(PAPER_METHODS, PAPER_DEPTHS, epochs=5, batch_size=32,
                      description="every depth 50-1000 on MNIST-5k, the paper's methods, batch 32, 5 epochs"),
        "paper": Preset(PAPER_METHODS, PAPER_DEPTHS, epochs=100, seeds=(0, 1, 2), dataset="mnist",
                        description="the paper's grid: full MNIST (--data-root), 100 epochs, 3 seeds (a GPU job)"),
    },
    # what survives of Table 7 in the paper's text: at N = 1000 pruning and the other Ramanujan
    # constructions stay at chance (SAO's "within 1.65 points of dense" is relative); shown beside
    # MNIST-5k runs too, chance being chance
    known={(m, 1000): 10.0 for m in ("gmp-t", "gmp-s", "rg-u", "rg-n")},
)
EXPERIMENTS.register("table7", TABLE7)
