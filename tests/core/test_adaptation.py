"""Adaptation to a user's noisy images: the blind-spot loss, what adapting trains, its safeguards, ``slerir adapt``."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
import torch
from restoring import noisy_image

from slerir_core.adaptation import AdaptSettings, adapt_model
from slerir_core.adaptation.adapt import LEARNING_RATES
from slerir_core.adaptation.blind_spot import WINDOW, blind_spot_input, blind_spot_loss, hidden_mask
from slerir_core.checkpoint import load_model, read_metadata, save_weights
from slerir_core.cli import main as cli
from slerir_core.config import load_config
from slerir_core.errors import ImageError
from slerir_core.model import SLERIR
from slerir_core.restore import Restorer

QUICK = {"max_steps": 12, "eval_every": 4, "batch": 2, "minutes": 5.0}


@pytest.fixture
def restorer() -> Restorer:
    torch.manual_seed(0)
    return Restorer(SLERIR(load_config("tiny")), device="cpu", weights="tiny.safetensors")


def test_the_network_input_never_holds_a_hidden_pixels_value():
    """No path from a hidden pixel's value to the input, at that pixel or at any other; visible pixels unchanged;
    each hidden pixel gets the value of a visible pixel of its window."""
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 20, 24, requires_grad=True)
    hidden = hidden_mask((2, 3, 20, 24), g, share=0.3)
    out = blind_spot_input(x, hidden, g)
    (grad,) = torch.autograd.grad(out.sum(), x)
    assert not grad[hidden.expand_as(x)].any()
    assert torch.equal(out[~hidden.expand_as(x)], x[~hidden.expand_as(x)])
    b, y, i = [int(v) for v in hidden.nonzero()[0][[0, 2, 3]]]
    r = WINDOW // 2
    window = x[b, :, max(0, y - r) : y + r + 1, max(0, i - r) : i + r + 1].reshape(3, -1)
    assert (window == out[b, :, y, i, None]).all(dim=0).any() or hidden[b, 0].sum() > 0.5 * hidden[b, 0].numel()


def test_the_loss_scores_the_hidden_pixels_only():
    g = torch.Generator().manual_seed(1)
    noisy, predicted = torch.rand(2, 3, 16, 16), torch.rand(2, 3, 16, 16)
    hidden = hidden_mask((2, 3, 16, 16), g, share=0.1)
    changed = torch.where(hidden, predicted, torch.rand_like(predicted))
    assert blind_spot_loss(changed, noisy, hidden) == blind_spot_loss(predicted, noisy, hidden)
    assert blind_spot_loss(noisy, noisy, hidden) == 0


@pytest.mark.parametrize("loss", ["pseudo-clean", "blind-spot"])
def test_adaptation_lowers_the_held_out_loss_and_trains_only_the_path_experts(restorer, loss):
    before = {k: v.clone() for k, v in restorer.model.state_dict().items()}
    adapted, result = restorer.adapt([noisy_image(), noisy_image(seed=1)], loss=loss, **QUICK)
    assert restorer.model.state_dict().keys() == before.keys()
    assert all(torch.equal(v, before[k]) for k, v in restorer.model.state_dict().items())  # the original is kept
    assert result.steps == 12 and result.stopped == "steps" and [s for s, _ in result.curve] == [0, 4, 8, 12]
    assert min(loss for _, loss in result.curve[1:]) < result.curve[0][1] and result.best_step > 0
    changed = {k for k, v in adapted.model.state_dict().items() if not torch.equal(v, before[k])}
    on_path = {f"stages.{stage}.experts.{j}." for stage, j in zip(adapted.model.stages, result.path, strict=True)}
    assert changed and all(any(k.startswith(prefix) for prefix in on_path) for k in changed)
    assert all(any(k.startswith(prefix) for k in changed) for prefix in on_path)  # every stage of the path learnt
    assert "adapted" in adapted.describe()


def test_each_loss_has_its_learning_rate_unless_one_is_given():
    settings = AdaptSettings()
    assert settings.learning_rate("pseudo-clean") == LEARNING_RATES["pseudo-clean"] != LEARNING_RATES["blind-spot"]
    assert settings.learning_rate("blind-spot") == LEARNING_RATES["blind-spot"]
    assert AdaptSettings(lr=1e-3).learning_rate("blind-spot") == 1e-3


def test_auto_adapts_with_pseudo_clean_pairs_or_the_blind_spot_loss_where_the_noise_cannot_be_measured(restorer):
    _, result = restorer.adapt([noisy_image()], **QUICK)
    assert result.loss == "pseudo-clean"
    # A dark field with one bright square: the noise of the background is mostly clipped at black.
    dark = np.zeros((128, 128), np.float32)
    dark[40:60, 40:60] = 0.5
    dark = np.clip(dark + np.random.default_rng(0).normal(0, 0.05, dark.shape), 0, 1).astype(np.float32)
    _, result = restorer.adapt([dark], **QUICK)
    assert result.loss == "blind-spot" and result.steps == QUICK["max_steps"]
    with pytest.raises(ImageError, match="--loss blind-spot"):
        restorer.adapt([dark], loss="pseudo-clean", **QUICK)


def test_cancelling_keeps_the_starting_weights(restorer):
    adapted, result = restorer.adapt([noisy_image()], cancelled=lambda: True, **QUICK)
    assert result.stopped == "cancelled" and result.steps == 0
    assert all(torch.equal(a, b) for a, b in zip(adapted.model.parameters(), restorer.model.parameters(), strict=True))


@pytest.mark.parametrize(
    ("image", "message"),
    [
        (noisy_image(side=48), "too small"),
        (np.full((128, 128), 0.3, np.float32), "constant"),
        (noisy_image(sigma=0.0), "no pixel noise"),
        (np.where(np.eye(128, dtype=bool), np.nan, noisy_image()).astype(np.float32), "NaN|finite"),
    ],
)
def test_unusable_images_are_refused_with_the_reason(restorer, image, message):
    with pytest.raises((ImageError, ValueError), match=message):
        adapt_model(restorer, [image], AdaptSettings(**QUICK))


def test_stacks_and_channels_adapt_plane_by_plane(restorer):
    stack = np.stack([noisy_image(seed=s) for s in range(3)])  # (Z, Y, X)
    two_channels = (np.stack([noisy_image(seed=4), noisy_image(seed=5)], axis=-1) * 65535).astype(np.uint16)
    _, result = restorer.adapt([stack, two_channels], axes=["ZYX", "YXC"], **QUICK)
    assert result.steps == 12


def test_slerir_adapt_writes_a_weights_file_restore_reads(restorer, tmp_path, capsys):
    weights = save_weights(restorer.model, tmp_path / "start.safetensors")
    tifffile.imwrite(tmp_path / "noisy.tif", (noisy_image() * 255).astype(np.uint8))
    out = tmp_path / "adapted.safetensors"
    args = [str(tmp_path / "noisy.tif"), "-o", str(out), "--weights", str(weights), "--device", "cpu"]
    assert cli(["adapt", *args, "--minutes", "0.05"]) == 0
    meta = read_metadata(out)
    assert meta["adapted_from"] == str(weights) and len(meta["adapted_data_sha256"]) == 64
    assert len(meta["adapted_path"].split("-")) == 8 and int(meta["adapted_steps"]) >= 0
    assert meta["adapted_curve"].startswith("0:") and meta["adapted_loss"] == "pseudo-clean"
    load_model(out)
    assert cli(["restore", str(tmp_path / "noisy.tif"), "--out", str(tmp_path / "r"), "--weights", str(out)]) == 0
    # Never over an existing file without --overwrite, never over the weights it came from.
    stamp = out.read_bytes()
    assert cli(["adapt", *args]) == 2 and out.read_bytes() == stamp
    assert "--overwrite" in capsys.readouterr().err
    args[2] = str(weights)
    assert cli(["adapt", *args, "--overwrite"]) == 2
    assert "adapted from" in capsys.readouterr().err


def test_an_interrupted_adapt_writes_no_file(restorer, tmp_path, monkeypatch):
    tifffile.imwrite(tmp_path / "noisy.tif", (noisy_image() * 255).astype(np.uint8))

    def interrupted(*_args, **_kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(Restorer, "adapt", interrupted)
    out = tmp_path / "adapted.safetensors"
    assert cli(["adapt", str(tmp_path / "noisy.tif"), "-o", str(out), "--config", "tiny", "--device", "cpu"]) == 130
    assert not out.exists() and list(tmp_path.iterdir()) == [tmp_path / "noisy.tif"]
