"""Suite-wide test settings."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch
from hypothesis import HealthCheck, settings

# Property tests are derandomized so CI sees the same examples every run; on a shared 2-core
# machine example generation can be slow, which says nothing about the code under test.
settings.register_profile("ci", derandomize=True, deadline=None, print_blob=True,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("ci")


@pytest.fixture(autouse=True, scope="session")
def _one_thread() -> Iterator[None]:
    """Run the suite single-threaded: its tensors are small, and intra-op threads on a shared
    2-core machine cost far more in synchronisation than they save (about 10x measured)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def deterministic_routes() -> Iterator[None]:
    """``torch.use_deterministic_algorithms(True)`` for one test: sparse chains and layers take fixed routes
    instead of measured ones, so separate runs (a resumed one, a copy) compute bit for bit alike."""
    before = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    yield
    torch.use_deterministic_algorithms(before)
