"""Helpers shared by the generators: input checks, clipping, parameter sampling, convolution."""

from __future__ import annotations

import numpy as np
from scipy.signal import fftconvolve


def check_image(clean: np.ndarray) -> np.ndarray:
    """Validate an H×W×C (C = 1 or 3) floating image and return it as float32 clipped to [0, 1].

    Raises:
        TypeError: not a floating-point numpy array (a uint8 image here is almost always a scaling bug).
        ValueError: wrong number of dimensions or channels.
    """
    if not isinstance(clean, np.ndarray) or not np.issubdtype(clean.dtype, np.floating):
        got = clean.dtype if isinstance(clean, np.ndarray) else type(clean).__name__
        raise TypeError(f"expected a floating-point numpy array in [0, 1], got {got}")
    if clean.ndim != 3 or clean.shape[-1] not in (1, 3):
        raise ValueError(f"expected an H×W×C image with C = 1 or 3, got shape {clean.shape}")
    return clean.astype(np.float32).clip(0.0, 1.0)


def finish(image: np.ndarray) -> np.ndarray:
    """Clip to [0, 1] as float32, the contract every generator returns."""
    return np.clip(image, 0.0, 1.0).astype(np.float32, copy=False)


def draw(value: float | None, low: float, high: float, rng: np.random.Generator) -> float:
    """``value`` if given, else a uniform draw from [low, high]."""
    return float(rng.uniform(low, high)) if value is None else float(value)


def draw_log(value: float | None, low: float, high: float, rng: np.random.Generator) -> float:
    """``value`` if given, else a log-uniform draw from [low, high] (for scale-like parameters)."""
    return float(np.exp(rng.uniform(np.log(low), np.log(high)))) if value is None else float(value)


def convolve(image: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Convolve every channel of an H×W×C image with a 2-D kernel, reflecting at the borders.

    FFT convolution keeps large motion kernels cheap; reflect padding avoids the dark frame that zero
    padding would leave, and ``valid`` mode then returns exactly H×W.
    """
    kh, kw = kernel.shape
    top, left = kh // 2, kw // 2
    padded = np.pad(image, ((top, kh - 1 - top), (left, kw - 1 - left), (0, 0)), mode="reflect")
    return fftconvolve(padded, kernel[:, :, None].astype(np.float32), mode="valid", axes=(0, 1))
