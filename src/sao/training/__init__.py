"""Training for any model and sparsify method: SGD, schedules, resumable runs, isometry tracking.

``train(model, {"train": ..., "val": ...}, TrainConfig(epochs=100, lr=lr_for_depth(N)), run_dir)``
writes ``config.json``, ``metrics.jsonl``/``.csv`` and ``checkpoint.pt`` into ``run_dir`` and resumes
from the checkpoint when called again (see :mod:`sao.training.loop`).
"""

from sao._extras import require_extra

require_extra(__name__)  # the experiments extra, before any module that needs it

from sao.training.checkpoint import CHECKPOINT_FORMAT, load_checkpoint
from sao.training.config import TrainConfig, lr_for_depth, resolve_device
from sao.training.isometry import jacobian_spectrum, probe_batch
from sao.training.loop import evaluate, train
from sao.training.metrics import METRIC_KEYS, read_metrics
from sao.training.schedule import SCHEDULES, build_optimizer, build_scheduler, lr_factor

__all__ = [
    "CHECKPOINT_FORMAT",
    "METRIC_KEYS",
    "SCHEDULES",
    "TrainConfig",
    "build_optimizer",
    "build_scheduler",
    "evaluate",
    "jacobian_spectrum",
    "load_checkpoint",
    "lr_factor",
    "lr_for_depth",
    "probe_batch",
    "read_metrics",
    "resolve_device",
    "train",
]
