"""The user's noise model: fitted to one noisy image, and drawn anew on other images."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from restoring import smooth_picture

from slerir_core.adaptation.noise_model import NoiseModel, fit_noise_model
from slerir_core.errors import ImageError


def test_the_noise_model_is_fitted_per_image_and_skips_saturated_levels():
    rng = np.random.default_rng(0)
    clean = np.concatenate([smooth_picture(128, s).numpy() for s in range(2)], axis=1)
    ramp = np.linspace(0.0, 1.3, clean.shape[1])[None, :] * np.ones_like(clean)  # beyond 1: saturated
    for picture, gain, floor in ((clean, 0.0, 0.02**2), (clean, 0.03, 0.01**2), (ramp, 0.03, 0.01**2)):
        noisy = picture + rng.normal(0, 1, picture.shape) * np.sqrt(gain * picture + floor)
        plane = torch.from_numpy(np.clip(noisy, 0, 1)).float()[None, None].expand(1, 3, -1, -1)
        fitted = fit_noise_model(plane)
        levels = torch.tensor([0.3, 0.6])
        expected = gain * levels + floor
        assert torch.allclose(fitted.variance(levels), expected, rtol=0.15)


def test_an_image_that_is_all_saturated_or_black_has_no_noise_model():
    plane = torch.zeros(1, 3, 64, 64)
    plane[..., :, 32:] = 1.0
    with pytest.raises(ImageError, match="blind-spot"):
        fit_noise_model(plane)


@pytest.mark.parametrize(("gain", "floor"), [(0.05, 0.01**2), (0.0, 0.03**2), (0.02, 0.0)])
def test_drawn_noise_has_the_models_variance_at_each_intensity_and_is_what_the_fit_measures(gain, floor):
    g = torch.Generator().manual_seed(0)
    levels = torch.tensor([0.1, 0.3, 0.6])
    flat = levels[:, None, None, None].expand(-1, 3, 96, 96).contiguous()
    noisy = NoiseModel(gain, floor).draw(flat, g)
    assert torch.equal(noisy[:, 1:], noisy[:, :1].expand(-1, 2, -1, -1))  # grey crops: one draw, repeated
    assert torch.allclose(noisy[:, 0].mean(dim=(1, 2)), levels, atol=0.005)
    assert torch.allclose(noisy[:, 0].var(dim=(1, 2)), gain * levels + floor, rtol=0.1)
    if gain and not floor:  # photons alone: values on the grid of one photon's gain
        assert torch.allclose(noisy[:, 0] / gain, (noisy[:, 0] / gain).round(), atol=1e-4)
    picture = smooth_picture(192, 3).float()[None, None].expand(1, 3, -1, -1)
    fitted = fit_noise_model(NoiseModel(gain, floor).draw(picture, g))
    assert torch.allclose(fitted.variance(levels[1:]), gain * levels[1:] + floor, rtol=0.2, atol=2e-5)


def test_drawn_noise_is_independent_across_colour_channels_and_clipped_as_the_input_is():
    g = torch.Generator().manual_seed(1)
    colour = torch.rand(4, 3, 64, 64, generator=g) * torch.tensor([1.0, 0.8, 0.6])[:, None, None]
    noise = NoiseModel(0.02, 0.02**2).draw(colour, g) - colour
    r = torch.corrcoef(noise.permute(1, 0, 2, 3).reshape(3, -1))
    assert (r - torch.eye(3)).abs().max() < 0.05
    dark = NoiseModel(0.05, 0.05**2).draw(torch.zeros(1, 3, 32, 32), g)
    bright = NoiseModel(0.05, 0.05**2).draw(torch.ones(1, 3, 32, 32), g)
    assert dark.min() == 0.0 and bright.max() == 1.0 and (dark == 0).float().mean() > 0.3
