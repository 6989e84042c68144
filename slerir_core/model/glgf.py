"""Global-Local Granularity Fusion (SLER-IR §3.4): the restoration prior and its injection.

GLMC builds two aligned token maps: the CSP map (content patch tokens modulated by the content CLS
through FiLM, then LayerNorm) and the DSP map (the CLS tokens of a grid of crops seen by the degradation
extractor, upsampled to the patch grid). CGDF fuses them, ``F' = T + Attn(Q=T, K=D, V=D)`` followed by
LN + FFN, into the prior map. ``PriorInjection`` brings the prior into a routed stage by channel-wise
(transposed) cross-attention, the aligned prior giving the queries and the stage features keys and values,
and by a per-pixel FiLM of that update from the aligned prior. The attention alone mixes channels with one
matrix for the whole tile (the prior's layout enters only through a sum over pixels); the FiLM is what lets
a rainy region and a clean region of one image be updated differently.

The prior is a smooth map over the whole image. Tiles read it through ``sample_prior`` with their box
in whole-image coordinates, so a pixel sees the same prior value whether it is restored whole or tiled;
a batch of tiles of one image gives one box per tile.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import nn

from kernels import transposed_attention
from slerir_core.model.blocks import LayerNorm2d, from_heads, to_heads

Box = tuple[float, float, float, float]
"""(top, left, bottom, right) of a region in fractions of the whole image."""

FULL_BOX: Box = (0.0, 0.0, 1.0, 1.0)


class GLGF(nn.Module):
    """Build the prior map (B, prior_dim, h, w) from content tokens and crop degradation embeddings.

    Args:
        content_cls_dim: width of the content extractor's CLS embedding.
        content_token_dim: width of its patch tokens.
        crop_cls_dim: width of the degradation extractor's CLS embedding (one per crop).
        prior_dim: width of the prior map.
        heads: heads of the CGDF cross-attention.
    """

    def __init__(
        self, content_cls_dim: int, content_token_dim: int, crop_cls_dim: int, prior_dim: int, heads: int
    ) -> None:
        super().__init__()
        self.tokens_in = nn.Linear(content_token_dim, prior_dim)
        self.film = nn.Sequential(nn.Linear(content_cls_dim, prior_dim), nn.GELU(), nn.Linear(prior_dim, 2 * prior_dim))
        self.csp_norm = nn.LayerNorm(prior_dim)
        self.crops_in = nn.Linear(crop_cls_dim, prior_dim)
        self.cross = nn.MultiheadAttention(prior_dim, heads, batch_first=True)
        self.ffn_norm = nn.LayerNorm(prior_dim)
        self.ffn = nn.Sequential(nn.Linear(prior_dim, 2 * prior_dim), nn.GELU(), nn.Linear(2 * prior_dim, prior_dim))

    def forward(self, content_cls: torch.Tensor, content_tokens: torch.Tensor, crop_cls: torch.Tensor) -> torch.Tensor:
        """Fuse.

        Args:
            content_cls: (B, Dc) content CLS embedding.
            content_tokens: (B, h, w, Dt) content patch tokens.
            crop_cls: (B, g, g, Dd) CLS embeddings of the g x g crops.

        Returns:
            The prior map, (B, prior_dim, h, w).
        """
        b, h, w, _ = content_tokens.shape
        gamma, beta = self.film(content_cls).chunk(2, dim=-1)
        csp = self.csp_norm(gamma[:, None, None] * self.tokens_in(content_tokens) + beta[:, None, None])
        coarse = self.crops_in(crop_cls).permute(0, 3, 1, 2)
        dsp = F.interpolate(coarse, size=(h, w), mode="bilinear", align_corners=False).permute(0, 2, 3, 1)
        q, kv = csp.reshape(b, h * w, -1), dsp.reshape(b, h * w, -1)
        fused = q + self.cross(q, kv, kv, need_weights=False)[0]
        fused = fused + self.ffn(self.ffn_norm(fused))
        return fused.reshape(b, h, w, -1).permute(0, 3, 1, 2)


def as_boxes(box: Box | torch.Tensor, device: torch.device) -> torch.Tensor:
    """One box or a (N, 4) tensor of boxes as a (N, 4) float64 tensor on ``device``."""
    return torch.as_tensor(box, dtype=torch.float64, device=device).reshape(-1, 4)


def _bilinear_weights(
    start: torch.Tensor, stop: torch.Tensor, count: int, size: int, dtype: torch.dtype
) -> torch.Tensor:
    """(N, count, size) weights that sample a length-``size`` signal at ``count`` pixel centres spanning
    [start, stop] (N such spans, fractions of the signal's extent), bilinearly, clamping to the border sample."""
    steps = torch.arange(count, device=start.device, dtype=torch.float64) + 0.5
    centres = start[:, None] + (stop - start)[:, None] * steps / count
    pos = (centres * size - 0.5).clamp(0, size - 1)
    low = pos.floor().long().clamp(max=size - 1)
    frac = pos - low
    weights = torch.zeros(*pos.shape, size, device=start.device, dtype=torch.float64)
    weights.scatter_add_(2, low[..., None], (1 - frac)[..., None])
    weights.scatter_add_(2, (low + 1).clamp(max=size - 1)[..., None], frac[..., None])
    return weights.to(dtype)


@functools.lru_cache(maxsize=256)
def _axis_weights(
    start: float, stop: float, count: int, size: int, device: torch.device, dtype: torch.dtype
) -> torch.Tensor:
    """``_bilinear_weights`` of one span given as numbers, made once per span and shape and then reused.

    A training step and a tile of its own samples the prior over a box known on the host at every stage:
    building the matrices there each time was some 60 small ops a stage, and copying the box to a GPU a
    host wait that a step recorded as a CUDA graph cannot hold. They are constants, so they are kept.
    """
    span = torch.tensor([[start, stop]], dtype=torch.float64, device=device)
    return _bilinear_weights(span[:, 0], span[:, 1], count, size, dtype)


def sample_prior(prior: torch.Tensor, box: Box | torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear samples of the prior at the pixel centres of a ``size`` grid covering ``box``.

    The grid is axis-aligned, so bilinear sampling separates into one small matrix per axis; two matrix
    products do what ``grid_sample`` does (same values, border padding, ``align_corners=False``), with a far
    cheaper backward pass. The columns are sampled first, on the small prior, and the rows last: the product
    then comes out as a channels_last map, the layout of the features it meets (transposing a 96-channel 512²
    map afterwards took an eighth of a restoration), and with one box per tile only matrices of the prior's
    height are broadcast over the tiles.

    Args:
        prior: (B, P, h, w) prior over the whole image.
        box: (top, left, bottom, right) of the region in whole-image fractions, or a (N, 4) tensor of one box
            per sample (for tiles of one image, N tiles and B = 1); may extend past [0, 1] (padding), where
            the prior's border value is used.
        size: (H, W) of the output grid.

    Returns:
        (max(B, N), P, H, W), channels_last.
    """
    h, w = prior.shape[-2:]
    if isinstance(box, torch.Tensor):
        top, left, bottom, right = as_boxes(box, prior.device).unbind(1)
        rows = _bilinear_weights(top, bottom, size[0], h, prior.dtype)  # (N, H, h)
        cols = _bilinear_weights(left, right, size[1], w, prior.dtype)  # (N, W, w)
    else:
        top, left, bottom, right = (float(edge) for edge in box)
        rows = _axis_weights(top, bottom, size[0], h, prior.device, prior.dtype)  # (1, H, h)
        cols = _axis_weights(left, right, size[1], w, prior.device, prior.dtype)  # (1, W, w)
    p = prior.shape[1]
    cols_sampled = cols[:, None] @ prior.permute(0, 2, 3, 1)  # (N, 1, W, w) @ (B, h, w, P) -> (M, h, W, P)
    m = cols_sampled.shape[0]
    sampled = rows @ cols_sampled.reshape(m, h, size[1] * p)  # (N, H, h) @ (M, h, W * P)
    return sampled.reshape(m, *size, p).permute(0, 3, 1, 2)


class PriorInjection(nn.Module):
    """Channel-wise cross-attention from the aligned prior to the stage features, modulated per pixel.

    ``x + (1 + scale) * proj(Attn(Q=aligned prior, K=V=LN(x))) + shift``, where ``scale`` and ``shift``
    are 1x1 projections of the prior sampled at each pixel (zero at initialisation, so training starts
    from the plain cross-attention).

    Args:
        prior_dim: channels of the prior map.
        channels: channels of the stage.
        heads: attention heads.
        ln_bias: LayerNorm with bias (PromptIR) or bias-free.
    """

    def __init__(self, prior_dim: int, channels: int, heads: int, ln_bias: bool = True) -> None:
        super().__init__()
        self.heads = heads
        self.align = nn.Conv2d(prior_dim, channels, 1)
        self.film = nn.Conv2d(prior_dim, 2 * channels, 1)
        nn.init.zeros_(self.film.weight)
        nn.init.zeros_(self.film.bias)
        self.norm = LayerNorm2d(channels, ln_bias)
        self.q = nn.Conv2d(channels, channels, 3, padding=1, groups=channels, bias=False)
        self.kv = nn.Conv2d(channels, channels * 2, 1, bias=False)
        self.kv_dw = nn.Conv2d(channels * 2, channels * 2, 3, padding=1, groups=channels * 2, bias=False)
        self.temperature = nn.Parameter(torch.ones(heads))
        self.proj = nn.Conv2d(channels, channels, 1, bias=False)

    def forward(self, x: torch.Tensor, prior: torch.Tensor, box: Box | torch.Tensor) -> torch.Tensor:
        """The injected features, for features ``x`` covering ``box`` of the image the prior belongs to (one box,
        or a (B, 4) tensor of one box per sample: ``sample_prior``)."""
        # Project on the small prior map, then sample: cheaper than sampling P channels at every pixel.
        projected = torch.cat([self.align(prior), self.film(prior)], dim=1)
        aligned, scale, shift = sample_prior(projected, box, x.shape[-2:]).to(x.dtype).chunk(3, dim=1)
        q = self.q(aligned)
        k, v = self.kv_dw(self.kv(self.norm(x))).chunk(2, dim=1)
        out = transposed_attention(
            to_heads(q, self.heads), to_heads(k, self.heads), to_heads(v, self.heads), self.temperature
        )
        return x + (1 + scale) * self.proj(from_heads(out, *x.shape[-2:])) + shift
