"""Images, a call recorder and a generator runner shared by the tests of the Restorer, its planning, its lazy path
and adaptation."""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from slerir_core.model import SLERIR


def smooth_rgb(size: int = 96, noise: float = 0.03) -> np.ndarray:
    """A smooth colour image with a little noise, float32 in [0, 1]: seams would stand out on it."""
    yy, xx = np.mgrid[0:size, 0:size] / size
    image = np.stack([0.5 + 0.3 * np.sin(6 * xx + 2 * yy), 0.5 + 0.3 * np.cos(5 * yy), 0.2 + 0.6 * xx * yy], -1)
    image = image + np.random.default_rng(0).normal(0, noise, image.shape)
    return np.clip(image, 0, 1).astype(np.float32)


def noisy_image(side: int = 128, sigma: float = 0.08, seed: int = 0) -> np.ndarray:
    """A smooth grey picture with independent Gaussian noise, float32 in [0, 1]."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:side, :side] / side
    clean = 0.5 + 0.3 * np.sin(6 * xx) * np.cos(4 * yy)
    return np.clip(clean + rng.normal(0, sigma, clean.shape), 0, 1).astype(np.float32)


def smooth_picture(side: int, seed: int) -> torch.Tensor:
    """(side, side) float64: a random smooth picture within [0.2, 0.8]."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(1, 1, 6, 6, generator=g, dtype=torch.float64)
    return 0.2 + 0.6 * F.interpolate(coarse, size=(side, side), mode="bicubic", align_corners=True)[0, 0].clamp(0, 1)


def u16(shape: tuple[int, ...]) -> np.ndarray:
    """Random uint16 values in a narrow band of the range, as microscopy data has."""
    return np.random.default_rng(3).integers(500, 4000, shape).astype(np.uint16)


def drain(steps: Generator[Any, None, Any]) -> tuple[list[Any], Any]:
    """Run a generator to its end: what it yielded, and what it returned."""
    yielded = []
    while True:
        try:
            yielded.append(next(steps))
        except StopIteration as stop:
            return yielded, stop.value


class Spy:
    """Records the calls of a model method while still running it."""

    def __init__(self, monkeypatch, model: SLERIR, name: str) -> None:
        self.calls: list[tuple] = []
        original = getattr(model, name)

        def spy(*args, **kwargs):
            self.calls.append((args, kwargs))
            return original(*args, **kwargs)

        monkeypatch.setattr(model, name, spy)
