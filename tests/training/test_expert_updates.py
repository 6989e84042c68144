"""Optimiser steps that leave the experts no sample chose as they were, decided without host reads."""

from __future__ import annotations

import copy

import pytest
import torch
from sync_guard import forbid_host_syncs

from slerir_core.model.experts import RoutedStage, make_expert
from training.expert_updates import ExpertUpdates


def routed_net() -> torch.nn.Module:
    """Two routed stages of three experts each, around a plain convolution that every route trains."""
    torch.manual_seed(0)
    return torch.nn.Sequential(
        RoutedStage([make_expert(8, 2, 1, 2.0, False, True) for _ in range(3)]),
        torch.nn.Conv2d(8, 8, 1),
        RoutedStage([make_expert(8, 2, 1, 2.0, False, True) for _ in range(3)]),
    )


def forward(net: torch.nn.Module, x: torch.Tensor, routes: tuple[list[int], list[int]]) -> torch.Tensor:
    first, conv, second = net
    h = conv(first(x, torch.tensor(routes[0])))
    return second(h, torch.tensor(routes[1])).square().mean()


def adam(net: torch.nn.Module) -> torch.optim.Adam:
    return torch.optim.Adam(net.parameters(), lr=1e-2, weight_decay=1e-2, fused=True)


def snapshot(net: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, torch.Tensor]:
    out = {}
    for name, p in net.named_parameters():
        out[name] = p.detach().clone()
        for key, value in optimizer.state.get(p, {}).items():
            out[f"{name}:{key}"] = value.clone()
    return out


def expert_of(name: str) -> tuple[int, int] | None:
    """(stage, expert) of a parameter name of ``routed_net``, None outside the experts."""
    parts = name.split(".")
    return (int(parts[0]) // 2, int(parts[2])) if parts[1] == "experts" else None


def test_untrained_experts_keep_parameters_and_optimiser_state_trained_ones_step_as_usual():
    """Against the reference of a step whose untrained experts have no gradient at all (which Adam skips)."""
    reference = routed_net()
    guarded = copy.deepcopy(reference)
    reference_opt, guarded_opt = adam(reference), adam(guarded)
    updates = ExpertUpdates(guarded, guarded_opt)
    x = torch.randn(4, 8, 6, 5)
    # Step 1: expert 2 of the first stage and expert 0 of the second are chosen by no sample.
    # Step 2: first-stage expert 1 is left out as well; first-stage expert 2 takes its first step.
    for routes in (([0, 1, 0, 1], [1, 2, 2, 1]), ([0, 2, 0, 2], [1, 1, 2, 2])):
        for model, opt in ((reference, reference_opt), (guarded, guarded_opt)):
            opt.zero_grad(set_to_none=True)
            forward(model, x, routes).backward()
        for name, p in reference.named_parameters():
            where = expert_of(name)
            if where is not None and where[1] not in routes[where[0]]:
                p.grad = None
        reference_opt.step()
        with forbid_host_syncs():
            updates.step()
        want, got = snapshot(reference, reference_opt), snapshot(guarded, guarded_opt)
        for name, value in got.items():
            if name in want:
                assert torch.equal(value, want[name]), name
            else:  # an expert that never stepped: its state is the fresh one the optimiser made
                assert not value.any(), name
    # What the guard is for: a plain step moves an expert no sample chose (zero gradient plus weight decay).
    plain = routed_net()
    initial = plain[0].experts[2][0].ffn.dw.weight.detach().clone()
    plain_opt = adam(plain)
    forward(plain, x, ([0, 1, 0, 1], [1, 2, 2, 1])).backward()
    plain_opt.step()
    assert not torch.equal(plain[0].experts[2][0].ffn.dw.weight, initial)


def test_flags_come_from_the_last_forward_and_must_exist():
    net = routed_net()
    updates = ExpertUpdates(net, adam(net))
    with pytest.raises(RuntimeError, match="no forward with autograd"):
        updates.step()
    forward(net, torch.randn(2, 8, 4, 4), ([2, 2], [0, 1])).backward()
    assert updates.trained_experts().tolist() == [False, False, True, True, True, False]
