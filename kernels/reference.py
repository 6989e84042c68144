"""PyTorch reference twins of the Triton kernels: same signatures, same results, autograd through torch ops.

They are the CPU path, the test oracle and the benchmark baseline. Each is written the plain way (Restormer's
MDTA, a gathered ``bmm``, one grouped ``conv2d``), so that what they compute is easy to check by eye; large
attention maps are arranged pixel-major for the memory layout the CPU path sees (see its docstring), and the
tests hold both forms to a float64 loop.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

NORM_EPS = 1e-12  # F.normalize's default eps, shared with the Triton kernels
PIXEL_MAJOR_MIN_PIXELS = 16384
"""Maps of at least this many pixels (128²) take the pixel-major attention: below, a training step's 64² crops
ran the (B, heads, C_h, N) form 1.2x to 1.7x faster (forward and backward, batch 4, bf16)."""


def compute_dtype(device_type: str, dtype: torch.dtype) -> torch.dtype:
    """The dtype an op computes and returns in for inputs of ``dtype``: inside an autocast region on
    ``device_type`` its dtype, as autocast runs a matmul, else ``dtype``. Kernels and twins share it, so that
    both return the same dtype under autocast."""
    return torch.get_autocast_dtype(device_type) if torch.is_autocast_enabled(device_type) else dtype


def check_attention_args(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, temperature: torch.Tensor
) -> tuple[int, int, int, int]:
    """Check the shapes of transposed-attention arguments and return (B, heads, C_h, N)."""
    if q.dim() != 4:
        raise ValueError(f"q must be (B, heads, C_h, N), got shape {tuple(q.shape)}")
    if k.shape != q.shape or v.shape != q.shape:
        raise ValueError(
            f"q, k and v must have one shape (B, heads, C_h, N); got {tuple(q.shape)}, {tuple(k.shape)}, "
            f"{tuple(v.shape)} (resize the prior to the features before cross attention)"
        )
    b, h, c, n = q.shape
    if temperature.shape not in ((h,), (b, h)):
        raise ValueError(
            f"temperature must be (heads,) = ({h},) or (B, heads) = ({b}, {h}), got {tuple(temperature.shape)}"
        )
    if c == 0 or n == 0:
        raise ValueError(f"q must have channels and pixels, got shape {tuple(q.shape)}")
    return b, h, c, n


def transposed_attention_ref(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, temperature: torch.Tensor
) -> torch.Tensor:
    """Transposed (channel) attention of Restormer's MDTA, in plain PyTorch.

    ``softmax(temperature * normalize(q) @ normalize(k)^T) @ v`` with the L2 normalisation along the pixels,
    computed as ``q k^T / (|q| |k|^T)``: the norms divide the C_h x C_h logits rather than q and k themselves,
    which saves two divisions of whole maps forward and their gradients backward (a training step of 4 crops
    of 64² ran 1.03x to 1.08x faster). Large maps are arranged pixel-major: the features arrive channels_last
    (the layer norm leaves them so, and oneDNN's convolutions keep it), where a reduction or product along the
    pixels of (B, heads, C_h, N) strides through memory, and at 512² that made a restoration 1.3x slower.
    Training crops are small enough to stay in cache, and there the (B, heads, C_h, N) form is the faster one.

    Args:
        q: (B, heads, C_h, N) queries; for cross attention (GLGF) from another tensor than k and v.
        k: (B, heads, C_h, N) keys.
        v: (B, heads, C_h, N) values.
        temperature: (heads,) or (B, heads) scale of the logits; (B, heads) gives each sample its own.

    Returns:
        (B, heads, C_h, N) in the common dtype of q, k and v; under autocast, the autocast dtype.
    """
    b, h, c, n = check_attention_args(q, k, v, temperature)
    dtype = torch.promote_types(torch.promote_types(q.dtype, k.dtype), v.dtype)
    q, k, v = q.to(dtype), k.to(dtype), v.to(dtype)
    t = temperature.expand(b, h).to(dtype)[:, :, None, None]
    if n < PIXEL_MAJOR_MIN_PIXELS:
        norm_q = q.norm(dim=-1, keepdim=True).clamp_min(NORM_EPS)
        norm_k = k.norm(dim=-1, keepdim=True).clamp_min(NORM_EPS)
        logits = (q @ k.transpose(-2, -1)) / (norm_q * norm_k.transpose(-2, -1))
        return (logits * t).softmax(dim=-1) @ v
    qp, kp, vp = (_pixel_major(x) for x in (q, k, v))
    norm_q = _pixel_norms(qp).view(b, h, c, 1)
    norm_k = _pixel_norms(kp).view(b, h, 1, c)
    logits = _diagonal_blocks(_per_sample_mm(qp.transpose(1, 2), kp), h) / (norm_q * norm_k)
    attn = (logits * t).softmax(dim=-1)
    out = _per_sample_mm(vp, _block_diagonal(attn).transpose(1, 2))  # (B, N, heads * C_h)
    return out.view(b, n, h, c).permute(0, 2, 3, 1)


def _pixel_major(x: torch.Tensor) -> torch.Tensor:
    """(B, heads, C_h, N) as (B, N, heads * C_h): a view when the channels are innermost."""
    b, h, c, n = x.shape
    return x.permute(0, 3, 1, 2).reshape(b, n, h * c)


def _per_sample_mm(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a @ b`` per sample with 2-D ``mm``, which takes a transposed operand as it is; ``bmm`` copied a
    (32, 262144) one first, and that copy took 30x the product."""
    if a.shape[0] == 1:
        return (a[0] @ b[0])[None]
    return torch.stack([x @ y for x, y in zip(a, b, strict=True)])


def _pixel_norms(xp: torch.Tensor) -> torch.Tensor:
    """(B, C) L2 norms along the pixels of pixel-major (B, N, C), clamped at NORM_EPS like F.normalize.

    Taken from the Gram diagonal, one GEMM: a norm reduced along the outer axis ran 20x slower in bf16.
    Clamping the square before the root keeps the gradient of a zero channel at 0, as F.normalize's.
    """
    squares = _per_sample_mm(xp.transpose(1, 2), xp).diagonal(dim1=-2, dim2=-1)
    return squares.clamp_min(NORM_EPS**2).sqrt()


def _diagonal_blocks(m: torch.Tensor, heads: int) -> torch.Tensor:
    """The heads' (C_h, C_h) blocks on the diagonal of (B, C, C) matrices, as (B, heads, C_h, C_h)."""
    b, c, _ = m.shape
    return m.view(b, heads, c // heads, heads, c // heads).diagonal(dim1=1, dim2=3).permute(0, 3, 1, 2)


def _block_diagonal(blocks: torch.Tensor) -> torch.Tensor:
    """(B, heads, C_h, C_h) as block-diagonal (B, C, C) matrices: one GEMM then applies every head at once."""
    b, h, c, _ = blocks.shape
    eye = torch.eye(h, dtype=blocks.dtype, device=blocks.device)
    return torch.einsum("bhij,hg->bhigj", blocks, eye).reshape(b, h * c, h * c)


def expert_pointwise_weights(weight: torch.Tensor) -> torch.Tensor:
    """Expert 1x1-conv weights as (E, C_out, C_in); stacked conv weights (E, C_out, C_in, 1, 1) are viewed."""
    if weight.dim() == 5 and weight.shape[3:] == (1, 1):
        weight = weight.flatten(2)
    if weight.dim() != 3:
        raise ValueError(f"weight must be (E, C_out, C_in) or (E, C_out, C_in, 1, 1), got {tuple(weight.shape)}")
    return weight


def check_routed_args(
    x: torch.Tensor, weight: torch.Tensor, expert_index: torch.Tensor, bias: torch.Tensor | None, c_out: int
) -> None:
    """Check the batch, expert and bias shapes shared by the routed ops."""
    if x.dim() < 2:
        raise ValueError(f"x must be (B, C, ...), got shape {tuple(x.shape)}")
    if expert_index.shape != (x.shape[0],) or expert_index.dtype not in (torch.int64, torch.int32):
        raise ValueError(
            f"expert_index must be an int64 (B,) = ({x.shape[0]},) tensor, got {expert_index.dtype} "
            f"{tuple(expert_index.shape)}"
        )
    if bias is not None and bias.shape != (weight.shape[0], c_out):
        raise ValueError(f"bias must be (E, C_out) = ({weight.shape[0]}, {c_out}), got {tuple(bias.shape)}")


def check_pointwise_args(
    x: torch.Tensor, weight: torch.Tensor, expert_index: torch.Tensor, bias: torch.Tensor | None
) -> torch.Tensor:
    """Check the arguments of a routed 1x1 convolution; returns the weights as (E, C_out, C_in)."""
    weight = expert_pointwise_weights(weight)
    check_routed_args(x, weight, expert_index, bias, weight.shape[1])
    if weight.shape[2] != x.shape[1]:
        raise ValueError(f"weight expects C_in = {weight.shape[2]} channels, x has {x.shape[1]}")
    return weight


def routed_pointwise_ref(
    x: torch.Tensor, weight: torch.Tensor, expert_index: torch.Tensor, bias: torch.Tensor | None = None
) -> torch.Tensor:
    """Per-sample expert 1x1 convolution: ``y[b] = weight[expert_index[b]] @ x[b] (+ bias[expert_index[b]])``.

    Same contract as ``kernels.routed_pointwise``. Weights and bias are cast to x's dtype, or under autocast
    everything to the autocast dtype (an fp32 bias added after autocast's bf16 ``bmm`` would promote the
    output to fp32, where the kernel returns bf16).
    """
    weight = check_pointwise_args(x, weight, expert_index, bias)
    b, c_in = x.shape[:2]
    index = expert_index.long()
    dtype = compute_dtype(x.device.type, x.dtype)
    y = torch.bmm(weight[index].to(dtype), x.reshape(b, c_in, -1).to(dtype))
    if bias is not None:
        y = y + bias[index].to(dtype)[:, :, None]
    return y.view(b, -1, *x.shape[2:])


def routed_depthwise3x3_ref(
    x: torch.Tensor, weight: torch.Tensor, expert_index: torch.Tensor, bias: torch.Tensor | None = None
) -> torch.Tensor:
    """Per-sample expert depthwise 3x3 convolution (padding 1), in one grouped ``conv2d`` launch.

    The batch is folded into the groups: the input becomes (1, B*C, H, W) and sample b's C filters are those
    of its expert, so every sample reads its own expert's weights in a single call.

    Args:
        x: (B, C, H, W) features.
        weight: (E, C, 1, 3, 3) expert depthwise filters (stacked ``Conv2d(C, C, 3, groups=C)`` weights).
        expert_index: (B,) int64 expert of each sample.
        bias: optional (E, C) expert biases.

    Returns:
        (B, C, H, W) in x's dtype; under autocast, the autocast dtype.
    """
    if x.dim() != 4:
        raise ValueError(f"x must be (B, C, H, W), got shape {tuple(x.shape)}")
    b, c, h, w = x.shape
    if weight.dim() != 5 or weight.shape[1:] != (c, 1, 3, 3):
        raise ValueError(f"weight must be (E, C, 1, 3, 3) = (E, {c}, 1, 3, 3), got {tuple(weight.shape)}")
    check_routed_args(x, weight, expert_index, bias, c)
    index = expert_index.long()
    filters = weight[index].to(x.dtype).reshape(b * c, 1, 3, 3)
    shift = None if bias is None else bias[index].to(x.dtype).reshape(b * c)
    y = F.conv2d(x.reshape(1, b * c, h, w), filters, shift, padding=1, groups=b * c)
    return y.view(b, c, h, w)
