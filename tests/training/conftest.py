"""Fixtures of the training tests: a miniature real-data folder in the PromptIR layout."""

from __future__ import annotations

import numpy as np
import pytest
from skimage import io


def _write(path, value: int, size=(24, 20)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    io.imsave(str(path), np.full((*size, 3), value, dtype=np.uint8), check_contrast=False)


@pytest.fixture
def promptir_root(tmp_path):
    """A miniature PromptIR layout; a degraded image is its clean partner's value + 5."""
    t = tmp_path / "Train"
    for i in range(3):
        _write(t / "Denoise" / f"bsd{i}.png", 100 + i)
        _write(t / "Derain" / "rainy" / f"rain-{i + 1}.png", 10 * i + 5)
        _write(t / "Derain" / "gt" / f"norain-{i + 1}.png", 10 * i)
        _write(t / "Dehaze" / "synthetic" / "part1" / f"{i:04d}_0.8_0.2.png", 50 + 10 * i + 5)
        _write(t / "Dehaze" / "original" / f"{i:04d}.png", 50 + 10 * i)
        _write(t / "Lowlight" / "input" / f"{i}.png", 150 + 10 * i + 5)
        _write(t / "Lowlight" / "target" / f"{i}.png", 150 + 10 * i)
    s = tmp_path / "Test"
    _write(s / "denoise" / "bsd68" / "a.png", 120, (40, 36))
    _write(s / "derain" / "Rain100L" / "input" / "1.png", 25, (40, 36))
    _write(s / "derain" / "Rain100L" / "target" / "1.png", 20, (40, 36))
    return tmp_path
