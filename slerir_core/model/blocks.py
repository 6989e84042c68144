"""Restormer building blocks: LayerNorm over channels, MDTA, GDFN, the transformer block and samplers.

After Restormer (Zamir et al., CVPR 2022) and PromptIR (Potlapalli et al., NeurIPS 2023); written anew.
Attention goes through ``kernels.transposed_attention``, which runs the fused Triton kernel on CUDA and
its PyTorch twin elsewhere.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from kernels import transposed_attention


class LayerNorm2d(nn.Module):
    """LayerNorm over the channels of each pixel of a (B, C, H, W) map.

    Args:
        channels: C.
        with_bias: subtract the mean and add a bias (PromptIR); otherwise Restormer's bias-free form,
            which only divides by the standard deviation.
    """

    def __init__(self, channels: int, with_bias: bool = True) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels)) if with_bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.bias is not None:
            y = F.layer_norm(x.permute(0, 2, 3, 1), x.shape[1:2], self.weight, self.bias, eps=1e-5)
            return y.permute(0, 3, 1, 2)
        var = x.var(dim=1, keepdim=True, unbiased=False)
        return x * torch.rsqrt(var + 1e-5) * self.weight[:, None, None]


def to_heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    """(B, C, H, W) -> (B, heads, C / heads, H * W), the layout of transposed attention."""
    b, c, h, w = x.shape
    return x.reshape(b, heads, c // heads, h * w)


def from_heads(x: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(B, heads, C_h, H * W) -> (B, C, H, W), the inverse of ``to_heads``, keeping channels_last outputs so.

    A plain reshape of a channels_last attention output of one sample gives its batch dimension a stride
    smaller than the image; oneDNN then no longer sees channels_last and copies the whole map to NCHW
    before the projection (a quarter of a 512² restoration's time).
    """
    b, heads, c, _ = x.shape
    return x.permute(0, 3, 1, 2).reshape(b, height, width, heads * c).permute(0, 3, 1, 2)


class MDTA(nn.Module):
    """Multi-Dconv-head transposed attention: attention across channels, linear in the pixel count.

    Args:
        channels: feature channels.
        heads: attention heads; each attends over ``channels / heads`` channels.
        bias: biases in the convolutions.
    """

    def __init__(self, channels: int, heads: int, bias: bool = False) -> None:
        super().__init__()
        self.heads = heads
        self.temperature = nn.Parameter(torch.ones(heads))
        self.qkv = nn.Conv2d(channels, channels * 3, 1, bias=bias)
        self.qkv_dw = nn.Conv2d(channels * 3, channels * 3, 3, padding=1, groups=channels * 3, bias=bias)
        self.proj = nn.Conv2d(channels, channels, 1, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self.qkv_dw(self.qkv(x)).chunk(3, dim=1)
        out = transposed_attention(
            to_heads(q, self.heads), to_heads(k, self.heads), to_heads(v, self.heads), self.temperature
        )
        return self.proj(from_heads(out, *x.shape[-2:]))


class GDFN(nn.Module):
    """Gated-Dconv feed-forward network: GELU(a) * b after a depthwise 3x3 on both halves."""

    def __init__(self, channels: int, factor: float, bias: bool = False) -> None:
        super().__init__()
        hidden = int(channels * factor)
        self.project_in = nn.Conv2d(channels, hidden * 2, 1, bias=bias)
        self.dw = nn.Conv2d(hidden * 2, hidden * 2, 3, padding=1, groups=hidden * 2, bias=bias)
        self.project_out = nn.Conv2d(hidden, channels, 1, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Each half from its own rows of the weights: the halves of one channels_last map would be strided,
        # and GELU and the product ran 2.6x slower on them than on maps of their own.
        a, b = (self._half(x, part) for part in (0, 1))
        return self.project_out(F.gelu(a) * b)

    def _half(self, x: torch.Tensor, part: int) -> torch.Tensor:
        hidden = self.project_out.in_channels
        rows = slice(part * hidden, (part + 1) * hidden)

        def bias(conv: nn.Conv2d) -> torch.Tensor | None:
            return None if conv.bias is None else conv.bias[rows]

        h = F.conv2d(x, self.project_in.weight[rows], bias(self.project_in))
        return F.conv2d(h, self.dw.weight[rows], bias(self.dw), padding=1, groups=hidden)


class TransformerBlock(nn.Module):
    """Restormer block: x + MDTA(LN(x)), then x + GDFN(LN(x))."""

    def __init__(self, channels: int, heads: int, ffn_factor: float, bias: bool, ln_bias: bool) -> None:
        super().__init__()
        self.norm1 = LayerNorm2d(channels, ln_bias)
        self.attn = MDTA(channels, heads, bias)
        self.norm2 = LayerNorm2d(channels, ln_bias)
        self.ffn = GDFN(channels, ffn_factor, bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.ffn(self.norm2(x))


class Downsample(nn.Sequential):
    """Halve the resolution, double the channels: 3x3 conv to C/2, then pixel-unshuffle."""

    def __init__(self, channels: int) -> None:
        super().__init__(nn.Conv2d(channels, channels // 2, 3, padding=1, bias=False), nn.PixelUnshuffle(2))


class Upsample(nn.Sequential):
    """Double the resolution, halve the channels: 3x3 conv to 2C, then pixel-shuffle."""

    def __init__(self, channels: int) -> None:
        super().__init__(nn.Conv2d(channels, channels * 2, 3, padding=1, bias=False), nn.PixelShuffle(2))
