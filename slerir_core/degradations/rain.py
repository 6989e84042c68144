"""Rain streaks in the style of Rain100L: thin, bright, mostly parallel streaks over the scene."""

from __future__ import annotations

import numpy as np
from scipy.ndimage import gaussian_filter
from scipy.signal import fftconvolve
from skimage.draw import line_aa

from slerir_core.degradations._common import check_image, draw, finish
from slerir_core.degradations.registry import register_degradation

RAIN_DENSITY_RANGE = (0.002, 0.008)
RAIN_LENGTH_RANGE = (12.0, 36.0)
RAIN_ANGLE_RANGE = (-30.0, 30.0)
RAIN_WIDTH_RANGE = (0.35, 0.8)
RAIN_INTENSITY_RANGE = (0.55, 0.9)


def streak_kernel(length: float, angle: float, width: float) -> np.ndarray:
    """One rain streak: an anti-aliased line, brightest at its middle, softened across by ``width``.

    Args:
        length: streak length in pixels.
        angle: tilt from vertical in degrees (positive leans right at the bottom).
        width: Gaussian sigma across the streak in pixels; 0 leaves the 1-pixel anti-aliased line.

    Returns:
        A square float32 kernel with peak value 1, so a drop of brightness b draws a streak of peak b.
    """
    half = length / 2.0
    margin = int(np.ceil(3 * width)) + 1
    size = 2 * (int(np.ceil(half)) + margin) + 1
    c = size // 2
    theta = np.deg2rad(angle)
    dr, dc = half * np.cos(theta), half * np.sin(theta)
    rr, cc, val = line_aa(round(c - dr), round(c - dc), round(c + dr), round(c + dc))
    # Streaks in Rain100L taper towards their ends rather than stopping abruptly.
    t = ((rr - c) * np.cos(theta) + (cc - c) * np.sin(theta)) / max(half, 1.0)
    kernel = np.zeros((size, size), np.float32)
    kernel[rr, cc] = val * np.sqrt(np.clip(1.0 - t**2, 0.0, 1.0))
    if width > 0:
        kernel = gaussian_filter(kernel, width)
    return kernel / kernel.max()


@register_degradation("rain")
def rain(
    clean: np.ndarray,
    rng: np.random.Generator,
    density: float | None = None,
    length: float | None = None,
    angle: float | None = None,
    width: float | None = None,
    intensity: float | None = None,
) -> np.ndarray:
    """Add Rain100L-like streaks: sparse random drops smeared along one direction, screened over the image.

    Drops are Bernoulli impulses of random brightness; half of them are convolved with a streak of the
    full length and half with a shorter one (0.4–0.8×), so the field has the mixed lengths of real rain.
    The grey streak layer ``S`` is screened over every channel, ``1 − (1 − x)(1 − S)``: additive on dark
    regions as in Rain100L's ``O = B + S``, but without flattening bright regions to white.

    Args:
        clean: H×W×C float image in [0, 1].
        rng: random source.
        density: fraction of pixels that seed a drop, default uniform in [0.002, 0.008].
        length: streak length in pixels, default uniform in [12, 36].
        angle: tilt from vertical in degrees, one for the whole image, default uniform in [−30, 30].
        width: Gaussian sigma across a streak in pixels, default uniform in [0.35, 0.8].
        intensity: peak brightness of the strongest streaks, default uniform in [0.55, 0.9]; each drop
            gets a random fraction (0.3–1) of it.

    Returns:
        The rainy float32 image, same shape, in [0, 1].
    """
    x = check_image(clean)
    density = draw(density, *RAIN_DENSITY_RANGE, rng)
    length = draw(length, *RAIN_LENGTH_RANGE, rng)
    angle = draw(angle, *RAIN_ANGLE_RANGE, rng)
    width = draw(width, *RAIN_WIDTH_RANGE, rng)
    intensity = draw(intensity, *RAIN_INTENSITY_RANGE, rng)
    long_kernel = streak_kernel(length, angle, width)
    short_kernel = streak_kernel(length * rng.uniform(0.4, 0.8), angle, width)
    pad = (long_kernel.shape[0] - short_kernel.shape[0]) // 2
    kernels = np.stack([long_kernel, np.pad(short_kernel, pad)])
    # Drops fall on a canvas larger than the image so that streaks also enter across its borders.
    k = long_kernel.shape[0]
    canvas = (x.shape[0] + k - 1, x.shape[1] + k - 1)
    seeds = rng.random(canvas) < density
    brightness = rng.uniform(0.3, 1.0, size=canvas).astype(np.float32) * seeds
    is_long = rng.random(canvas) < 0.5
    drops = np.stack([brightness * is_long, brightness * ~is_long])
    streaks = fftconvolve(drops, kernels, mode="valid", axes=(1, 2)).sum(axis=0)
    layer = intensity * np.clip(streaks, 0.0, 1.0)[:, :, None]
    return finish(1.0 - (1.0 - x) * (1.0 - layer))
