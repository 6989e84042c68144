"""Camera blur: random camera-shake trajectories (after Boracchi & Foi) and defocus discs."""

from __future__ import annotations

import numpy as np

from slerir_core.degradations._common import check_image, convolve, draw, finish
from slerir_core.degradations.registry import register_degradation

MOTION_LENGTH_RANGE = (5.0, 25.0)
DEFOCUS_RADIUS_RANGE = (1.5, 5.0)
MOTION_PROBABILITY = 0.6


def motion_kernel(length: float, rng: np.random.Generator, steps: int = 256) -> np.ndarray:
    """A camera-shake PSF from a random trajectory, in the spirit of Boracchi & Foi (2012).

    The trajectory's heading follows a random walk with momentum (the angular velocity is itself a
    random walk, which gives smooth curves), small jitter and rare sharp jerks (a shaking hand), and
    its speed varies smoothly. It is then scaled so that its larger bounding-box side is ``length``
    pixels, centred on its mean position (so blurring does not shift the image), and splatted onto a
    pixel grid with bilinear weights; the time spent near a point becomes that point's weight. All
    steps are cumulative sums, so nothing loops over time.

    Args:
        length: extent of the trajectory in pixels (0 gives a delta).
        rng: random source.
        steps: number of trajectory samples.

    Returns:
        A square float32 kernel of odd side that sums to 1.
    """
    # Over the default 256 steps the heading wanders by about 1.5 rad (curvature) and 0.5 rad
    # (jitter), and about one jerk of ~1 rad occurs: mostly open curves, now and then a sharp turn.
    scale = (256 / steps) ** 0.5
    turn_rate = np.cumsum(rng.normal(0.0, 6e-4 * scale**3, steps))
    jitter = rng.normal(0.0, 0.03 * scale, steps)
    jerks = (rng.random(steps) < 1.0 / steps) * rng.normal(0.0, 1.0, steps)
    heading = rng.uniform(0.0, 2.0 * np.pi) + np.cumsum(turn_rate + jitter + jerks)
    speed = np.exp(np.cumsum(rng.normal(0.0, 0.05, steps)))
    path = np.cumsum(speed * np.exp(1j * heading))
    path -= path.mean()
    extent = max(np.ptp(path.real), np.ptp(path.imag), 1e-8)
    path *= length / extent
    half = int(np.ceil(max(np.abs(path.real).max(), np.abs(path.imag).max()))) + 1
    size = 2 * half + 1
    cols, rows = path.real + half, path.imag + half
    r0, c0 = np.floor(rows).astype(int), np.floor(cols).astype(int)
    fr, fc = rows - r0, cols - c0
    kernel = np.zeros((size, size), np.float64)
    corners = ((0, 0, (1 - fr) * (1 - fc)), (0, 1, (1 - fr) * fc), (1, 0, fr * (1 - fc)), (1, 1, fr * fc))
    for dr, dc, weight in corners:
        np.add.at(kernel, (r0 + dr, c0 + dc), weight)
    return (kernel / kernel.sum()).astype(np.float32)


def defocus_kernel(radius: float) -> np.ndarray:
    """A uniform disc PSF (out-of-focus thin lens) with anti-aliased rim.

    Args:
        radius: disc radius in pixels.

    Returns:
        A square float32 kernel of odd side that sums to 1.
    """
    half = int(np.ceil(radius)) + 1
    yy, xx = np.mgrid[-half : half + 1, -half : half + 1]
    # Coverage of each pixel by the disc, approximated by a one-pixel linear ramp across the rim.
    kernel = np.clip(radius + 0.5 - np.hypot(yy, xx), 0.0, 1.0)
    return (kernel / kernel.sum()).astype(np.float32)


@register_degradation("blur")
def blur(
    clean: np.ndarray,
    rng: np.random.Generator,
    kind: str | None = None,
    length: float | None = None,
    radius: float | None = None,
    kernel: np.ndarray | None = None,
) -> np.ndarray:
    """Blur with camera shake or defocus, convolving every channel with reflecting borders.

    Args:
        clean: H×W×C float image in [0, 1].
        rng: random source.
        kind: ``"motion"`` (:func:`motion_kernel`) or ``"defocus"`` (:func:`defocus_kernel`); default
            motion with probability 0.6.
        length: motion trajectory extent in pixels, default uniform in [5, 25].
        radius: defocus disc radius in pixels, default uniform in [1.5, 5].
        kernel: an explicit 2-D PSF (normalised to sum 1); overrides the others.

    Returns:
        The blurred float32 image, same shape, in [0, 1].
    """
    x = check_image(clean)
    if kernel is None:
        if kind is None:
            kind = "motion" if rng.random() < MOTION_PROBABILITY else "defocus"
        if kind == "motion":
            kernel = motion_kernel(draw(length, *MOTION_LENGTH_RANGE, rng), rng)
        elif kind == "defocus":
            kernel = defocus_kernel(draw(radius, *DEFOCUS_RADIUS_RANGE, rng))
        else:
            raise ValueError(f"unknown blur kind {kind!r}; choose 'motion' or 'defocus'")
    elif kernel.ndim != 2 or kernel.sum() <= 0:
        raise ValueError(f"kernel must be a 2-D array with positive sum, got shape {kernel.shape}")
    return finish(convolve(x, np.asarray(kernel, np.float32) / np.sum(kernel)))
