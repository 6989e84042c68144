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
    """Every parameter and optimiser moment by name (``name:exp_avg``); fresh zeros for a state not made yet."""
    out = {}
    for name, p in net.named_parameters():
        out[name] = p.detach().clone()
        for key in ("exp_avg", "exp_avg_sq"):
            out[f"{name}:{key}"] = optimizer.state[p][key].clone() if p in optimizer.state else torch.zeros_like(p)
    return out


def test_untrained_experts_keep_parameters_and_moments_trained_ones_step_as_usual():
    """Each step against a plain step from the same state: along each stack's expert axis, a trained
    expert's parameters and moments are the plain step's, an untrained one's are those before the step."""
    net = routed_net()
    optimizer = adam(net)
    updates = ExpertUpdates(net, optimizer)
    x = torch.randn(4, 8, 6, 5)
    # Step 1: expert 2 of the first stage and expert 0 of the second are chosen by no sample.
    # Step 2: first-stage expert 1 is left out as well; first-stage expert 2 takes its first step.
    for routes in (([0, 1, 0, 1], [1, 2, 2, 1]), ([0, 2, 0, 2], [1, 1, 2, 2])):
        optimizer.zero_grad(set_to_none=True)
        forward(net, x, routes).backward()
        plain = copy.deepcopy(net)
        plain_opt = adam(plain)
        plain_opt.load_state_dict(copy.deepcopy(optimizer.state_dict()))  # loading keeps the step tensors
        for p, q in zip(net.parameters(), plain.parameters(), strict=True):
            q.grad = p.grad.clone()
        before = snapshot(net, optimizer)
        plain_opt.step()
        with forbid_host_syncs():
            updates.step()
        want, got = snapshot(plain, plain_opt), snapshot(net, optimizer)
        for name, value in got.items():
            if name.split(".")[0] not in ("0", "2"):
                assert torch.equal(value, want[name]), name
                continue
            chosen = routes[int(name[0]) // 2]
            for j in range(3):
                assert torch.equal(value[j], (want if j in chosen else before)[name][j]), (name, j)
    # What the guard is for: a plain step moves an expert no sample chose (zero gradient plus weight decay).
    plain = routed_net()
    initial = plain[0].stacked[0].ffn.dw.weight[2].detach().clone()
    plain_opt = adam(plain)
    forward(plain, x, ([0, 1, 0, 1], [1, 2, 2, 1])).backward()
    plain_opt.step()
    assert not torch.equal(plain[0].stacked[0].ffn.dw.weight[2], initial)


def test_flags_come_from_the_last_forward_and_must_exist():
    net = routed_net()
    updates = ExpertUpdates(net, adam(net))
    with pytest.raises(RuntimeError, match="no forward with autograd"):
        updates.step()
    forward(net, torch.randn(2, 8, 4, 4), ([2, 2], [0, 1])).backward()
    assert updates.trained_experts().tolist() == [False, False, True, True, True, False]
