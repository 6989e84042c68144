"""A routed stage: C parameter-independent experts, each a whole stack of transformer blocks.

Three ways to run a stage (§3.2):

* ``soft`` (stage 1): ``sum_j p_j * E_j(x)``. With ``gradients="argmax"`` (§4.1, the default) only
  each sample's argmax expert carries gradients; the other experts run without autograd, so their
  outputs count in the sum but no gradient reaches their parameters (or, through them, earlier layers).
  With ``gradients="all"`` (§3.2's reading) every expert learns from every sample in proportion to p.
  The router learns through p either way. Experts whose probability for a sample is below ``skip_below``
  do not run for it (the term they would add is that small), which is most of them once routing is sure.
* ``hard`` (stage 2 and inference) and ``manual`` (routes from the caller): each sample goes through
  one expert. Samples that chose the same expert are gathered so every expert runs once, on its group.
  On a GPU at inference, a batch with mixed routes instead runs all its samples together, each reading
  its own expert's weights by index (``grouped_forward``): one launch per op instead of one per expert.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from kernels import routed_depthwise3x3, routed_pointwise, transposed_attention
from slerir_core.model.blocks import LayerNorm2d, TransformerBlock, from_heads, to_heads


def make_expert(channels: int, heads: int, blocks: int, ffn_factor: float, bias: bool, ln_bias: bool) -> nn.Module:
    """One expert: ``blocks`` Restormer transformer blocks in sequence."""
    return nn.Sequential(*(TransformerBlock(channels, heads, ffn_factor, bias, ln_bias) for _ in range(blocks)))


class RoutedStage(nn.Module):
    """C experts of identical shape; which one runs is decided per sample.

    Args:
        experts: the expert modules, all mapping (B, ch, H, W) to the same shape.
    """

    def __init__(self, experts: list[nn.Module]) -> None:
        super().__init__()
        self.experts = nn.ModuleList(experts)

    def forward(
        self,
        x: torch.Tensor,
        routes: torch.Tensor,
        probs: torch.Tensor | None = None,
        gradients: str = "argmax",
        skip_below: float = 0.0,
    ) -> torch.Tensor:
        """Run the stage.

        Args:
            x: (B, ch, H, W) features.
            routes: (B,) expert index per sample (the argmax of ``probs`` in soft mode).
            probs: (B, C) expert probabilities for soft routing; ``None`` runs one expert a sample.
            gradients: soft routing only: ``argmax`` (only the chosen expert learns) or ``all``.
            skip_below: soft routing only: an unchosen expert whose probability is below this does not run.
        """
        if probs is None:
            return self._hard(x, routes)
        return self._soft(x, routes, probs, gradients == "all", skip_below)

    def _hard(self, x: torch.Tensor, routes: torch.Tensor) -> torch.Tensor:
        if bool((routes == routes[0]).all()):
            return self.experts[int(routes[0])](x)
        # Grouped launches only at inference: in training, experts no sample chose must get no gradient
        # at all (not a zero one, which Adam would still turn into a step).
        if x.is_cuda and not torch.is_grad_enabled():
            return grouped_forward(self.experts, x, routes)
        out = None
        for j in routes.unique().tolist():
            idx = (routes == j).nonzero().squeeze(1)
            y = self.experts[j](x.index_select(0, idx))
            out = (y.new_zeros(x.shape[0], *y.shape[1:]) if out is None else out).index_copy(0, idx, y)
        return out

    def _soft(
        self, x: torch.Tensor, routes: torch.Tensor, probs: torch.Tensor, all_learn: bool, skip_below: float
    ) -> torch.Tensor:
        out = 0.0
        for j, expert in enumerate(self.experts):
            chosen = routes == j
            used = chosen | (probs[:, j] >= skip_below)
            if not bool(used.any()):  # its term would be zero: no map to allocate, scale and add (or differentiate)
                continue
            learning = used if all_learn else chosen
            y = x.new_zeros(x.shape)
            if bool((used & ~learning).any()):
                idx = (used & ~learning).nonzero().squeeze(1)
                with torch.no_grad():
                    detached = expert(x.index_select(0, idx))
                y = y.index_copy(0, idx, detached.to(y.dtype))
            if bool(learning.any()):
                idx = learning.nonzero().squeeze(1)
                y = y.index_copy(0, idx, expert(x.index_select(0, idx)).to(y.dtype))
            out = out + probs[:, j, None, None, None].to(y.dtype) * y
        return out


def grouped_forward(experts: nn.ModuleList, x: torch.Tensor, routes: torch.Tensor) -> torch.Tensor:
    """Run a batch through per-sample experts at once: sample b uses ``experts[routes[b]]``.

    Every projection, depthwise convolution, normalisation and attention is one call over the whole
    batch, with each sample reading its expert's weights by index (the routed kernels on a GPU). The
    result equals running each group of samples through its expert.

    Args:
        experts: identical-shape expert stacks (``make_expert``).
        x: (B, C, H, W) features.
        routes: (B,) expert index per sample.
    """
    for depth in range(len(experts[0])):
        x = _grouped_block([expert[depth] for expert in experts], x, routes)
    return x


def _stacked(modules: list[nn.Module], name: str) -> torch.Tensor | None:
    tensors = [getattr(m, name) for m in modules]
    return None if tensors[0] is None else torch.stack(tensors)


def _grouped_norm(norms: list[LayerNorm2d], x: torch.Tensor, routes: torch.Tensor) -> torch.Tensor:
    weight = _stacked(norms, "weight")[routes][:, :, None, None]
    bias = _stacked(norms, "bias")
    if bias is None:
        return x * torch.rsqrt(x.var(dim=1, keepdim=True, unbiased=False) + 1e-5) * weight
    normed = F.layer_norm(x.permute(0, 2, 3, 1), x.shape[1:2], eps=1e-5).permute(0, 3, 1, 2)
    return normed * weight + bias[routes][:, :, None, None]


def _grouped_conv(convs: list[nn.Conv2d], x: torch.Tensor, routes: torch.Tensor) -> torch.Tensor:
    weight, bias = _stacked(convs, "weight"), _stacked(convs, "bias")
    if convs[0].groups > 1:
        return routed_depthwise3x3(x, weight, routes, bias)
    return routed_pointwise(x, weight, routes, bias)


def _grouped_block(blocks: list[TransformerBlock], x: torch.Tensor, routes: torch.Tensor) -> torch.Tensor:
    attn = [b.attn for b in blocks]
    h = _grouped_norm([b.norm1 for b in blocks], x, routes)
    qkv = _grouped_conv([a.qkv for a in attn], h, routes)
    q, k, v = _grouped_conv([a.qkv_dw for a in attn], qkv, routes).chunk(3, dim=1)
    heads = attn[0].heads
    temperature = _stacked(attn, "temperature")[routes]
    out = transposed_attention(to_heads(q, heads), to_heads(k, heads), to_heads(v, heads), temperature)
    x = x + _grouped_conv([a.proj for a in attn], from_heads(out, *x.shape[-2:]), routes)
    ffn = [b.ffn for b in blocks]
    h = _grouped_norm([b.norm2 for b in blocks], x, routes)
    hidden = _grouped_conv([f.project_in for f in ffn], h, routes)
    a, g = _grouped_conv([f.dw for f in ffn], hidden, routes).chunk(2, dim=1)
    return x + _grouped_conv([f.project_out for f in ffn], F.gelu(a) * g, routes)
