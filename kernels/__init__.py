"""SLER-IR kernels: fused transposed attention (MDTA, self and cross) and routed-expert ops, in Triton.

Each op has a PyTorch reference twin (``kernels.reference``) with the same signature; the public functions
run the Triton kernel on CUDA tensors and the twin elsewhere. ``use_reference(True)`` (or
``SLERIR_KERNELS=reference``) forces the twins for debugging; ``use_reference(True, family="routed")`` (or
``SLERIR_REFERENCE_KERNELS=routed``, a comma list of "transposed_attention" and "routed") forces one family's,
leaving the other on its kernel. Importing this package does not import triton.
"""

from kernels._dispatch import debug_mode, use_reference
from kernels.functional import routed_depthwise3x3, routed_pointwise, transposed_attention
from kernels.reference import routed_depthwise3x3_ref, routed_pointwise_ref, transposed_attention_ref

__all__ = [
    "debug_mode",
    "routed_depthwise3x3",
    "routed_depthwise3x3_ref",
    "routed_pointwise",
    "routed_pointwise_ref",
    "transposed_attention",
    "transposed_attention_ref",
    "use_reference",
]
