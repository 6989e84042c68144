"""What ``Restorer.restore`` gives back: robust scaling against hot and dead pixels, float results of [0, 1]
input within [0, 1], the input's own type."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from restoring import smooth_rgb

from slerir_core.restore import Restorer

HOT = ((30, 40, 65535), (90, 100, 60000), (10, 10, 0), (70, 20, 0), (64, 64, 0))
"""(row, column, value): two hot pixels as sCMOS and CCD cameras show them, and dead ones."""


def camera_image() -> tuple[np.ndarray, np.ndarray]:
    """A 128² 16-bit camera picture: offset 100, gain 100 counts a photon, up to 20 photons; clean and noisy."""
    y, x = np.mgrid[0:128, 0:128] / 128
    clean = 100 + 2000 * (0.5 + 0.5 * np.sin(6 * x) * np.cos(4 * y))
    noisy = 100 + 100 * np.random.default_rng(0).poisson((clean - 100) / 100)
    return clean, noisy.astype(np.uint16)


def psnr(image: np.ndarray, clean: np.ndarray, mask: np.ndarray) -> float:
    error = np.mean((image.astype(np.float64)[mask] - clean[mask]) ** 2)
    return float(10 * np.log10(2000**2 / error))


@pytest.fixture(scope="module")
def shipped() -> Restorer:
    return Restorer.from_pretrained(device="cpu")


def test_hot_and_dead_pixels_do_not_spoil_a_16_bit_restoration(shipped):
    clean, noisy = camera_image()
    spotted = noisy.copy()
    rows, cols, values = zip(*HOT, strict=True)
    spotted[rows, cols] = values
    others = np.ones(clean.shape, bool)
    others[rows, cols] = False
    before = psnr(noisy, clean, others)
    without = psnr(shipped.restore(noisy), clean, others)
    described: list[str] = []
    restored = shipped.restore(spotted, on_scaling=described.append)
    assert described == ["percentile 1-99.8: 100.2-3000"]
    # It restores, and the hot pixels take nothing off that.
    assert psnr(restored, clean, others) > before + 6
    assert psnr(restored, clean, others) > without - 0.3
    # The hot pixels stay hot and the dead ones dark: what lay beyond the range is kept, not restored away.
    assert restored[30, 40] > 60000 and restored[90, 100] > 55000
    assert all(restored[r, c] < clean[r, c] - 150 for r, c, value in HOT if value == 0)
    # The minimum and maximum squeeze the signal into the bottom 3 % of the range: the damage seen before.
    assert psnr(shipped.restore(spotted, scaling="minmax"), clean, others) < before


def test_float_results_of_input_in_0_to_1_stay_in_0_to_1(restorer):
    picture = smooth_rgb(48, noise=0.2).astype(np.float32)
    picture[:8] = 1.0  # a saturated band, where an untrained model's residual overshoots
    picture[-8:] = 0.0
    out = restorer.restore(picture, channels="rgb")
    assert out.dtype == np.float32 and out.min() >= 0.0 and out.max() <= 1.0
    assert out.min() == 0.0 or out.max() == 1.0  # the model's output reached beyond and was clipped


@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32, torch.int16])
def test_a_torch_tensor_gives_a_tensor_of_its_dtype_back(restorer, dtype):
    image = (torch.rand(24, 24) * 200).to(dtype)
    out = restorer.restore(image, tile=0)
    assert isinstance(out, torch.Tensor) and out.dtype == dtype and out.device.type == "cpu"
    assert out.shape == image.shape
    assert np.array_equal(out.numpy(), restorer.restore(image.numpy(), tile=0))


def test_the_scaling_option_is_checked_and_reported(restorer):
    with pytest.raises(ValueError, match=r"scaling must be one of \('percentile', 'minmax'\), not 'auto'"):
        restorer.restore(np.zeros((16, 16), np.uint16), scaling="auto")
    described: list[str] = []
    restorer.restore(np.arange(256, dtype=np.uint16).reshape(16, 16), scaling="minmax", on_scaling=described.append)
    restorer.restore(np.zeros((16, 16), np.uint8), on_scaling=described.append)
    assert described == ["minmax: 0-255", "uint8 0-255"]
