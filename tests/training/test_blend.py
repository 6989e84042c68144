"""Weight blends: the line between two weights files of one model, with the routing sphere kept."""

from __future__ import annotations

import json

import pytest
import torch

from slerir_core.checkpoint import load_model, read_metadata, save_weights
from slerir_core.config import load_config
from slerir_core.errors import WeightsError
from slerir_core.model import SLERIR
from training.blend import blend_state, blend_weights, main
from training.model_card import training_record
from training.state import load_init


@pytest.fixture
def tiny_config(tiny_config):
    """The tiny config with two tasks, so that it holds task prototypes."""
    return load_config({**tiny_config.to_dict(), "tasks": ["noise", "rain"]})


def _pair(tiny_config) -> tuple[SLERIR, SLERIR]:
    """Two models of one config whose every tensor differs, with unit centres and prototypes."""
    torch.manual_seed(1)
    a, b = SLERIR(tiny_config), SLERIR(tiny_config)
    with torch.no_grad():
        for t in b.state_dict().values():
            if t.is_floating_point():
                t.add_(torch.randn_like(t))
        for m in (a, b):
            m.task_prototypes.copy_(torch.nn.functional.normalize(torch.randn_like(m.task_prototypes), dim=-1))
            m.router.centres.copy_(torch.nn.functional.normalize(torch.randn_like(m.router.centres), dim=-1))
        b.router.bank_pos.fill_(3)
    return a, b


def test_ends_are_the_two_states_and_the_middle_is_their_mean(tiny_config):
    a, b = _pair(tiny_config)
    sa, sb = a.state_dict(), b.state_dict()
    for alpha, want in ((0.0, sa), (1.0, sb)):
        got = blend_state(sa, sb, alpha)
        for name in ("stages.enc1.experts.0.0.attn.temperature", "router.mlp.0.weight"):
            torch.testing.assert_close(got[name], want[name])
    half = blend_state(sa, sb, 0.5)
    name = "router.mlp.0.weight"
    torch.testing.assert_close(half[name], (sa[name] + sb[name]) / 2)


def test_routing_sphere_is_kept_and_the_bank_is_the_continuations(tiny_config):
    a, b = _pair(tiny_config)
    half = blend_state(a.state_dict(), b.state_dict(), 0.5)
    for name in ("router.centres", "task_prototypes"):
        norms = half[name].norm(dim=-1)
        torch.testing.assert_close(norms, torch.ones_like(norms))
        assert not torch.allclose(half[name], b.state_dict()[name])
    assert int(half["router.bank_pos"]) == 3
    torch.testing.assert_close(half["router.bank"], b.state_dict()["router.bank"])


@pytest.mark.parametrize("alpha", [-0.1, 1.5])
def test_alpha_outside_the_segment_is_refused(tiny_config, alpha):
    a, b = _pair(tiny_config)
    with pytest.raises(ValueError, match="alpha must be in"):
        blend_state(a.state_dict(), b.state_dict(), alpha)


def test_file_blend_restores_between_its_ends_and_records_the_blend(tiny_config, tmp_path):
    a, b = _pair(tiny_config)
    base = save_weights(a, tmp_path / "a.safetensors", history=json.dumps({"steps": 100, "hours": {"cpu": 1.0}}))
    tuned = save_weights(b, tmp_path / "b.safetensors", history=json.dumps({"steps": 300, "hours": {"cpu": 2.0}}))
    out = blend_weights(base, tuned, 0.25, tmp_path / "mix.safetensors")
    history = json.loads(read_metadata(out)["history"])
    assert history["steps"] == 300 and history["blend"] == {"alpha": 0.25, "base_steps": 100}
    assert any(
        "weight blend | 0.25 × these weights + 0.75 × the weights of step 100 they continued" in line
        for line in training_record(read_metadata(out))
    )
    mixed = load_model(out).state_dict()["router.mlp.2.bias"]
    want = 0.75 * a.state_dict()["router.mlp.2.bias"] + 0.25 * b.state_dict()["router.mlp.2.bias"]
    torch.testing.assert_close(mixed, want)
    continued = load_init(SLERIR(tiny_config), out)
    assert "blend" not in continued and continued["steps"] == 300


def test_weights_of_another_config_are_refused_and_nothing_is_written(tiny_config, tmp_path, capsys):
    a, _ = _pair(tiny_config)
    other = SLERIR(load_config({**tiny_config.to_dict(), "routing_dim": tiny_config.routing_dim * 2}))
    pa, pb = save_weights(a, tmp_path / "a.safetensors"), save_weights(other, tmp_path / "b.safetensors")
    with pytest.raises(WeightsError, match="different model configs"):
        blend_weights(pa, pb, 0.5, tmp_path / "mix.safetensors")
    with pytest.raises(SystemExit, match=r"error: .*different model configs"):
        main([str(pa), str(pb), "--alpha", "0.5", "--out", str(tmp_path / "mix.safetensors")])
    assert not (tmp_path / "mix.safetensors").exists()
