"""Every shipped config is built and run: each model config trains end to end, each training config loads."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from slerir_core.config import list_configs, load_config
from slerir_core.model import SLERIR
from training.config import list_experiments, load_experiment

SLOW_MODEL_CONFIGS = {"paper"}  # two ViT-B/32 extractors: minutes on a CPU


@pytest.mark.parametrize(
    "name", [pytest.param(n, marks=pytest.mark.slow) if n in SLOW_MODEL_CONFIGS else n for n in list_configs()]
)
def test_model_config_trains_end_to_end(name):
    # Every expert and the router learn from every sample here, so that one step reaches every parameter.
    config = dataclasses.replace(load_config(name), soft_gradients="all", soft_skip=0.0, tasks=("noise", "rain"))
    torch.manual_seed(0)
    model = SLERIR(config).train()
    model.routing = "soft"
    x = torch.rand(2, 3, 32, 32)
    restored, info = model(x)
    assert restored.shape == x.shape and torch.isfinite(restored).all()
    (restored - x).abs().mean().add(info["embeddings"].sum() * 0).backward()
    trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
    missing = sorted(n for n, p in trainable.items() if p.grad is None or not torch.isfinite(p.grad).all())
    assert not missing, f"{len(missing)} of {len(trainable)} parameters got no finite gradient: {missing[:6]}"


@pytest.mark.parametrize("name", list_experiments())
def test_training_config_loads(name):
    exp = load_experiment(name)
    assert exp.model.tasks == exp.data.tasks
    assert exp.train.phase_config(1).batch_size >= 1 and exp.model.name in list_configs()
