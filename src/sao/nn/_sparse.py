"""Shared machinery of the sparse layers: the topology as layer state, and the two storage backends.

``"masked"`` stores a dense ``weight_orig`` and a fixed ``weight_mask`` and computes with
``weight_orig * weight_mask`` (the paper's way, as :mod:`torch.nn.utils.prune` does).
``"blocked"`` stores only the dense blocks of the topology and computes with a batched matmul or
a grouped convolution on permuted features, so memory and FLOPs scale with the density ``1/g``.
Both expose the same ``weight`` (dense view), ``mask`` and ``topology``, hold the same values
after the same seeded construction, and keep the topology fixed while training.

**State.** The topology is the layer's :class:`~sao.topology.Topology` (kept on the CPU, the
source of truth) and is saved in the ``state_dict`` as buffers: the permutations ``row_perm``/
``col_perm`` and ``topology_spec = [num_blocks, mirrored]`` (tensors only, so generic state-dict
tools — averaging, EMA, ``weights_only`` loading — keep working).
Loading a ``state_dict`` adopts the checkpoint's permutations; a checkpoint of another
topology kind (another degree, plain vs mirrored) fails loudly naming both, as PyTorch fails
on a size mismatch; one without ``topology_spec`` is refused as incomplete.
Deferred initialisation works the PyTorch way: build on ``device="meta"``, then
``to_empty(device=...)`` and ``reset_parameters()``.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import Tensor, nn

from sao._random import check_activation, check_generator
from sao._validation import as_real
from sao.init.registry import LayerInit, get_layer_init
from sao.nn.masked import kernel_connections
from sao.topology import Topology, resolve_topology, scatter_blocks

__all__ = ["BACKENDS", "SparseLayerBase"]

BACKENDS = ("blocked", "masked")


def _check_backend(backend: str) -> str:
    if backend not in BACKENDS:
        raise ValueError(f"backend={backend!r} is not supported; choose from {', '.join(BACKENDS)}")
    return backend


def _describe(num_blocks: int, mirrored: bool, larger: int) -> str:
    kind = "mirrored (ReLU) " if mirrored else ""
    return f"{kind}degree={larger // num_blocks} ({num_blocks} blocks, sparsity {1 - 1 / num_blocks:.6g})"


class SparseLayerBase(nn.Module):
    """Common base of :class:`SparseLinear` and :class:`SparseConv2d` (not used directly).

    Buffers ``row_perm``/``col_perm``/``topology_spec`` hold the topology (saved in the
    ``state_dict``); ``row_inverse`` (not saved) undoes the output
    permutation of the blocked backend. Subclasses implement ``_block_storage`` (the shape of
    ``blocks``) and ``forward``.
    """

    _version = 2  # 2: topology_spec buffer, contiguous linear blocks, 4-D conv blocks

    def _setup_sparse(self, out_features: int, in_features: int, kernel_size: tuple[int, ...], bias: bool,
                      degree: int | None, sparsity: float | None, init: str, backend: str, activation: str,
                      gain: float, topology: Topology | None, generator: torch.Generator | None,
                      factory: dict) -> None:
        self.init, self.backend = init, _check_backend(backend)
        self.activation, self.gain = activation, as_real(gain, "gain")
        self.kernel_size = kernel_size
        self._layer_init.check_kernel(kernel_size)
        check_generator(generator)
        mirrored = self._layer_init.topology_kind(check_activation(activation))
        topology = resolve_topology((out_features, in_features), degree, sparsity, topology, generator, mirrored)
        self._topology = topology
        device = factory.get("device")
        self.register_buffer("row_perm", torch.empty(out_features, dtype=torch.long, device=device))
        self.register_buffer("col_perm", torch.empty(in_features, dtype=torch.long, device=device))
        self.register_buffer("topology_spec", torch.empty(2, dtype=torch.long, device=device))
        self.register_buffer("row_inverse", torch.empty(out_features, dtype=torch.long, device=device),
                             persistent=False)
        if self.backend == "blocked":
            self.blocks = nn.Parameter(torch.empty(self._block_storage(topology), **factory))
        else:
            self.weight_orig = nn.Parameter(torch.empty(out_features, in_features, *kernel_size, **factory))
            self.register_buffer("weight_mask", torch.empty(out_features, in_features, *[1] * len(kernel_size),
                                                            **factory))
        self.bias = nn.Parameter(torch.empty(out_features, **factory)) if bias else None
        self.reset_parameters(generator)

    def _block_storage(self, topology: Topology) -> tuple[int, ...]:
        """Shape of the ``blocks`` parameter for ``topology``."""
        raise NotImplementedError

    @property
    def _layer_init(self) -> LayerInit:
        """The registered block initializer named by ``self.init`` (looked up, so layers pickle by name)."""
        return get_layer_init(self.init, len(self.kernel_size))

    # ------------------------------------------------------------------ topology

    @property
    def topology(self) -> Topology:
        """The fixed :class:`~sao.topology.Topology` of this layer (on the CPU)."""
        return self._topology

    @property
    def num_blocks(self) -> int:
        """``g``: the number of dense blocks."""
        return self._topology.num_blocks

    @property
    def mirrored(self) -> bool:
        """Whether the topology is the mirrored one of the ReLU construction."""
        return self._topology.mirrored

    @property
    def mask(self) -> Tensor:
        """Bool ``(out, in)`` mask of the connections (kernels, for convolutions) that exist."""
        return self._topology.mask(device=self.row_perm.device)

    @property
    def degree(self) -> int:
        """Degree of the smaller side's nodes."""
        return self._topology.degree

    @property
    def sparsity(self) -> float:
        """Fraction of absent connections, exactly ``1 - 1/num_blocks``."""
        return self._topology.sparsity

    @torch.no_grad()
    def _write_topology(self) -> None:
        """Write ``self._topology`` into the buffers (``row_perm``, ``col_perm``, ``topology_spec``,
        ``row_inverse``, the mask)."""
        topology = self._topology
        self.topology_spec.copy_(torch.tensor([topology.num_blocks, int(topology.mirrored)]))
        self.row_perm.copy_(topology.row_perm)
        self.col_perm.copy_(topology.col_perm)
        self.row_inverse.copy_(torch.argsort(topology.row_perm))
        if self.backend == "masked":
            mask = topology.mask()
            self.weight_mask.copy_(mask.view(*mask.shape, *[1] * len(self.kernel_size)))

    # ------------------------------------------------------------------ values

    @torch.no_grad()
    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """Redraw the values (same topology) with the layer's init; zero the bias.

        Also rewrites the topology buffers, so after ``to_empty()`` (deferred initialisation
        from the meta device) this gives a valid layer with the topology drawn at construction.
        """
        self._write_topology()
        topology = self._topology
        blocks = self._layer_init.draw(topology, self.kernel_size, self.gain, generator)
        if self.backend == "blocked":
            self.blocks.copy_(blocks.reshape(self.blocks.shape))
        else:
            self.weight_orig.copy_(topology.blocks_to_dense(blocks))
        if self.bias is not None:
            self.bias.zero_()

    def block_view(self, blocks: Tensor | None = None) -> Tensor:
        """``blocks`` (default: the blocked backend's parameter) as ``(g, bm, bn, *kernel)`` (a view;
        differentiable)."""
        blocks = self.blocks if blocks is None else blocks
        g = self.num_blocks
        return blocks.unflatten(0, (g, blocks.shape[0] // g)) if self.kernel_size else blocks

    def _scatter(self, blocks: Tensor) -> Tensor:
        """The dense ``(out, in, *kernel)`` weight of ``blocks`` (differentiable; zero off the mask)."""
        return scatter_blocks(self.block_view(blocks), self.row_perm, self.col_perm)

    @property
    def weight(self) -> Tensor:
        """The dense ``(out, in, *kernel)`` weight (differentiable; zero off the mask)."""
        if self.backend == "blocked":
            return self._scatter(self.blocks)
        return self.weight_orig * self.weight_mask

    def _factory(self) -> tuple[torch.device, torch.dtype]:
        """Device and dtype of the stored weights."""
        stored = self.blocks if self.backend == "blocked" else self.weight_orig
        return stored.device, stored.dtype

    @torch.no_grad()
    def _copy_into(self, dense: nn.Module) -> nn.Module:
        """Copy the dense weight view and the bias into the plain layer ``dense``; return it."""
        dense.weight.copy_(self.weight)
        if self.bias is not None:
            dense.bias.copy_(self.bias)
        return dense

    # ------------------------------------------------------------------ state

    @staticmethod
    def _checkpoint_kind(state_dict: dict[str, Any], prefix: str) -> tuple[int, bool] | None:
        """``(num_blocks, mirrored)`` of the checkpoint's ``topology_spec`` (``None`` without one)."""
        spec = state_dict.get(prefix + "topology_spec")
        if isinstance(spec, Tensor) and spec.numel() == 2:
            return int(spec[0]), bool(spec[1])
        return None

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, local_metadata: dict[str, Any],
                              strict: bool, missing_keys: list[str], unexpected_keys: list[str],
                              error_msgs: list[str]) -> None:
        name = type(self).__name__
        kind = self._checkpoint_kind(state_dict, prefix)
        m, n = self._topology.out_features, self._topology.in_features
        if kind is not None and kind != (self.num_blocks, self.mirrored):
            theirs, ours = _describe(*kind, max(m, n)), _describe(self.num_blocks, self.mirrored, max(m, n))
            error_msgs.append(f"topology mismatch for {prefix or name}: the checkpoint holds a {m}x{n} {theirs}, "
                              f"this {name} is {ours}; build the layer with the checkpoint's degree (and "
                              "activation) to load it")
            return
        incoming = self._incoming_topology(state_dict, prefix, error_msgs)
        if incoming is False:
            return
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)
        if incoming is not None:
            self._adopt(incoming)

    def _incoming_topology(self, state_dict: dict[str, Any], prefix: str,
                           error_msgs: list[str]) -> Topology | Literal[False] | None:
        """The checkpoint's topology, checked before anything is copied.

        ``None`` if the checkpoint holds none of the topology's entries (a partial load of other
        tensors keeps the layer's topology); ``False`` after appending an error if it holds only
        some of them, permutations that are not permutations, or a mask that disagrees with them
        (so a layer can never report one topology and compute with another).
        """
        name = prefix or type(self).__name__
        topology_keys = ["row_perm", "col_perm", "topology_spec"]
        if self.backend == "masked":
            topology_keys.append("weight_mask")
        present = [k for k in topology_keys if prefix + k in state_dict]
        if not present:
            return None
        absent = [k for k in ("row_perm", "col_perm", "topology_spec") if k not in present]
        if absent:
            error_msgs.append(f"incomplete topology for {name} in the checkpoint: it has {', '.join(present)} but "
                              f"not {', '.join(absent)}; a sparse layer's topology loads whole (row_perm, col_perm, "
                              "topology_spec and, for the masked backend, weight_mask)")
            return False
        m, n = self._topology.out_features, self._topology.in_features
        rows, cols = (state_dict[prefix + k].detach().cpu().long() for k in ("row_perm", "col_perm"))
        try:
            incoming = Topology(m, n, self.num_blocks, rows, cols, self.mirrored)
        except ValueError as err:
            error_msgs.append(f"invalid topology for {name} in the checkpoint: {err}")
            return False
        mask = state_dict.get(prefix + "weight_mask")
        if isinstance(mask, Tensor) and not torch.equal(kernel_connections(mask.detach().cpu()), incoming.mask()):
            error_msgs.append(f"weight_mask for {name} disagrees with row_perm/col_perm in the checkpoint")
            return False
        return incoming

    @torch.no_grad()
    def _adopt(self, topology: Topology) -> None:
        """Make ``topology`` (just loaded into the buffers) the layer's."""
        self._topology = topology
        # a fresh buffer, not copy_: after load_state_dict(assign=True) the old one may be on the meta device
        self.row_inverse = torch.argsort(topology.row_perm).to(self.row_perm.device)

    def _sparse_repr(self) -> str:
        g = self.num_blocks
        bm, bn = self._topology.block_shape
        mirrored = ", mirrored" if self.mirrored else ""
        fusion = getattr(self, "fusion", "auto")
        return (f"degree={self.degree}, sparsity={self.sparsity:.4%}, blocks={g}x({bm}x{bn}){mirrored}, "
                f"init={self.init!r}, backend={self.backend!r}, bias={self.bias is not None}"
                + ("" if fusion == "auto" else f", fusion={fusion!r}"))
