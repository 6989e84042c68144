"""Stein's unbiased risk estimate as an adaptation loss: the estimate and the adaptation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from restoring import smooth_picture

from slerir_core.adaptation import AdaptSettings
from slerir_core.adaptation.noise_model import NoiseModel
from slerir_core.adaptation.sure import sure_case
from slerir_core.config import load_config
from slerir_core.model import SLERIR
from slerir_core.restore import Restorer


def box_blur(x: torch.Tensor) -> torch.Tensor:
    """A 3×3 mean, channel by channel: a denoiser whose divergence is known (1/9 at every pixel)."""
    return F.avg_pool2d(F.pad(x, (1, 1, 1, 1), mode="reflect"), 3, stride=1)


@pytest.mark.parametrize("grey", [True, False])
def test_sure_is_the_true_error_of_a_restoration_without_clean_images(grey):
    torch.manual_seed(0)
    clean = torch.stack([smooth_picture(48, s) for s in range(8)])[:, None].float()
    tint = torch.tensor([1.0, 0.9, 0.8])[:, None, None]
    clean = clean.expand(-1, 3, -1, -1) if grey else clean.repeat(1, 3, 1, 1) * tint
    sigma = 0.05
    noise = torch.randn(clean.shape[0], 1 if grey else 3, 48, 48) * sigma
    noisy = clean + noise.expand_as(clean)
    for restore in (box_blur, lambda x: x):
        true = float((restore(noisy) - clean)[:, : 1 if grey else 3].square().mean())
        estimate = float(sure_case(noisy, torch.Generator().manual_seed(1), NoiseModel(0.0, sigma**2))(restore))
        assert abs(estimate - true) < 0.05 * sigma**2  # within the spread of one draw of this many pixels
        wrong = float(sure_case(noisy, torch.Generator().manual_seed(1), NoiseModel(0.0, 2 * sigma**2))(restore))
        assert abs(wrong - true) > 0.5 * sigma**2  # the noise model matters: a wrong one gives a wrong estimate


def test_adapting_with_sure_lowers_its_held_out_estimate_and_records_the_loss():
    torch.manual_seed(0)
    restorer = Restorer(SLERIR(load_config("tiny")), device="cpu", weights="tiny.safetensors")
    rng = np.random.default_rng(0)
    images = [np.clip(smooth_picture(128, s).numpy() + rng.normal(0, 0.06, (128, 128)), 0, 1) for s in range(2)]
    adapted, result = restorer.adapt(images, max_steps=12, eval_every=4, batch=2, loss="sure", lr=1e-3)
    assert result.loss == "sure" and result.metadata("start")["adapted_loss"] == "sure"
    assert min(loss for _, loss in result.curve[1:]) < result.curve[0][1]
    pairs = zip(adapted.model.parameters(), restorer.model.parameters(), strict=True)
    assert any(not torch.equal(a, b) for a, b in pairs)
    with pytest.raises(ValueError, match="unknown adaptation loss"):
        AdaptSettings(loss="noise2noise")
