"""A routed stage: C parameter-independent experts, each a whole stack of transformer blocks.

Three ways to run a stage (§3.2):

* ``soft`` (stage 1): ``sum_j p_j * E_j(x)``. Per sample, only the argmax expert's output carries
  gradients; the other experts run without autograd, so their outputs count in the sum but no
  gradient reaches their parameters (or, through them, earlier layers). The router learns through p.
* ``hard`` (stage 2 and inference) and ``manual`` (routes from the caller): each sample goes through
  one expert. Samples that chose the same expert are gathered so every expert runs once, on its group.
"""

from __future__ import annotations

import torch
from torch import nn

from slerir_core.model.blocks import TransformerBlock


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

    def forward(self, x: torch.Tensor, routes: torch.Tensor, probs: torch.Tensor | None = None) -> torch.Tensor:
        """Run the stage.

        Args:
            x: (B, ch, H, W) features.
            routes: (B,) expert index per sample (the argmax of ``probs`` in soft mode).
            probs: (B, C) expert probabilities for soft routing; ``None`` runs one expert a sample.
        """
        if probs is None:
            return self._hard(x, routes)
        return self._soft(x, routes, probs)

    def _hard(self, x: torch.Tensor, routes: torch.Tensor) -> torch.Tensor:
        if bool((routes == routes[0]).all()):
            return self.experts[int(routes[0])](x)
        out = None
        for j in routes.unique().tolist():
            idx = (routes == j).nonzero().squeeze(1)
            y = self.experts[j](x.index_select(0, idx))
            out = (y.new_zeros(x.shape[0], *y.shape[1:]) if out is None else out).index_copy(0, idx, y)
        return out

    def _soft(self, x: torch.Tensor, routes: torch.Tensor, probs: torch.Tensor) -> torch.Tensor:
        out = 0.0
        for j, expert in enumerate(self.experts):
            chosen = routes == j
            y = x.new_zeros(x.shape)
            if not chosen.all():
                idx = (~chosen).nonzero().squeeze(1)
                with torch.no_grad():
                    detached = expert(x.index_select(0, idx))
                y = y.index_copy(0, idx, detached.to(y.dtype))
            if chosen.any():
                idx = chosen.nonzero().squeeze(1)
                y = y.index_copy(0, idx, expert(x.index_select(0, idx)).to(y.dtype))
            out = out + probs[:, j, None, None, None].to(y.dtype) * y
        return out
