"""``torch.nn.init``-style initializers: orthogonal, SAO, RG-N/RG-U, Delta, SAO-Delta, ECO, SAO-ECO, EOI.

Every initializer fills its tensor in place under ``no_grad``, returns it and takes
``generator`` last. The SAO-family ones take ``topology=`` so the caller can keep the mask;
EOI's support is random and irregular, so ``eoi_with_mask_``/``eoi_delta_with_mask_`` return it.
"""

from sao.init.conv import delta_orthogonal_, sao_delta_
from sao.init.eco import eco_, sao_eco_
from sao.init.eoi import eoi_, eoi_delta_, eoi_delta_with_mask_, eoi_with_mask_
from sao.init.linear import orthogonal_, ramanujan_normal_, ramanujan_uniform_, sao_

__all__ = [
    "delta_orthogonal_",
    "eco_",
    "eoi_",
    "eoi_delta_",
    "eoi_delta_with_mask_",
    "eoi_with_mask_",
    "orthogonal_",
    "ramanujan_normal_",
    "ramanujan_uniform_",
    "sao_",
    "sao_delta_",
    "sao_eco_",
]
