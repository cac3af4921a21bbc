"""Singular values of convolution operators: the orthogonality checks of ``docs/orthogonal-conv.md`` (§1).

A circular convolution on an ``n x n`` image is block-diagonalised by the 2-D DFT (Sedghi,
Gupta & Long, "The Singular Values of Convolutional Layers", ICLR 2019): with the kernel
zero-padded to ``n x n``,

.. math::

    \\hat K(u, v) = \\sum_{x, y} K[:, :, x, y]\\, e^{-2\\pi i (u x + v y) / n},

the singular values of the whole operator are the union over all ``(u, v)`` of the singular
values of the ``(c_out, c_in)`` matrices ``K̂(u, v)``. :func:`conv_singular_values` computes
them that way; :func:`operator_singular_values` builds the explicit Jacobian of any linear
map (zero-padded convolutions, whole layers) for small inputs, and checks the FFT method.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from sao._validation import as_int

__all__ = ["conv_singular_values", "operator_singular_values"]


def conv_singular_values(weight: Tensor, input_size: int, dilation: int = 1) -> Tensor:
    """Return all singular values of the circular convolution with ``weight`` on an ``n x n`` image.

    Implements the FFT method of Sedghi, Gupta & Long (ICLR 2019): tap ``(x, y)`` of the kernel
    is placed at ``((δx) mod n, (δy) mod n)`` of an ``n x n`` grid (``δ`` the dilation; taps
    that collide are summed, as in the circular convolution itself), then

    .. math::

        \\sigma(\\mathcal{K}) = \\bigcup_{u, v = 0}^{n - 1} \\sigma\\big(\\hat K(u, v)\\big),
        \\qquad \\hat K(u, v) = \\sum_{x, y} K[:, :, x, y]\\, e^{-2\\pi i \\delta (u x + v y) / n}.

    PyTorch's ``conv2d`` is a cross-correlation, whose spectrum is the complex conjugate: the
    singular values are the same. The operator is orthogonal iff all values equal 1.

    Args:
        weight: real ``(c_out, c_in, kh, kw)`` kernel (any dtype or device; computed in float64).
        input_size: side ``n`` of the square input image (circular padding, stride 1).
        dilation: dilation ``δ`` of the convolution.

    Returns:
        flat float64 tensor of ``n² · min(c_out, c_in)`` singular values, on ``weight``'s device,
        grouped by frequency (row-major ``(u, v)``), descending within each group.

    Raises:
        TypeError: if ``weight`` is not a real tensor (complex is refused) or
            ``input_size``/``dilation`` is not an integer.
        ValueError: if ``weight`` is not 4-D or ``input_size``/``dilation`` is below 1.

    Example:
        >>> w = torch.zeros(2, 2, 3, 3)
        >>> w[:, :, 1, 1] = torch.eye(2)
        >>> conv_singular_values(w, input_size=4).unique().tolist()
        [1.0]
    """
    if not isinstance(weight, Tensor):
        raise TypeError(f"weight must be a torch.Tensor, got {type(weight).__name__}")
    if weight.dim() != 4:
        raise ValueError(f"weight must be a 4-D (c_out, c_in, kh, kw) tensor, got shape {tuple(weight.shape)}")
    if weight.is_complex():
        raise TypeError(f"weight must be real, got dtype {weight.dtype}")
    n = as_int(input_size, "input_size", minimum=1)
    dilation = as_int(dilation, "dilation", minimum=1)
    c_out, c_in, kh, kw = weight.shape
    taps = weight.detach().to(torch.float64).permute(2, 3, 0, 1)  # (kh, kw, c_out, c_in)
    rows = (dilation * torch.arange(kh, device=weight.device)) % n
    cols = (dilation * torch.arange(kw, device=weight.device)) % n
    grid = taps.new_zeros(n, n, c_out, c_in)
    grid.index_put_((rows[:, None].expand(kh, kw), cols[None, :].expand(kh, kw)), taps, accumulate=True)
    return torch.linalg.svdvals(torch.fft.fft2(grid, dim=(0, 1))).flatten()


def operator_singular_values(fn: Callable[[Tensor], Tensor], input_shape: Sequence[int],
                             dtype: torch.dtype = torch.float64) -> Tensor:
    """Return the singular values of a linear map ``fn`` from its explicit Jacobian.

    ``J = ∂ fn(x) / ∂ x`` is taken at ``x = 0`` with :func:`torch.autograd.functional.jacobian`
    and reshaped to ``(numel(out), numel(in))``; for a linear map ``J`` *is* the map (for an
    affine one, its linear part). The cost is ``O(numel(in)²)`` memory: use small inputs. This
    covers what the FFT method cannot: zero padding, strides, space-to-depth, whole layers.

    Args:
        fn: callable taking a ``(1, *input_shape)`` tensor and returning one tensor; its
            parameters must accept ``dtype`` (e.g. ``module.double()`` for float64).
        input_shape: shape of one input without the batch axis, e.g. ``(c_in, n, n)``.
        dtype: floating dtype of the input and the Jacobian.

    Returns:
        flat float64 tensor of ``min(numel(out), numel(in))`` singular values, descending.

    Raises:
        ValueError: if ``input_shape`` is empty or has a size below 1, or ``dtype`` is not a
            floating dtype.
        TypeError: if ``fn`` is not callable or does not return a single tensor, or
            ``input_shape`` is not a sequence of integers.

    Example:
        >>> import torch.nn.functional as F
        >>> w = torch.zeros(2, 2, 3, 3, dtype=torch.float64)
        >>> w[:, :, 1, 1] = 2 * torch.eye(2)
        >>> s = operator_singular_values(lambda x: F.conv2d(x, w, padding=1), (2, 4, 4))
        >>> s.numel(), s.unique().tolist()
        (32, [2.0])
    """
    if not callable(fn):
        raise TypeError(f"fn must be callable, got {type(fn).__name__}")
    if isinstance(input_shape, str | bytes) or not isinstance(input_shape, Sequence):
        raise TypeError(f"input_shape must be a sequence of integers, got {input_shape!r}")
    if not input_shape:
        raise ValueError("input_shape must be a non-empty sequence of positive integers, got ()")
    input_shape = [as_int(s, "input_shape entry", minimum=1) for s in input_shape]
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise ValueError(f"dtype must be a floating torch.dtype such as torch.float64, got {dtype!r}")
    x = torch.zeros(1, *input_shape, dtype=dtype)
    jac = torch.autograd.functional.jacobian(fn, x, vectorize=True)
    if not isinstance(jac, Tensor):
        raise TypeError("fn must return a single tensor")
    return torch.linalg.svdvals(jac.reshape(-1, x.numel())).to(torch.float64)
