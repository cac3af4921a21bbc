"""Argument checks shared by every stage, in PyTorch's manner.

A value of the wrong *type* is a ``TypeError``, a value of the right type outside its range a
``ValueError``; both messages name the argument, the value given and what is allowed.

Integers follow Python's ``operator.index`` protocol: ``int``, numpy integers and 0-d integer
arrays/tensors are accepted (and returned as ``int``); ``bool``, floats (also integral ones such
as ``4.0``, as ``torch.empty(4.0)`` refuses them), strings and tensors of other shapes are not.
Real numbers accept ``int``/``float``, numpy scalars and 0-d real arrays/tensors; strings
(``"0.5"``), ``bool``, complex numbers, NaN and infinities are refused.
"""

from __future__ import annotations

import math
import numbers
import operator
from collections.abc import Sequence

import numpy as np
import torch

__all__ = ["as_int", "as_int_tuple", "as_real", "check_float_tensor"]


def _describe(value: object) -> str:
    return f"{type(value).__name__} {value!r}"


def _is_boolean(value: object) -> bool:
    if isinstance(value, bool | np.bool_):
        return True
    return isinstance(value, torch.Tensor | np.ndarray) and value.dtype in (torch.bool, np.bool_)


def as_int(value: object, name: str, *, minimum: int | None = None) -> int:
    """``value`` as an ``int`` (see the module docstring for what counts as an integer).

    Raises:
        TypeError: if ``value`` is not an integer.
        ValueError: if it is below ``minimum``.

    Example:
        >>> as_int(np.int64(4), "degree"), as_int(torch.tensor(3), "depth", minimum=1)
        (4, 3)
    """
    shaped = isinstance(value, torch.Tensor | np.ndarray) and value.ndim != 0
    try:
        if _is_boolean(value) or shaped:
            raise TypeError
        result = operator.index(value)
    except TypeError:
        raise TypeError(f"{name} must be an integer (int, numpy integer or 0-d integer tensor), "
                        f"got {_describe(value)}") from None
    if minimum is not None and result < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {result}")
    return result


def as_int_tuple(value: object, name: str, length: int, *, minimum: int | None = None) -> tuple[int, ...]:
    """An integer (repeated ``length`` times) or a sequence of ``length`` integers, as a tuple of ``int``.

    The ``_pair`` convention of :class:`torch.nn.Conv2d` (``kernel_size=3`` or ``(3, 5)``).

    Raises:
        TypeError: if an entry is not an integer or ``value`` is neither an integer nor a sequence.
        ValueError: on a sequence of the wrong length or an entry below ``minimum``.
    """
    if isinstance(value, Sequence) and not isinstance(value, str):
        if len(value) != length:
            raise ValueError(f"{name} must be an integer or a sequence of {length} integers, got {value!r}")
        return tuple(as_int(v, name, minimum=minimum) for v in value)
    return (as_int(value, name, minimum=minimum),) * length


def as_real(value: object, name: str, *, low: float | None = None, high: float | None = None,
            high_open: bool = False, low_open: bool = False) -> float:
    """``value`` as a finite ``float`` in the range ``[low, high]`` (ends open where asked).

    Raises:
        TypeError: if ``value`` is not a real number (strings such as ``"0.5"`` included).
        ValueError: if it is NaN, infinite or outside the range.

    Example:
        >>> as_real(np.float32(0.5), "sparsity", low=0, high=1, high_open=True)
        0.5
    """
    if isinstance(value, torch.Tensor | np.ndarray) and value.ndim == 0 and not _is_boolean(value):
        is_real = not (value.is_complex() if isinstance(value, torch.Tensor) else np.iscomplexobj(value))
        value = value.item() if is_real else value
    if _is_boolean(value) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {_describe(value)}")
    result = float(value)
    below = low is not None and (result <= low if low_open else result < low)
    above = high is not None and (result >= high if high_open else result > high)
    if not math.isfinite(result) or below or above:
        lo = "-inf" if low is None else f"{low:g}"
        hi = "inf" if high is None else f"{high:g}"
        allowed = f" in {'(' if low_open or low is None else '['}{lo}, {hi}{')' if high_open or high is None else ']'}"
        raise ValueError(f"{name} must be a finite number{allowed}, got {value!r}")
    return result


def check_float_tensor(tensor: object, fn: str) -> None:
    """Raise ``TypeError`` unless ``tensor`` is a real floating-point tensor (what the initializers fill).

    Integer and bool tensors cannot hold orthogonal values (they would be filled with zeros);
    complex ones are not supported.
    """
    if not isinstance(tensor, torch.Tensor):
        raise TypeError(f"{fn} expects a torch.Tensor, got {type(tensor).__name__}")
    if not tensor.is_floating_point():
        raise TypeError(f"{fn} needs a floating-point tensor (float16/bfloat16/float32/float64), "
                        f"got dtype {tensor.dtype}")
