"""``SparseMultiheadAttention``: :class:`torch.nn.MultiheadAttention` with SAO-sparse projections (paper §IV-C).

The function is exactly ``nn.MultiheadAttention``'s (:func:`torch.nn.functional.multi_head_attention_forward`):
the same arguments, shapes, masks, ``is_causal`` hint, ``bias_k``/``bias_v``, ``add_zero_attn``, dropout on the
attention weights and errors. Only the four projections differ: instead of the packed ``in_proj_weight`` they
are four child modules ``q_proj``, ``k_proj``, ``v_proj`` and ``out_proj`` (by default each a
:class:`~sao.nn.SparseLinear` with its own SAO topology and orthogonal draw), called as modules, so their
hooks, routes (:mod:`sao.nn.dispatch`) and parametrizations apply.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sao._validation import as_int, as_real
from sao.nn.dispatch import RouteTimer
from sao.nn.linear import SparseLinear

__all__ = ["PROJECTIONS", "SparseMultiheadAttention"]

#: The projection children, in the order they are drawn: queries, keys, values, output.
PROJECTIONS = ("q_proj", "k_proj", "v_proj", "out_proj")

#: The arguments that configure the SparseLinear projections built when ``projections=`` is not given.
_SPARSE_DEFAULTS: dict[str, Any] = {"degree": None, "sparsity": None, "init": "sao", "backend": "blocked",
                                    "activation": "linear", "gain": 1.0, "generator": None, "fusion": "auto"}


class _NoFastPath(Tensor):
    """The type of :data:`_FAST_PATH_OPT_OUT`: a tensor subclass, so ``torch.overrides.has_torch_function`` is
    true for any argument tuple holding it (the first check of every ``torch.nn`` fast path)."""


#: ``SparseMultiheadAttention.in_proj_bias``: a zero-size marker, never computed with (class docstring).
_FAST_PATH_OPT_OUT = Tensor._make_subclass(_NoFastPath, torch.empty(0))


def _check_projections(projections: Mapping[str, nn.Module], shapes: dict[str, tuple[int, int]],
                       bias: bool) -> None:
    """Raise unless ``projections`` maps exactly :data:`PROJECTIONS` to modules of the ``(in, out)`` ``shapes``.

    Raises:
        TypeError: if it is not a mapping, or an entry is not an ``nn.Module``.
        ValueError: for missing or unknown keys, a wrong ``in_features``/``out_features`` (naming the
            projection), or ``bias=False`` with a projection that has a bias.
    """
    if not isinstance(projections, Mapping):
        raise TypeError(f"projections must be a mapping of {', '.join(PROJECTIONS)} to modules, "
                        f"got {type(projections).__name__}")
    if set(projections) != set(PROJECTIONS):
        missing, unknown = set(PROJECTIONS) - set(projections), set(projections) - set(PROJECTIONS)
        raise ValueError(f"projections must have exactly the keys {', '.join(PROJECTIONS)}; missing "
                         f"{sorted(missing) or 'none'}, unknown {sorted(unknown, key=str) or 'none'}")
    for name, (n, m) in shapes.items():
        proj = projections[name]
        if not isinstance(proj, nn.Module):
            raise TypeError(f"projections[{name!r}] must be an nn.Module, got {type(proj).__name__}")
        got = (getattr(proj, "in_features", None), getattr(proj, "out_features", None))
        if got != (n, m):
            raise ValueError(f"projections[{name!r}] must map {n} to {m} features (in_features={n}, "
                             f"out_features={m}), got in_features={got[0]}, out_features={got[1]}")
        if not bias and getattr(proj, "bias", None) is not None:
            raise ValueError(f"bias=False but projections[{name!r}] has a bias; the given modules keep their own "
                             "biases, leave bias at its default")


def _takes_generator(method: Any) -> bool:
    """Whether ``method`` (a ``reset_parameters``) takes an argument (the generator)."""
    try:
        return bool(inspect.signature(method).parameters)
    except (TypeError, ValueError):
        return False


def _to_heads(x: Tensor, num_heads: int) -> Tensor:
    """A projected batch-first ``(N, S, E)`` as ``(N, H, S, E / H)`` (a view)."""
    return x.unflatten(-1, (num_heads, x.shape[-1] // num_heads)).transpose(1, 2)


def _pad_last(mask: Tensor | None) -> Tensor | None:
    """``mask`` with one more (zero: attended) column, for an added key (``bias_k`` or the zero key)."""
    return None if mask is None else F.pad(mask, (0, 1))


class SparseMultiheadAttention(nn.Module):
    """Drop-in :class:`torch.nn.MultiheadAttention` whose projections are SAO-sparse layers (paper §IV-C).

    ``MultiHead(Q, K, V) = Concat(head_1, …, head_h) W_O`` with ``head_i = Attention(Q W_Q, K W_K, V W_V)``
    restricted to head ``i``'s features, exactly as ``nn.MultiheadAttention`` computes it, where the four
    projections are child modules: ``q_proj`` (``E ← E``), ``k_proj`` (``E ← kdim``), ``v_proj`` (``E ← vdim``)
    and ``out_proj`` (``E ← E``). By default each is a :class:`~sao.nn.SparseLinear` with its own SAO topology
    and orthogonal draw, drawn in that order from ``generator`` (the same seed gives the same module).

    Args:
        embed_dim, num_heads, dropout, bias, add_bias_kv, add_zero_attn, kdim, vdim, batch_first, device,
            dtype: as in :class:`torch.nn.MultiheadAttention` (``dropout`` applies to the attention weights
            in training mode; ``bias`` gives the built projections a bias, zero-initialised as there;
            ``bias_k``/``bias_v`` are xavier-normal).
        degree, sparsity, init, backend, activation, gain, generator, fusion: (keyword only) the
            :class:`~sao.nn.SparseLinear` settings of every built projection (``activation`` defaults to
            ``"linear"``: nothing follows a projection); ``degree`` or ``sparsity`` is required.
        projections: (keyword only) a mapping of exactly ``"q_proj"``, ``"k_proj"``, ``"v_proj"`` and
            ``"out_proj"`` to modules used instead (any module with ``in_features``/``out_features`` that
            maps ``(*, in) → (*, out)``: ``nn.Linear``, :class:`~sao.nn.SparseLinear`,
            :class:`~sao.nn.MaskedLinear`, …); then none of the settings above may be given.

    Attributes:
        embed_dim, kdim, vdim, num_heads, head_dim, dropout, batch_first, bias_k, bias_v, add_zero_attn:
            as in ``nn.MultiheadAttention``.
        q_proj, k_proj, v_proj, out_proj: the projections (replaceable: a sparsify method swaps them).
        in_proj_weight, in_proj_bias, _qkv_same_embed_dim: for PyTorch's fast paths, which read dense packed
            weights: ``in_proj_weight`` is ``None`` and ``_qkv_same_embed_dim`` is ``False``, so
            ``nn.TransformerEncoderLayer`` takes its regular path, which calls this module.
            ``in_proj_bias`` is a zero-size marker tensor (not a parameter or buffer, not saved, never computed
            with) whose type makes ``torch.overrides.has_torch_function`` true: ``nn.TransformerEncoder``'s
            nested-tensor path (eval mode with ``src_key_padding_mask``, layers built with a dense attention)
            reads ``in_proj_weight.requires_grad`` unguarded and would crash on ``None``; with the marker it
            stops at its first check and runs the layers on the padded input. So every fast path is opted out
            of cleanly, and the layers run their regular path through this module.

    Shapes:
        as :meth:`torch.nn.MultiheadAttention.forward` (see :meth:`forward`), in its memory layout too (a
        batch-first output is the same transposed view), so a dropout after it draws the same mask for a seed.

    Raises:
        ValueError: for ``embed_dim`` or ``num_heads`` below 1 (as PyTorch), ``dropout`` outside ``[0, 1]``,
            neither ``degree``/``sparsity`` nor ``projections``, projections of the wrong shape (naming it),
            ``bias=False`` with a given projection that has a bias, or SparseLinear's errors (prefixed with
            the projection's name).
        AssertionError: if ``embed_dim`` is not divisible by ``num_heads`` (as PyTorch).
        TypeError: for non-integer sizes, or sparse settings given together with ``projections``.

    Example:
        >>> attn = SparseMultiheadAttention(64, 4, batch_first=True, sparsity=0.75,
        ...                                 generator=torch.Generator().manual_seed(0))
        >>> x = torch.randn(2, 10, 64)
        >>> out, weights = attn(x, x, x)
        >>> out.shape, weights.shape, attn.q_proj.sparsity
        (torch.Size([2, 10, 64]), torch.Size([2, 10, 10]), 0.75)
        >>> torch.allclose(attn.to_dense()(x, x, x)[0], out, atol=1e-5)
        True
    """

    merge_masks = nn.MultiheadAttention.merge_masks  # public there, and needs only ``num_heads``
    in_proj_weight: None = None
    in_proj_bias: Tensor = _FAST_PATH_OPT_OUT
    _qkv_same_embed_dim = False
    bias_k: nn.Parameter | None
    bias_v: nn.Parameter | None
    q_proj: nn.Module
    k_proj: nn.Module
    v_proj: nn.Module
    out_proj: nn.Module

    def __init__(self, embed_dim: int, num_heads: int, dropout: float = 0.0, bias: bool = True,
                 add_bias_kv: bool = False, add_zero_attn: bool = False, kdim: int | None = None,
                 vdim: int | None = None, batch_first: bool = False, device: torch.device | str | None = None,
                 dtype: torch.dtype | None = None, *, degree: int | None = None, sparsity: float | None = None,
                 init: str = "sao", backend: str = "blocked", activation: str = "linear", gain: float = 1.0,
                 generator: torch.Generator | None = None, fusion: str = "auto",
                 projections: Mapping[str, nn.Module] | None = None) -> None:
        super().__init__()
        embed_dim, num_heads = as_int(embed_dim, "embed_dim"), as_int(num_heads, "num_heads")
        if embed_dim <= 0 or num_heads <= 0:
            raise ValueError(f"embed_dim and num_heads must be greater than 0, got embed_dim={embed_dim} and "
                             f"num_heads={num_heads} instead")
        self.embed_dim, self.num_heads = embed_dim, num_heads
        self.kdim = embed_dim if kdim is None else as_int(kdim, "kdim", minimum=1)
        self.vdim = embed_dim if vdim is None else as_int(vdim, "vdim", minimum=1)
        self.head_dim = embed_dim // num_heads
        if self.head_dim * num_heads != embed_dim:
            raise AssertionError("embed_dim must be divisible by num_heads")
        self.dropout = as_real(dropout, "dropout", low=0.0, high=1.0)
        self.batch_first, self.add_zero_attn = bool(batch_first), bool(add_zero_attn)
        settings = {"degree": degree, "sparsity": sparsity, "init": init, "backend": backend,
                    "activation": activation, "gain": gain, "generator": generator, "fusion": fusion}
        factory = {"device": device, "dtype": dtype}
        if projections is None:
            projections = self._build_projections(bool(bias), settings, factory)
        else:
            given = [k for k, v in settings.items() if v is not _SPARSE_DEFAULTS[k] and v != _SPARSE_DEFAULTS[k]]
            if given:
                raise TypeError(f"the settings {', '.join(given)} apply to the SparseLinear projections built when "
                                "projections= is not given; with projections= the given modules are used as they are")
            _check_projections(projections, self._shapes(), bool(bias))
        for name in PROJECTIONS:
            self.add_module(name, projections[name])
        if add_bias_kv:
            self.bias_k = nn.Parameter(torch.empty((1, 1, embed_dim), **factory))
            self.bias_v = nn.Parameter(torch.empty((1, 1, embed_dim), **factory))
        else:
            self.register_parameter("bias_k", None)
            self.register_parameter("bias_v", None)
        self._reset_bias_kv(generator)

    def _shapes(self) -> dict[str, tuple[int, int]]:
        """``(in_features, out_features)`` of each projection."""
        e = self.embed_dim
        return {"q_proj": (e, e), "k_proj": (self.kdim, e), "v_proj": (self.vdim, e), "out_proj": (e, e)}

    def _build_projections(self, bias: bool, settings: dict[str, Any], factory: dict[str, Any]) -> dict[str, nn.Module]:
        """The four SparseLinear projections, drawn in :data:`PROJECTIONS` order from ``settings["generator"]``, with
        one route timer (:mod:`sao.nn.dispatch`)."""
        if settings["degree"] is None and settings["sparsity"] is None:
            raise ValueError("SparseMultiheadAttention needs degree= or sparsity= (of its SparseLinear projections), "
                             "or projections= (the modules to use)")
        built = {}
        for name, (n, m) in self._shapes().items():
            try:
                built[name] = SparseLinear(n, m, bias=bias, **settings, **factory)
            except (TypeError, ValueError) as err:
                raise type(err)(f"{name} ({m}x{n}): {err}") from err
        timer = RouteTimer()  # one for the four: projections of one shape are measured once and run alike
        for layer in built.values():
            layer.timer = timer
        return built

    # ------------------------------------------------------------------ parameters

    @torch.no_grad()
    def _reset_bias_kv(self, generator: torch.Generator | None) -> None:
        for extra in (self.bias_k, self.bias_v):
            if extra is not None:
                nn.init.xavier_normal_(extra, generator=generator)

    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """Redraw the projections that have ``reset_parameters`` (same topologies; ``generator`` passed to those
        that take one, in :data:`PROJECTIONS` order) and ``bias_k``/``bias_v`` (xavier-normal, as PyTorch).

        After ``to_empty()`` (deferred initialisation from the ``meta`` device) this gives a valid module.
        """
        for name in PROJECTIONS:
            reset = getattr(getattr(self, name), "reset_parameters", None)
            if callable(reset) and _takes_generator(reset):
                reset(generator)
            elif callable(reset):
                reset()
        self._reset_bias_kv(generator)

    # ------------------------------------------------------------------ conversions

    @classmethod
    def from_dense(cls, mha: nn.MultiheadAttention) -> SparseMultiheadAttention:
        """The same function as ``mha`` with plain ``nn.Linear`` projections holding copies of its weights.

        The Q/K/V weights are sliced from ``in_proj_weight``/``in_proj_bias`` (or taken from
        ``q_proj_weight``/``k_proj_weight``/``v_proj_weight``); ``out_proj``, ``bias_k``/``bias_v``, dropout,
        ``batch_first``, ``add_zero_attn``, device, dtype, training mode and each weight's ``requires_grad`` are
        kept. The projections' Parameters are new tensors (an optimizer built on ``mha`` does not hold them). A
        sparsify method then replaces the ``nn.Linear`` projections.

        Raises:
            TypeError: if ``mha`` is not an ``nn.MultiheadAttention``.
        """
        if not isinstance(mha, nn.MultiheadAttention):
            raise TypeError(f"from_dense takes an nn.MultiheadAttention, got {type(mha).__name__}")
        out_weight = mha.out_proj.weight
        factory = {"device": out_weight.device, "dtype": out_weight.dtype}
        if mha._qkv_same_embed_dim:
            weights = mha.in_proj_weight.chunk(3)
        else:
            weights = (mha.q_proj_weight, mha.k_proj_weight, mha.v_proj_weight)
        biases = (None,) * 3 if mha.in_proj_bias is None else mha.in_proj_bias.chunk(3)
        pieces = [*zip(weights, biases, strict=True), (out_weight, mha.out_proj.bias)]
        projections = {name: _linear_copy(w, b) for name, (w, b) in zip(PROJECTIONS, pieces, strict=True)}
        new = cls(mha.embed_dim, mha.num_heads, mha.dropout, mha.in_proj_bias is not None, mha.bias_k is not None,
                  mha.add_zero_attn, mha.kdim, mha.vdim, mha.batch_first, projections=projections, **factory)
        with torch.no_grad():
            for mine, theirs in ((new.bias_k, mha.bias_k), (new.bias_v, mha.bias_v)):
                if mine is not None:
                    mine.copy_(theirs)
                    mine.requires_grad_(theirs.requires_grad)
        return new.train(mha.training)

    def to_dense(self) -> nn.MultiheadAttention:
        """A new ``nn.MultiheadAttention`` computing the same function (copies of each projection's dense
        ``.weight`` and bias; packed into ``in_proj_weight`` when ``kdim == vdim == embed_dim``).

        Its ``state_dict`` loads into a fresh ``nn.MultiheadAttention`` of the same arguments.

        Raises:
            ValueError: if some projections have a bias and others not (``nn.MultiheadAttention`` has one
                ``bias`` flag).
            TypeError: if a projection has no dense ``weight``.
        """
        projections = {name: getattr(self, name) for name in PROJECTIONS}
        with_bias = [name for name, p in projections.items() if getattr(p, "bias", None) is not None]
        if with_bias and len(with_bias) != len(PROJECTIONS):
            without = [name for name in PROJECTIONS if name not in with_bias]
            raise ValueError(f"to_dense: nn.MultiheadAttention has one bias flag for all projections, but "
                             f"{', '.join(with_bias)} have a bias and {', '.join(without)} do not")
        weights = {}
        for name, proj in projections.items():
            weight = getattr(proj, "weight", None)
            if not isinstance(weight, Tensor):
                raise TypeError(f"to_dense: {name} ({type(proj).__name__}) has no dense weight tensor")
            weights[name] = weight.detach()
        out_weight = weights["out_proj"]
        dense = nn.MultiheadAttention(self.embed_dim, self.num_heads, self.dropout, bool(with_bias),
                                      self.bias_k is not None, self.add_zero_attn, self.kdim, self.vdim,
                                      self.batch_first, device=out_weight.device, dtype=out_weight.dtype)
        with torch.no_grad():
            self._copy_into(dense, weights, projections, bool(with_bias))
        return dense.train(self.training)

    def _copy_into(self, dense: nn.MultiheadAttention, weights: dict[str, Tensor], projections: dict[str, nn.Module],
                   bias: bool) -> None:
        qkv = [weights[name] for name in PROJECTIONS[:3]]
        if dense._qkv_same_embed_dim:
            dense.in_proj_weight.copy_(torch.cat(qkv))
        else:
            for target, weight in zip((dense.q_proj_weight, dense.k_proj_weight, dense.v_proj_weight), qkv,
                                      strict=True):
                target.copy_(weight)
        dense.out_proj.weight.copy_(weights["out_proj"])
        if bias:
            dense.in_proj_bias.copy_(torch.cat([projections[name].bias.detach() for name in PROJECTIONS[:3]]))
            dense.out_proj.bias.copy_(projections["out_proj"].bias)
        if self.bias_k is not None:
            dense.bias_k.copy_(self.bias_k)
            dense.bias_v.copy_(self.bias_v)

    # ------------------------------------------------------------------ forward

    def forward(self, query: Tensor, key: Tensor, value: Tensor, key_padding_mask: Tensor | None = None,
                need_weights: bool = True, attn_mask: Tensor | None = None, average_attn_weights: bool = True,
                is_causal: bool = False) -> tuple[Tensor, Tensor | None]:
        """Attention outputs (and weights), as :meth:`torch.nn.MultiheadAttention.forward`.

        Args:
            query: ``(L, E)`` unbatched, ``(L, N, E)``, or ``(N, L, E)`` with ``batch_first``.
            key, value: ``(S, kdim)``/``(S, vdim)`` unbatched, else ``(S, N, ·)`` or ``(N, S, ·)``.
            key_padding_mask: bool (``True``: ignore) or float (added) ``(N, S)``, ``(S)`` unbatched.
            need_weights: also return the attention weights (explicit softmax); ``False`` runs
                ``F.scaled_dot_product_attention``.
            attn_mask: bool or float ``(L, S)`` or ``(N·num_heads, L, S)``.
            average_attn_weights: average the returned weights over the heads.
            is_causal: hint that ``attn_mask`` is the causal mask (``attn_mask`` is required).

        Returns:
            ``(output, weights)``: output like ``query`` with ``E`` features; weights ``(N, L, S)``
            (``(N, num_heads, L, S)`` without averaging; no ``N`` unbatched) or ``None``.

        Raises:
            AssertionError, RuntimeError: where ``nn.MultiheadAttention`` raises them (wrong ranks, embedding
                dims, mask shapes or dtypes, ``is_causal`` without ``attn_mask``, NestedTensor inputs).
        """
        key_padding_mask = F._canonical_mask(mask=key_padding_mask, mask_name="key_padding_mask",
                                             other_type=F._none_or_dtype(attn_mask), other_name="attn_mask",
                                             target_type=query.dtype)
        attn_mask = F._canonical_mask(mask=attn_mask, mask_name="attn_mask", other_type=None, other_name="",
                                      target_type=query.dtype, check_other=False)
        if query.is_nested or key.is_nested or value.is_nested:
            raise AssertionError("SparseMultiheadAttention does not support NestedTensor inputs (as "
                                 "nn.MultiheadAttention outside its fast path)")
        is_batched = F._mha_shape_check(query, key, value, key_padding_mask, attn_mask, self.num_heads)
        if not is_batched:  # one sample: batch-first with N = 1
            query, key, value = query.unsqueeze(0), key.unsqueeze(0), value.unsqueeze(0)
            key_padding_mask = None if key_padding_mask is None else key_padding_mask.unsqueeze(0)
        seq_first = is_batched and not self.batch_first
        if is_causal and attn_mask is None:
            raise RuntimeError("Need attn_mask if specifying the is_causal hint. You may use the Transformer module "
                               "method `generate_square_subsequent_mask` to create this mask.")
        if is_causal and key_padding_mask is None and not need_weights:
            attn_mask = None  # scaled_dot_product_attention takes the hint instead of the mask
        elif key_padding_mask is not None:
            is_causal = False  # the merged mask is no longer causal
        self._check_inputs(query, key, value)
        q, k, v = self.q_proj(query), self.k_proj(key), self.v_proj(value)
        if seq_first:  # batch-first views; the projections ran on the inputs as given
            q, k, v = q.transpose(0, 1), k.transpose(0, 1), v.transpose(0, 1)
        out, weights = self._attend(q, k, v, key_padding_mask, attn_mask, need_weights, is_causal)
        # (N, H, L, hd) -> (L·N, E) -> out_proj -> (L, N, E): PyTorch's layout, so a batch-first output is the same
        # transposed view as nn.MultiheadAttention's, and dropout after it draws the same mask for the same seed
        length, n = out.shape[2], out.shape[0]
        out = self.out_proj(out.permute(2, 0, 1, 3).reshape(length * n, self.embed_dim))
        out = out.view(length, n, out.shape[-1])
        if weights is not None and average_attn_weights:
            weights = weights.mean(dim=1)
        if not is_batched:
            return out.squeeze(1), None if weights is None else weights.squeeze(0)
        return (out.transpose(0, 1) if self.batch_first else out), weights

    def _check_inputs(self, query: Tensor, key: Tensor, value: Tensor) -> None:
        """The embedding-dim checks of ``F.multi_head_attention_forward`` for this module's ``to_dense()`` twin:
        packed (``kdim == vdim == embed_dim``: ``key`` and ``value`` of one shape; a wrong key width then fails in
        the projection) or separate (sequence and batch dims agree; ``kdim``/``vdim`` checked)."""
        if query.shape[-1] != self.embed_dim:
            raise AssertionError(f"was expecting embedding dimension of {self.embed_dim}, but got {query.shape[-1]}")
        if self.kdim == self.vdim == self.embed_dim:
            if key.shape != value.shape:
                raise AssertionError(f"key shape {key.shape} does not match value shape {value.shape}")
            return
        if key.shape[:2] != value.shape[:2]:
            raise AssertionError(f"key's sequence and batch dims {key.shape[:2]} do not match value's "
                                 f"{value.shape[:2]}")
        for name, x, dim in (("key", key, self.kdim), ("value", value, self.vdim)):
            if x.shape[-1] != dim:
                raise AssertionError(f"expecting {name} embedding dimension of {dim} (the {name[0]}dim), but got "
                                     f"{x.shape[-1]}")

    def _masks(self, attn_mask: Tensor | None, key_padding_mask: Tensor | None, n: int, length: int,
               source: int) -> tuple[Tensor | None, Tensor | None]:
        """``attn_mask`` checked as ``(1 | N·H, L, S)`` and ``key_padding_mask`` ``(N, S)`` (shape errors as
        PyTorch's), each with a zero column per added key (``bias_k``, zero attention)."""
        if attn_mask is not None:
            if attn_mask.dim() == 2:
                if attn_mask.shape != (length, source):
                    raise RuntimeError(f"The shape of the 2D attn_mask is {attn_mask.shape}, but should be "
                                       f"{(length, source)}.")
                attn_mask = attn_mask.unsqueeze(0)
            elif attn_mask.dim() == 3:
                if attn_mask.shape != (n * self.num_heads, length, source):
                    raise RuntimeError(f"The shape of the 3D attn_mask is {attn_mask.shape}, but should be "
                                       f"{(n * self.num_heads, length, source)}.")
            else:
                raise RuntimeError(f"attn_mask's dimension {attn_mask.dim()} is not supported")
        for _ in range((self.bias_k is not None) + self.add_zero_attn):
            attn_mask, key_padding_mask = _pad_last(attn_mask), _pad_last(key_padding_mask)
        if key_padding_mask is not None:
            expected = (n, source + (self.bias_k is not None) + self.add_zero_attn)
            for i in (0, 1):
                if key_padding_mask.shape[i] != expected[i]:
                    raise AssertionError(f"Expected key_padded_mask.shape[{i}] to be {expected[i]}, but got "
                                         f"{key_padding_mask.shape[i]}")
        return attn_mask, key_padding_mask

    def _attend(self, q: Tensor, k: Tensor, v: Tensor, key_padding_mask: Tensor | None, attn_mask: Tensor | None,
                need_weights: bool, is_causal: bool) -> tuple[Tensor, Tensor | None]:
        """The attention between projected batch-first ``q (N, L, E)``, ``k``/``v (N, S, E)``: ``(N, H, L, hd)``
        outputs and, with ``need_weights``, the ``(N, H, L, S')`` weights."""
        n, length, source, h = q.shape[0], q.shape[1], k.shape[1], self.num_heads
        attn_mask, key_padding_mask = self._masks(attn_mask, key_padding_mask, n, length, source)
        if k.shape[0] != n or v.shape[0] != n:
            raise RuntimeError(f"query has batch size {n} but key and value have {k.shape[0]} and {v.shape[0]}")
        if self.bias_k is not None:
            k = torch.cat([k, self.bias_k.expand(n, 1, -1)], dim=1)
            v = torch.cat([v, self.bias_v.expand(n, 1, -1)], dim=1)
        q, k, v = _to_heads(q, h), _to_heads(k, h), _to_heads(v, h)
        if self.add_zero_attn:
            k = torch.cat([k, k.new_zeros(n, h, 1, self.head_dim)], dim=2)
            v = torch.cat([v, v.new_zeros(n, h, 1, self.head_dim)], dim=2)
        mask = attn_mask
        if attn_mask is not None:  # (1, 1, L, S') broadcast over batch and heads, or (N, H, L, S')
            mask = attn_mask.unsqueeze(0) if attn_mask.shape[0] == 1 else attn_mask.view(n, h, *attn_mask.shape[1:])
        if key_padding_mask is not None:
            padding = key_padding_mask.view(n, 1, 1, key_padding_mask.shape[-1])
            mask = padding if mask is None else mask + padding
        dropout = self.dropout if self.training else 0.0
        if not need_weights:
            return F.scaled_dot_product_attention(q, k, v, mask, dropout, is_causal), None
        scores = torch.matmul(q * math.sqrt(1.0 / float(self.head_dim)), k.transpose(-2, -1))
        weights = F.softmax(scores if mask is None else scores + mask, dim=-1)
        if dropout > 0.0:
            weights = F.dropout(weights, p=dropout)
        return torch.matmul(weights, v), weights

    def extra_repr(self) -> str:
        parts = [f"embed_dim={self.embed_dim}", f"num_heads={self.num_heads}"]
        if self.kdim != self.embed_dim or self.vdim != self.embed_dim:
            parts.append(f"kdim={self.kdim}, vdim={self.vdim}")
        parts += [f"dropout={self.dropout}", f"batch_first={self.batch_first}"]
        if self.bias_k is not None:
            parts.append("add_bias_kv=True")
        if self.add_zero_attn:
            parts.append("add_zero_attn=True")
        return ", ".join(parts)


def _linear_copy(weight: Tensor, bias: Tensor | None) -> nn.Linear:
    """A plain ``nn.Linear`` holding copies of ``weight`` ``(out, in)`` and ``bias``."""
    out_features, in_features = weight.shape
    layer = nn.Linear(in_features, out_features, bias is not None, device=weight.device, dtype=weight.dtype)
    layer.weight.requires_grad_(weight.requires_grad)  # a frozen weight stays frozen
    if bias is not None:
        layer.bias.requires_grad_(bias.requires_grad)
    with torch.no_grad():
        layer.weight.copy_(weight)
        if bias is not None:
            layer.bias.copy_(bias)
    return layer
