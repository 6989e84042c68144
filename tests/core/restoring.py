"""Images and a call recorder shared by the tests of the Restorer, its planning and its lazy path."""

from __future__ import annotations

import numpy as np

from slerir_core.model import SLERIR


def smooth_rgb(size: int = 96, noise: float = 0.03) -> np.ndarray:
    """A smooth colour image with a little noise, float32 in [0, 1]: seams would stand out on it."""
    yy, xx = np.mgrid[0:size, 0:size] / size
    image = np.stack([0.5 + 0.3 * np.sin(6 * xx + 2 * yy), 0.5 + 0.3 * np.cos(5 * yy), 0.2 + 0.6 * xx * yy], -1)
    image = image + np.random.default_rng(0).normal(0, noise, image.shape)
    return np.clip(image, 0, 1).astype(np.float32)


def u16(shape: tuple[int, ...]) -> np.ndarray:
    """Random uint16 values in a narrow band of the range, as microscopy data has."""
    return np.random.default_rng(3).integers(500, 4000, shape).astype(np.uint16)


class Spy:
    """Records the calls of a model method while still running it."""

    def __init__(self, monkeypatch, model: SLERIR, name: str) -> None:
        self.calls: list[tuple] = []
        original = getattr(model, name)

        def spy(*args, **kwargs):
            self.calls.append((args, kwargs))
            return original(*args, **kwargs)

        monkeypatch.setattr(model, name, spy)
