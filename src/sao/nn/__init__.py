"""Sparse layers with a fixed SAO topology (``SparseLinear``, ``SparseConv2d``, ``ECOConv2d``, ``FusedSparseChain``),
the skew orthogonal convolution ``SOCConv2d``, the ``MaxMin`` activation, and the kernel backends behind the
compiled routes (:mod:`sao.nn.kernels`)."""

from sao.nn._reparam import reparametrization
from sao.nn._shape import InputShapeError
from sao.nn._sparse import BACKENDS
from sao.nn.activations import MaxMin
from sao.nn.attention import SparseMultiheadAttention
from sao.nn.chain import (
    ELEMENTWISE,
    ExecutionPlan,
    FusedSequential,
    FusedSparseChain,
    fusable_container,
    fuse_sparse_chains,
)
from sao.nn.conv import SparseConv2d
from sao.nn.dispatch import FUSION_MODES, fusion
from sao.nn.eco import ECOConv2d
from sao.nn.kernels import CHAIN_KERNELS, CONV_KERNELS, ChainKernel, ConvKernel, KernelBackend
from sao.nn.linear import SparseLinear, blocked_linear
from sao.nn.masked import MaskedConv2d, MaskedLinear
from sao.nn.soc import SOCConv2d

__all__ = [
    "BACKENDS",
    "CHAIN_KERNELS",
    "CONV_KERNELS",
    "ELEMENTWISE",
    "FUSION_MODES",
    "ChainKernel",
    "ConvKernel",
    "ECOConv2d",
    "ExecutionPlan",
    "FusedSequential",
    "FusedSparseChain",
    "InputShapeError",
    "KernelBackend",
    "MaskedConv2d",
    "MaskedLinear",
    "MaxMin",
    "SOCConv2d",
    "SparseConv2d",
    "SparseLinear",
    "SparseMultiheadAttention",
    "blocked_linear",
    "fusable_container",
    "fuse_sparse_chains",
    "fusion",
    "reparametrization",
]
