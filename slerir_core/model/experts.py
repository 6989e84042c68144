"""A routed stage: C parameter-independent experts, each a whole stack of transformer blocks.

Three ways to run a stage (§3.2):

* ``soft`` (training phase 1): ``sum_j p_j * E_j(x)``. With ``gradients="argmax"`` (§4.1, the default) only
  each sample's argmax expert carries gradients; the other experts' outputs count in the sum but are
  detached, so no gradient reaches their parameters (or, through them, earlier layers). With
  ``gradients="all"`` (§3.2's reading) every expert learns from every sample in proportion to p. The
  router learns through p either way.
* ``hard`` (phase 2 and inference) and ``manual`` (routes from the caller): each sample goes through
  one expert.

Every sample reads its own expert's weights by index (``grouped_forward``): one call per op over the whole
batch, on the routed kernels on a GPU and their PyTorch twins elsewhere. Nothing is read back to the host and
every shape is fixed by the batch, whatever the routes: a GPU never waits for the host to learn how many
samples chose an expert, and no new convolution shape appears when the mix of routes changes. A batch of
one runs plain convolutions with its expert's gathered weights, the ops and memory layouts of the expert's
own modules: at 512² on a 2-core CPU the batched products of the grouped ops took 1.5x to 2x longer.

Soft routing on a CPU with ``skip_below > 0`` is the one exception: there an unchosen expert whose
probability for a sample is below ``skip_below`` does not run for it, which needs the shapes of the samples
that remain (host reads, free on a CPU). Once routing is sure that skips most of the mix (1.16x to 1.25x
faster training on a 2-core CPU); on other devices every expert runs on every sample.

In training, experts that no sample's gradient reaches get a zero gradient, not none: ``trained_experts``
says which experts learnt in the last forward, so that the optimiser can leave the others as they were
(``training.expert_updates``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from kernels import routed_depthwise3x3, routed_pointwise, transposed_attention
from slerir_core.model.blocks import TransformerBlock, from_heads, to_heads

ExpertWeights = dict[str, torch.Tensor]
"""Each parameter of C experts stacked along a new first axis, by its name in one expert (``stack_experts``)."""


def make_expert(channels: int, heads: int, blocks: int, ffn_factor: float, bias: bool, ln_bias: bool) -> nn.Module:
    """One expert: ``blocks`` Restormer transformer blocks in sequence."""
    return nn.Sequential(*(TransformerBlock(channels, heads, ffn_factor, bias, ln_bias) for _ in range(blocks)))


class RoutedStage(nn.Module):
    """C experts of identical shape; which one runs is decided per sample.

    Args:
        experts: the expert modules, all mapping (B, ch, H, W) to the same shape.

    Attributes:
        trained_experts: (C,) bool on the features' device, after a forward with autograd on: the experts
            whose parameters that forward gave gradients (nonzero ones or, for the others, zeros).
    """

    def __init__(self, experts: list[nn.Module]) -> None:
        super().__init__()
        self.experts = nn.ModuleList(experts)
        self.trained_experts: torch.Tensor | None = None

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
            skip_below: soft routing on a CPU only: an unchosen expert whose probability is below this does
                not run.
        """
        everyone = probs is not None and gradients == "all"
        if probs is not None and skip_below > 0 and x.device.type == "cpu":
            return self._soft_skipping(x, routes, probs, everyone, skip_below)
        if torch.is_grad_enabled():
            chosen = routes[:, None] == torch.arange(len(self.experts), device=routes.device)
            self.trained_experts = chosen.any(dim=0) | everyone
        if probs is None:
            return grouped_forward(self.experts, x, routes)
        if everyone:
            return sum(probs[:, j, None, None, None].to(x.dtype) * expert(x) for j, expert in enumerate(self.experts))
        return self._soft_argmax(x, routes, probs)

    def _soft_argmax(self, x: torch.Tensor, routes: torch.Tensor, probs: torch.Tensor) -> torch.Tensor:
        """Each sample's chosen expert with autograd, then the others, shifted round by one expert at a time,
        without: C grouped passes over the whole batch, whatever the routes."""
        count = len(self.experts)
        weights = stack_experts(self.experts)
        shifted = (routes[:, None] + torch.arange(count, device=routes.device)) % count  # (B, C), chosen first
        mix = probs.gather(1, shifted).to(x.dtype)[:, :, None, None, None]
        out = mix[:, 0] * grouped_forward(self.experts, x, routes, weights)
        for k in range(1, count):
            with torch.no_grad():
                detached = grouped_forward(self.experts, x, shifted[:, k], weights)
            out = out + mix[:, k] * detached
        return out

    def _soft_skipping(
        self, x: torch.Tensor, routes: torch.Tensor, probs: torch.Tensor, everyone: bool, skip_below: float
    ) -> torch.Tensor:
        """Expert by expert, on the samples that need it: host reads decide the sub-batches."""
        out = 0.0
        learnt = []
        for j, expert in enumerate(self.experts):
            chosen = routes == j
            used = chosen | (probs[:, j] >= skip_below)
            learnt.append(used.any() if everyone else chosen.any())
            if not bool(used.any()):  # its term would be zero: no map to allocate, scale and add (or differentiate)
                continue
            learning = used if everyone else chosen
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
        if torch.is_grad_enabled():
            self.trained_experts = torch.stack(learnt)
        return out


