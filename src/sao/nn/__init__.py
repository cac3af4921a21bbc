"""Sparse layers with a fixed SAO topology (``SparseLinear``, ``SparseConv2d``, ``ECOConv2d``, ``FusedSparseChain``),
the skew orthogonal convolution ``SOCConv2d`` and the ``MaxMin`` activation."""

from sao.nn._reparam import reparametrization
from sao.nn._shape import InputShapeError
from sao.nn._sparse import BACKENDS
from sao.nn.activations import MaxMin
from sao.nn.chain import ELEMENTWISE, FusedSequential, FusedSparseChain, fuse_sparse_chains
from sao.nn.conv import SparseConv2d
from sao.nn.eco import ECOConv2d
from sao.nn.linear import SparseLinear, blocked_linear
from sao.nn.masked import MaskedConv2d, MaskedLinear
from sao.nn.soc import SOCConv2d

__all__ = [
    "BACKENDS",
    "ELEMENTWISE",
    "ECOConv2d",
    "FusedSequential",
    "FusedSparseChain",
    "InputShapeError",
    "MaskedConv2d",
    "MaskedLinear",
    "MaxMin",
    "SOCConv2d",
    "SparseConv2d",
    "SparseLinear",
    "blocked_linear",
    "fuse_sparse_chains",
    "reparametrization",
]
