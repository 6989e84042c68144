"""The training phases: what each trains, the learning-rate schedule, the task prototypes and the routing
targets of phase 1."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from slerir_core.model import SLERIR
from training.config import PhaseConfig, load_experiment, with_overrides
from training.datasets import StreamSampler, build_train_dataset
from training.phase import (
    build_optimizer,
    build_scheduler,
    configure_phase,
    refit_prototypes,
    route_paths,
    routing_targets,
    set_train_mode,
    update_prototypes,
)
from training.runtime import Runtime


@pytest.fixture(scope="module")
def exp():
    return load_experiment("tiny-synthetic")


def frozen_names(model: SLERIR) -> set[str]:
    return {name for name, p in model.named_parameters() if not p.requires_grad}


def test_phase_two_freezes_the_routing_parts_and_routes_hard(exp):
    model = SLERIR(exp.model)
    configure_phase(model, 1)
    assert model.routing == "soft" and not frozen_names(model) and model.training
    configure_phase(model, 2)
    prefixes = ("degradation_extractor.", "content_extractor.", "router.")
    assert model.routing == "hard" and frozen_names(model)
    assert frozen_names(model) == {n for n, _ in model.named_parameters() if n.startswith(prefixes)}
    optimizer = build_optimizer(model, (0.9, 0.999), 0.0, exp.train.phase2)
    optimised = {id(p) for group in optimizer.param_groups for p in group["params"]}
    assert optimised == {id(p) for p in model.parameters() if p.requires_grad}
    model.eval()
    set_train_mode(model, 2)  # after a validation: training mode, the frozen parts still in eval mode
    assert model.training and not any(m.training for m in model.routing_modules())
    set_train_mode(model, 1)
    assert all(m.training for m in model.modules())


def test_the_schedule_warms_up_then_decays_to_its_floor():
    phase = PhaseConfig(batch_size=1, steps=10, lr=1.0, min_lr=0.1, warmup_steps=2)
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([param], lr=phase.lr)
    scheduler = build_scheduler(optimizer, 10, phase)
    lrs = []
    for _ in range(12):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert lrs[:3] == pytest.approx([0.5, 1.0, 1.0])
    assert lrs[6] == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 4 / 8)))
    assert all(a > b for a, b in itertools.pairwise(lrs[2:11]))
    assert lrs[10:] == pytest.approx([0.1, 0.1])


def test_prototypes_are_an_ema_of_task_means():
    protos = torch.zeros(3, 2, 4)
    f = F.normalize(torch.randn(6, 2, 4), dim=-1)
    labels = torch.tensor([0, 0, 1, 1, 0, 1])
    update_prototypes(protos, f, labels, momentum=0.5)
    expected = F.normalize(f[labels == 0].mean(0), dim=-1)
    assert torch.allclose(protos[0], expected, atol=1e-6)
    assert torch.equal(protos[2], torch.zeros(2, 4))  # task 2 unseen: untouched
    update_prototypes(protos, f[:1], labels[:1], momentum=0.5)
    blended = F.normalize(0.5 * expected + 0.5 * f[0], dim=-1)
    assert torch.allclose(protos[0], blended, atol=1e-6)


def test_refit_sets_the_prototypes_to_the_task_means_of_fresh_batches(exp):
    torch.manual_seed(0)
    model = SLERIR(exp.model)
    dataset = build_train_dataset(exp.data, exp.train.seed)
    sampler = StreamSampler(10, exp.train.steps_per_epoch)
    refit_prototypes(model, dataset, sampler, 40, 0, Runtime())
    assert not model.task_prototypes.any()  # no batches: left as it was
    refit_prototypes(model, dataset, sampler, 40, 1, Runtime())
    items = [dataset[i] for i in sampler.batch(40)]
    x = torch.stack([d for d, _, _ in items])
    labels = torch.tensor([lab for _, _, lab in items])
    with torch.no_grad():
        f, _ = model.router(model.degradation_embedding(x))
    for task in range(len(exp.data.tasks)):
        expected = F.normalize(f[labels == task].sum(0), dim=-1)
        assert torch.allclose(model.task_prototypes[task], expected, atol=1e-5)


def test_routing_targets_are_fixed_once_every_task_is_seen(exp):
    exp = with_overrides(exp, **{"data.route_groups": [["noise", "blur"]]})
    groups = exp.data.route_group_index()
    model = SLERIR(exp.model)
    centres = model.router.centres  # (K, C, d): task t starts next to expert t % 3 at every stage
    model.task_prototypes.copy_(centres[:, torch.arange(5) % 3].transpose(0, 1))
    model.task_prototypes[4] = 0  # low light not seen yet: nothing is fixed
    targets, fixed = routing_targets(model, None, groups)
    assert bool((targets[4] == -1).all()) and not fixed
    model.task_prototypes[4] = centres[:, 1]
    targets, fixed = routing_targets(model, None, groups)
    assert fixed and torch.equal(targets[0], targets[3])  # noise and blur: one path
    assert len({tuple(path) for path in targets.tolist()}) == 4
    # The prototypes move on (every task next to another expert); fixed targets stay, though a fresh
    # assignment would now differ.
    model.task_prototypes.copy_(centres[:, (torch.arange(5) + 1) % 3].transpose(0, 1))
    kept, still_fixed = routing_targets(model, targets, groups)
    assert kept is targets and still_fixed
    assert not torch.equal(routing_targets(model, None, groups)[0], targets)


def test_route_paths_name_each_tasks_target_path():
    assert route_paths(["noise", "rain"], torch.tensor([[0, 2, 1], [1, 1, 1]])) == {"noise": "0-2-1", "rain": "1-1-1"}
    assert route_paths(["noise"], None) == {}