def stack_experts(experts: nn.ModuleList) -> ExpertWeights:
    """Stack every parameter of identical-shape experts along a new first axis, by its name in one expert.

    Done once per stage and forward: the soft mix reads the stack C times.
    """
    named = [dict(expert.named_parameters()) for expert in experts]
    return {name: torch.stack([n[name] for n in named]) for name in named[0]}


def grouped_forward(
    experts: nn.ModuleList, x: torch.Tensor, routes: torch.Tensor, weights: ExpertWeights | None = None
) -> torch.Tensor:
    """Run a batch through per-sample experts at once: sample b uses ``experts[routes[b]]``.

    Every projection, depthwise convolution, normalisation and attention is one call over the whole
    batch, with each sample reading its expert's weights by index (the routed kernels on a GPU). The result
    equals running each group of samples through its expert; no value is read back to the host.

    Args:
        experts: identical-shape expert stacks (``make_expert``).
        x: (B, C, H, W) features.
        routes: (B,) expert index per sample.
        weights: ``stack_experts(experts)``, when the caller reuses it; stacked here otherwise.
    """
    weights = stack_experts(experts) if weights is None else weights
    for depth, block in enumerate(experts[0]):
        x = _grouped_block(block, weights, f"{depth}.", x, routes)
    return x


def _grouped_block(
    block: TransformerBlock, weights: ExpertWeights, prefix: str, x: torch.Tensor, routes: torch.Tensor
) -> torch.Tensor:
    """One transformer block over a batch of mixed routes; ``block`` (any expert's) gives the shapes."""

    def w(name: str) -> torch.Tensor | None:
        stacked = weights.get(prefix + name)
        return None if stacked is None else stacked[routes]

    def per_pixel(name: str) -> torch.Tensor:
        return w(name).view(*routes.shape, -1, 1, 1)

    def norm(name: str, h: torch.Tensor) -> torch.Tensor:
        if getattr(block, name).bias is None:
            return h * torch.rsqrt(h.var(dim=1, keepdim=True, unbiased=False) + 1e-5) * per_pixel(f"{name}.weight")
        normed = F.layer_norm(h.permute(0, 2, 3, 1), h.shape[1:2], eps=1e-5).permute(0, 3, 1, 2)
        return torch.addcmul(per_pixel(f"{name}.bias"), normed, per_pixel(f"{name}.weight"))

    # A batch of one takes plain convolutions with its expert's weights: they keep the channels_last maps
    # oneDNN runs fastest, which the batched products of the routed ops copy to NCHW.
    single = x.shape[0] == 1

    def conv(name: str, h: torch.Tensor, rows: slice | None = None) -> torch.Tensor:
        weight, bias = weights[f"{prefix}{name}.weight"], weights.get(f"{prefix}{name}.bias")
        if rows is not None:
            weight, bias = weight[:, rows], None if bias is None else bias[:, rows]
        depthwise = weight.shape[-1] == 3
        if single:
            own = weight.index_select(0, routes)[0]
            own_bias = None if bias is None else bias.index_select(0, routes)[0]
            return F.conv2d(h, own, own_bias, padding=1 if depthwise else 0, groups=h.shape[1] if depthwise else 1)
        return (routed_depthwise3x3 if depthwise else routed_pointwise)(h, weight, routes, bias)

    heads = block.attn.heads
    q, k, v = conv("attn.qkv_dw", conv("attn.qkv", norm("norm1", x))).chunk(3, dim=1)
    out = transposed_attention(to_heads(q, heads), to_heads(k, heads), to_heads(v, heads), w("attn.temperature"))
    x = x + conv("attn.proj", from_heads(out, *x.shape[-2:]))
    h = norm("norm2", x)
    if single:  # in halves, as GDFN does: GELU and the product ran 2.6x slower on the halves of one map
        hidden = block.ffn.project_out.in_channels
        a, g = (conv("ffn.dw", conv("ffn.project_in", h, rows), rows) for rows in (slice(hidden), slice(hidden, None)))
    else:
        a, g = conv("ffn.dw", conv("ffn.project_in", h)).chunk(2, dim=1)
    return x + conv("ffn.project_out", F.gelu(a) * g)
