"""Optimiser steps that leave the experts no sample trained as they were, decided on the device.

Every sample reads its expert's weights by index (``slerir_core.model.experts``), so all experts of a stage
take part in a step's graph: the experts no sample chose get a zero gradient rather than none. Adam would
still move them (its moments decay into a step, and its step count advances the bias correction), and
which experts those are is known only on the device; reading it back would make the host wait every step.
``ExpertUpdates.step`` runs the optimiser as usual, then puts the parameters and optimiser states of those
experts back as they were before it, with a few multi-tensor ops per expert and no host read.
"""

from __future__ import annotations

import torch
from torch import nn

from slerir_core.model.experts import RoutedStage


class ExpertUpdates:
    """Wraps an optimiser's step so that an expert no sample trained takes no step.

    The optimiser's state must live on the parameters' device (``fused=True`` or ``capturable=True`` Adam;
    any optimiser on the CPU), since the flags that choose between old and new values do.

    Args:
        model: the network; its ``RoutedStage`` modules say, after each forward with autograd, which experts
            learnt (``RoutedStage.trained_experts``).
        optimizer: the optimiser over (some of) the network's parameters.
    """

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
        self.optimizer = optimizer
        self.stages = [m for m in model.modules() if isinstance(m, RoutedStage)]
        optimised = {id(p) for group in optimizer.param_groups for p in group["params"]}
        self.experts = [
            [p for p in expert.parameters() if id(p) in optimised] for stage in self.stages for expert in stage.experts
        ]
        self._saved: list[torch.Tensor] = []

    def trained_experts(self) -> torch.Tensor:
        """(stages x C,) bool: the experts the last forward trained, stage by stage, on the device.

        With several ranks, reduce it (logical or: ``all_reduce`` with ``MAX``) and pass it to ``step``: an
        expert one rank trained has a gradient on every rank.
        """
        if any(stage.trained_experts is None for stage in self.stages):
            raise RuntimeError("no forward with autograd has run: nothing says which experts learnt")
        return torch.cat([stage.trained_experts for stage in self.stages])

    @torch.no_grad()
    def step(self, trained: torch.Tensor | None = None) -> None:
        """``optimizer.step()``, then the untrained experts' parameters and states put back as they were.

        Args:
            trained: ``trained_experts()``, reduced over ranks; the last forward's flags by default.
        """
        keep_new = (self.trained_experts() if trained is None else trained).float()
        keep_old = 1 - keep_new
        before = [t for group in self._groups() for t in group]
        if [t.shape for t in self._saved] != [t.shape for t in before]:
            self._saved = [torch.empty_like(t) for t in before]
        torch._foreach_copy_(self._saved, before)
        self.optimizer.step()
        # An optimiser's first step creates its state: before that step the state was, in effect, zero.
        copies = {id(t): saved for t, saved in zip(before, self._saved, strict=True)}
        groups = self._groups()
        olds = [[copies[id(t)] if id(t) in copies else torch.zeros_like(t) for t in group] for group in groups]
        for expert, (new, old) in enumerate(zip(groups, olds, strict=True)):
            if new:
                torch._foreach_mul_(new, keep_new[expert])
                torch._foreach_mul_(old, keep_old[expert])
                torch._foreach_add_(new, old)
        self._saved = [t for group in olds for t in group]  # scratch for the next step

    def _groups(self) -> list[list[torch.Tensor]]:
        """Per expert: its parameters, each followed by its optimiser state tensors (in key order)."""
        return [self._tensors(params) for params in self.experts]

    def _tensors(self, params: list[nn.Parameter]) -> list[torch.Tensor]:
        out = []
        for p in params:
            state = self.optimizer.state.get(p, {})
            out += [p, *(state[key] for key in sorted(state) if isinstance(state[key], torch.Tensor))]
        return out
