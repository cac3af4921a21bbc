"""Random-number plumbing shared by every stage: where a generator draws; generator and activation checks."""

from __future__ import annotations

import torch

__all__ = ["ACTIVATIONS", "SEED_LIMIT", "check_activation", "check_generator", "draw_device"]

#: Activations the initializers are built for; ``"relu"`` selects the mirrored construction.
ACTIVATIONS = ("linear", "tanh", "relu")
#: Run seeds are below this: a run seeds numpy too, which takes ``0 <= seed < 2**32`` (torch takes more).
SEED_LIMIT = 2**32


def draw_device(generator: torch.Generator | None) -> torch.device:
    """Where random numbers are drawn: the generator's device, else the CPU."""
    return generator.device if generator is not None else torch.device("cpu")


def check_activation(activation: str) -> bool:
    """Validate ``activation`` and return whether it needs the mirrored (ReLU) construction."""
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation={activation!r} is not supported; choose from {', '.join(ACTIVATIONS)} "
                         "('relu' selects the mirrored construction, the others the plain one)")
    return activation == "relu"


def check_generator(generator: torch.Generator | None) -> None:
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
