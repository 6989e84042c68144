"""Noisy grey pictures planned with their noise spread over the channels (``slerir_core.grey_noise``)."""

from __future__ import annotations

import numpy as np
import pytest
from restoring import smooth_rgb

from slerir_core.grey_noise import SPREAD_ABOVE, grey_noise_sigma, spread_grey_noise
from slerir_core.restore import Restorer
from training.datasets import held_out_clean_images


def test_spreading_makes_a_grey_pictures_noise_independent_in_each_channel():
    rng = np.random.default_rng(7)
    sigma = 0.08
    clean = smooth_rgb(256, noise=0.0)[..., :1].astype(np.float32)
    noisy = clean + rng.normal(0, sigma, clean.shape).astype(np.float32)
    spread = spread_grey_noise(noisy, sigma)
    assert spread.shape == (256, 256, 3)
    np.testing.assert_allclose(spread.mean(axis=-1, keepdims=True), noisy, atol=1e-6)
    covariance = np.cov((spread - clean).reshape(-1, 3).T)  # as a colour sample's: σ√3 in each, uncorrelated
    np.testing.assert_allclose(covariance, 3 * sigma**2 * np.eye(3), atol=0.05 * 3 * sigma**2)
    assert np.array_equal(spread, spread_grey_noise(noisy, sigma))  # one image, one plan


def test_only_noise_above_the_threshold_is_spread():
    clean = smooth_rgb(128, noise=0.0)[..., :1].astype(np.float32)
    noisy = clean + np.random.default_rng(0).normal(0, 0.1, clean.shape).astype(np.float32)
    assert grey_noise_sigma(clean) is None
    assert grey_noise_sigma(noisy) == pytest.approx(0.1, rel=0.15)
    faint = clean + np.random.default_rng(0).normal(0, SPREAD_ABOVE / 3, clean.shape).astype(np.float32)
    assert grey_noise_sigma(faint) is None


def enlarging_below(restorer: Restorer) -> int:
    """The side under which a view's prior crops are enlarged to the degradation extractor's input."""
    return restorer.config.crop_grid * min(restorer.model.degradation_extractor.image_size)


def test_a_strip_planned_on_a_reduced_view_is_spread_with_the_noise_of_its_full_resolution_pixels(restorer):
    clean = np.full((2200, enlarging_below(restorer) - 8), 0.5, np.float32)  # planned on a view of 3-pixel averages
    noisy = clean + np.random.default_rng(1).normal(0, 0.05, clean.shape).astype(np.float32)
    assert restorer.plan(noisy).grey_sigma == pytest.approx(0.05, rel=0.1)  # not the view's σ/√3


def test_a_grey_picture_whose_prior_crops_are_not_enlarged_is_planned_as_it_is(restorer):
    side = enlarging_below(restorer)
    noisy = 0.5 + np.random.default_rng(2).normal(0, 0.1, (side, side)).astype(np.float32)
    assert restorer.plan(noisy).grey_sigma is None
    assert restorer.plan(noisy[: side - 8]).grey_sigma == pytest.approx(0.1, rel=0.15)


@pytest.fixture(scope="module")
def shipped() -> Restorer:
    return Restorer.from_pretrained(device="cpu")


def psnr(image: np.ndarray, clean: np.ndarray) -> float:
    return float(10 * np.log10(1 / np.mean((np.clip(image, 0, 1) - clean) ** 2)))


def test_the_shipped_model_restores_noisy_grey_pictures_better_planned_with_the_noise_spread(shipped):
    clean = held_out_clean_images(2, 96)[1][1].mean(axis=-1).astype(np.float32)
    noisy = np.clip(clean + np.random.default_rng(3).normal(0, 25 / 255, clean.shape), 0, 1).astype(np.float32)
    plans = []
    spread = shipped.restore(noisy, on_plan=lambda _, plan: plans.append(plan))
    as_is = shipped.restore(noisy, spread_grey_noise=False, on_plan=lambda _, plan: plans.append(plan))
    assert plans[0].grey_sigma == pytest.approx(25 / 255, rel=0.15) and plans[1].grey_sigma is None
    assert psnr(spread, clean) > psnr(as_is, clean) + 2 > psnr(noisy, clean) + 2


def test_colour_pictures_and_clean_grey_ones_are_restored_as_before(shipped):
    colour = smooth_rgb(96, noise=0.1).astype(np.float32)
    clean_grey = smooth_rgb(96, noise=0.0)[..., 0].astype(np.float32)
    plans = []
    for image, channels in ((colour, "rgb"), (clean_grey, "auto")):
        spread = shipped.restore(image, channels=channels, on_plan=lambda _, plan: plans.append(plan))
        assert plans[-1].grey_sigma is None
        assert np.array_equal(spread, shipped.restore(image, channels=channels, spread_grey_noise=False))
