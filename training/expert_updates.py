"""Optimiser steps that leave the experts no sample trained as they were, decided on the device.

Every sample reads its expert's weights by index from the stage's stacked parameters
(``slerir_core.model.experts``), so all experts of a stage take part in a step's graph: the experts no sample
chose get a zero gradient rather than none. Adam would still move them (its moments decay into a step), and
which experts those are is known only on the device; reading it back would make the host wait every step.
``ExpertUpdates.step`` runs the optimiser as usual, then puts back, along each stack's expert axis, the
parameters and optimiser moments of those experts as they were before it, with a few multi-tensor ops per
stage and no host read.

An expert's parameters share one stacked tensor with the other experts of its stage, and so one step count:
an expert that sat out some steps has the moments of one that did not step, but, when it learns again, the
bias correction of the steps its stage took. With Adam's betas that differs only in a run's first few
thousand steps, and only for an expert no sample of a batch chose.
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
        self.stacks = [[p for p in stage.parameters() if id(p) in optimised] for stage in self.stages]
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
        """``optimizer.step()``, then the untrained experts' parameters and moments put back as they were.

        Args:
            trained: ``trained_experts()``, reduced over ranks; the last forward's flags by default.
        """
        flags = (self.trained_experts() if trained is None else trained).float()
        keep_old = (1 - flags).split([stage.num_experts for stage in self.stages])
        before = [t for group in self._groups() for t in group]
        if [t.shape for t in self._saved] != [t.shape for t in before]:
            self._saved = [torch.empty_like(t) for t in before]
        torch._foreach_copy_(self._saved, before)
        self.optimizer.step()
        # An optimiser's first step creates its state: before that step the state was, in effect, zero.
        copies = {id(t): saved for t, saved in zip(before, self._saved, strict=True)}
        groups = self._groups()
        olds = [[copies[id(t)] if id(t) in copies else torch.zeros_like(t) for t in group] for group in groups]
        for new, old, weight in zip(groups, olds, keep_old, strict=True):
            if new:  # new + keep_old * (old - new), expert by expert along each stack's first axis
                torch._foreach_lerp_(new, old, [weight.view(-1, *(1,) * (t.dim() - 1)) for t in new])
        self._saved = [t for group in olds for t in group]  # scratch for the next step

    def _groups(self) -> list[list[torch.Tensor]]:
        """Per stage: its stacked parameters, each followed by its optimiser moments (in key order)."""
        return [self._tensors(params) for params in self.stacks]

    def _tensors(self, params: list[nn.Parameter]) -> list[torch.Tensor]:
        out = []
        for p in params:
            state = self.optimizer.state.get(p, {})
            out += [p, *(state[k] for k in sorted(state) if isinstance(state[k], torch.Tensor) and state[k].dim() > 0)]
        return out
