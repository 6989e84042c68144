"""A whole training step without host reads, and the recorded step's eager path."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from sync_guard import HostSyncError, forbid_host_syncs

from slerir_core.config import load_config
from slerir_core.model import SLERIR
from training.capture import CapturedStep
from training.config import PhaseConfig
from training.expert_updates import ExpertUpdates
from training.phase import build_optimizer, configure_phase, routing_targets
from training.runtime import Runtime
from training.step import TrainStep, move_routing_state

TASKS = 5


def make_step(phase: int, device: str = "cpu") -> TrainStep:
    torch.manual_seed(0)
    cfg = dataclasses.replace(load_config("tiny"), tasks=("noise", "rain", "haze", "blur", "lowlight"), route_alpha=1.0)
    model = SLERIR(cfg).to(device)
    configure_phase(model, phase)
    capturable = device == "cuda"
    optimizer = build_optimizer(model, (0.9, 0.999), 0.0, PhaseConfig(batch_size=10, steps=10, lr=1e-3), capturable)
    rt = Runtime(device=torch.device(device))
    groups = torch.arange(TASKS, device=device)
    return TrainStep(model, model, ExpertUpdates(model, optimizer), phase, rt, False, groups, 1.0)


def batch(seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    clean = torch.rand(2 * TASKS, 3, 32, 32, generator=g)
    degraded = (clean + 0.1 * torch.randn(clean.shape, generator=g)).clamp(0, 1)
    return degraded, clean, torch.arange(2 * TASKS) % TASKS


@pytest.mark.parametrize("phase", [1, 2])
def test_a_training_step_reads_nothing_back_to_the_host(phase):
    """Forward, losses, backward, gradient clipping, the optimiser (with its untrained-expert guard) and, in
    phase 1, the centre and prototype update: every op of them could run on a GPU without a host wait."""
    step = make_step(phase)
    model = step.model
    rt = step.rt
    generator = torch.Generator().manual_seed(0)
    out = step(batch(0))  # the first step creates the optimiser state; routing targets come from prototypes
    if phase == 1:
        move_routing_state(model, out["embeddings"], batch(0)[2], None, generator, 0.9, rt)
        step.route_targets, fixed = routing_targets(model, None, list(range(TASKS)))
        assert fixed  # every task had a prototype after one batch holding them all
    with forbid_host_syncs():
        out = step(batch(1))
        if phase == 1:
            move_routing_state(model, out["embeddings"], batch(1)[2], step.route_targets, generator, 0.9, rt)
    expected = {"loss", "l1", "hc", "route", "embeddings"} if phase == 1 else {"loss", "l1"}
    assert set(out) == expected
    assert torch.isfinite(out["loss"]) and out["loss"].requires_grad is False


def test_the_guard_would_see_a_host_read_in_a_step():
    """The test above can fail: a step that reads its loss back is caught."""
    step = make_step(2)
    step(batch(0))
    with pytest.raises(HostSyncError), forbid_host_syncs():
        float(step(batch(1))["loss"])


def test_the_recorded_step_runs_eagerly_off_cuda_and_equals_the_plain_step():
    plain, wrapped = make_step(2), make_step(2)
    captured = CapturedStep(wrapped, capture=True)
    for seed in range(3):
        expected, got = plain(batch(seed)), captured(batch(seed))
        torch.testing.assert_close(got["loss"], expected["loss"], rtol=0, atol=0)
    assert not captured.captured
    for a, b in zip(plain.model.parameters(), wrapped.model.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_a_replayed_step_trains_as_the_eager_one():
    """On CUDA the step is recorded after its warm-up and replayed; the parameters follow the eager run."""
    device = torch.device("cuda")
    eager, replayed = make_step(2, "cuda"), make_step(2, "cuda")
    captured = CapturedStep(replayed, capture=True, warmup=2)
    for seed in range(5):
        cuda_batch = tuple(t.to(device) for t in batch(seed))
        eager(cuda_batch)
        captured(cuda_batch)
    assert captured.captured
    for a, b in zip(eager.model.parameters(), replayed.model.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
