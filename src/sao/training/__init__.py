"""Training for any model and sparsify method: SGD, schedules, resumable runs, isometry tracking.

``train(model, {"train": ..., "val": ...}, TrainConfig(epochs=100, lr=1e-2), run_dir)``
writes ``config.json``, ``metrics.jsonl``/``.csv`` and ``checkpoint.pt`` into ``run_dir`` and resumes
from the checkpoint when called again (see :mod:`sao.training.loop`).
"""

from sao._extras import require_extra

require_extra(__name__)  # the experiments extra, before any module that needs it

from sao.training.checkpoint import CHECKPOINT_FORMAT, load_checkpoint
from sao.training.config import EXECUTION, ONLY_WITH, TrainConfig, decisive, execution_fields, resolve_device
from sao.training.isometry import jacobian_spectrum, probe_batch
from sao.training.loop import evaluate, train
from sao.training.metrics import METRIC_KEYS, read_metrics
from sao.training.schedule import SCHEDULES, build_optimizer, build_scheduler, lr_factor

__all__ = [
    "CHECKPOINT_FORMAT",
    "EXECUTION",
    "METRIC_KEYS",
    "ONLY_WITH",
    "SCHEDULES",
    "TrainConfig",
    "build_optimizer",
    "build_scheduler",
    "decisive",
    "evaluate",
    "execution_fields",
    "jacobian_spectrum",
    "load_checkpoint",
    "lr_factor",
    "probe_batch",
    "read_metrics",
    "resolve_device",
    "train",
]
