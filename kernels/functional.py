"""Public kernel functions: the Triton kernel on CUDA, the PyTorch reference twin elsewhere.

``kernels._dispatch`` decides per call, per kernel family; ``kernels.use_reference``,
``SLERIR_KERNELS=reference`` and ``SLERIR_REFERENCE_KERNELS=<families>`` force the twins.
The CPU path imports nothing beyond torch.
"""

from __future__ import annotations

import torch

from kernels import _dispatch
from kernels._dispatch import GRID_AXIS_LIMIT, MAX_HEAD_CHANNELS
from kernels.reference import routed_depthwise3x3_ref, routed_pointwise_ref, transposed_attention_ref

# Heads wider than MAX_HEAD_CHANNELS, more (sample, head) pairs (samples for the routed ops) than a grid axis
# holds, or dtypes other than fp32, bf16 and fp16 (float64 for gradcheck, say) take the reference.
KERNEL_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


def _kernel_dtypes(*tensors: torch.Tensor | None) -> bool:
    return all(t is None or t.dtype in KERNEL_DTYPES for t in tensors)


def transposed_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, temperature: torch.Tensor) -> torch.Tensor:
    """Transposed (channel) attention of Restormer's MDTA, self or cross.

    ``out = softmax(temperature * q̂ k̂ᵀ) @ v`` with q̂, k̂ the rows of q and k L2-normalised along the
    pixels (eps 1e-12, as ``F.normalize``); the attention matrix is C_h x C_h per (sample, head). For the
    cross attention of GLGF injection, pass queries from the (resized) prior and keys and values from the
    features.

    Args:
        q: (B, heads, C_h, N) queries.
        k: (B, heads, C_h, N) keys.
        v: (B, heads, C_h, N) values.
        temperature: (heads,) or (B, heads) logit scale; (B, heads) gives each sample its own (routed
            experts).

    Returns:
        (B, heads, C_h, N) in the common dtype of q, k and v; under autocast, the autocast dtype.
    """
    fits = q.dim() == 4 and q.shape[2] <= MAX_HEAD_CHANNELS and q.shape[0] * q.shape[1] <= GRID_AXIS_LIMIT
    fits = fits and _kernel_dtypes(q, k, v, temperature)
    if fits and _dispatch.use_triton(q, "transposed_attention"):
        from kernels.ops.transposed_attention import transposed_attention_triton

        return transposed_attention_triton(q, k, v, temperature)
    return transposed_attention_ref(q, k, v, temperature)


def routed_pointwise(
    x: torch.Tensor, weight: torch.Tensor, expert_index: torch.Tensor, bias: torch.Tensor | None = None
) -> torch.Tensor:
    """Per-sample expert 1x1 convolution in one grouped launch: ``y[b] = weight[expert_index[b]] @ x[b]``.

    Args:
        x: (B, C_in, N) features, or (B, C_in, *spatial).
        weight: (E, C_out, C_in) expert weights (or stacked conv weights (E, C_out, C_in, 1, 1)).
        expert_index: (B,) int64 expert of each sample.
        bias: optional (E, C_out) expert biases.

    Returns:
        (B, C_out, N) (or (B, C_out, *spatial)) in x's dtype; under autocast, the autocast dtype.
    """
    fits = x.dim() >= 2 and x.shape[0] <= GRID_AXIS_LIMIT and _kernel_dtypes(x, weight, bias)
    if fits and _dispatch.use_triton(x, "routed"):
        from kernels.ops.routed import routed_pointwise_triton

        return routed_pointwise_triton(x, weight, expert_index, bias)
    return routed_pointwise_ref(x, weight, expert_index, bias)


def routed_depthwise3x3(
    x: torch.Tensor, weight: torch.Tensor, expert_index: torch.Tensor, bias: torch.Tensor | None = None
) -> torch.Tensor:
    """Per-sample expert depthwise 3x3 convolution (padding 1) in one launch.

    Folding the batch into the groups of one ``conv2d`` is already a grouped, one-launch kernel (cuDNN's
    depthwise path), so every device runs the same code.

    Args:
        x: (B, C, H, W) features.
        weight: (E, C, 1, 3, 3) expert depthwise filters.
        expert_index: (B,) int64 expert of each sample.
        bias: optional (E, C) expert biases.

    Returns:
        (B, C, H, W) in x's dtype; under autocast, the autocast dtype.
    """
    return routed_depthwise3x3_ref(x, weight, expert_index, bias)
