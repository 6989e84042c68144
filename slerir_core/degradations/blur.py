"""Photo blur: random camera-shake trajectories (after Boracchi & Foi), linear motion, defocus discs and
Gaussian blur (a soft lens, or a picture scaled up)."""

from __future__ import annotations

import numpy as np

from slerir_core.degradations._common import check_image, convolve, draw, finish
from slerir_core.degradations.registry import register_degradation

MOTION_LENGTH_RANGE = (5.0, 25.0)
LINEAR_LENGTH_RANGE = (5.0, 21.0)
DEFOCUS_RADIUS_RANGE = (1.5, 5.0)
GAUSSIAN_SIGMA_RANGE = (0.8, 3.0)
BLUR_KINDS = {"motion": 0.35, "linear": 0.25, "defocus": 0.25, "gaussian": 0.15}
"""Each kind of PSF and how often ``blur`` draws it."""
BLUR_REACH = 20
"""The half-side of the largest PSF ``blur`` draws: a camera-shake trajectory of 25 px reached at most 20 px
from its centre in 2,000 draws (14 px at the 90th percentile); linear motion reaches 11 px, a Gaussian 12."""


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
    return splat(path * (length / extent))


def linear_motion_kernel(length: float, angle: float) -> np.ndarray:
    """A straight, uniform-speed motion PSF: a segment of ``length`` pixels at ``angle`` radians, centred.

    Returns:
        A square float32 kernel of odd side that sums to 1.
    """
    t = np.linspace(-0.5, 0.5, max(2, int(np.ceil(4 * length)) + 1)) * length
    return splat(t * np.exp(1j * angle))


def splat(path: np.ndarray) -> np.ndarray:
    """A PSF from points the camera passed through (complex: x + iy, in pixels about the centre), each
    spread onto the pixel grid with bilinear weights: the time spent near a pixel becomes its weight.

    Returns:
        A square float32 kernel of odd side that sums to 1.
    """
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


def gaussian_kernel(sigma: float) -> np.ndarray:
    """An isotropic Gaussian PSF, cut at three standard deviations.

    Returns:
        A square float32 kernel of odd side that sums to 1.
    """
    half = int(np.ceil(3.0 * sigma))
    yy, xx = np.mgrid[-half : half + 1, -half : half + 1]
    kernel = np.exp(-(yy**2 + xx**2) / (2.0 * sigma**2))
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


def blur_kernel(
    kind: str,
    rng: np.random.Generator,
    length: float | None = None,
    radius: float | None = None,
    sigma: float | None = None,
) -> np.ndarray:
    """A PSF of ``kind`` (a key of :data:`BLUR_KINDS`); the parameters left out are drawn from their ranges
    (see :func:`blur`)."""
    if kind == "motion":
        return motion_kernel(draw(length, *MOTION_LENGTH_RANGE, rng), rng)
    if kind == "linear":
        return linear_motion_kernel(draw(length, *LINEAR_LENGTH_RANGE, rng), rng.uniform(0.0, np.pi))
    if kind == "defocus":
        return defocus_kernel(draw(radius, *DEFOCUS_RADIUS_RANGE, rng))
    if kind == "gaussian":
        return gaussian_kernel(draw(sigma, *GAUSSIAN_SIGMA_RANGE, rng))
    raise ValueError(f"unknown blur kind {kind!r}; choose one of {sorted(BLUR_KINDS)}")


@register_degradation("blur", reach=BLUR_REACH)
def blur(
    clean: np.ndarray,
    rng: np.random.Generator,
    kind: str | None = None,
    length: float | None = None,
    radius: float | None = None,
    sigma: float | None = None,
    kernel: np.ndarray | None = None,
) -> np.ndarray:
    """Blur with camera shake, linear motion, defocus or a Gaussian, convolving every channel with reflecting
    borders.

    Args:
        clean: H×W×C float image in [0, 1].
        rng: random source.
        kind: ``"motion"`` (camera shake, :func:`motion_kernel`), ``"linear"`` (:func:`linear_motion_kernel`,
            at a random angle), ``"defocus"`` (:func:`defocus_kernel`) or ``"gaussian"``
            (:func:`gaussian_kernel`); default drawn with the probabilities of :data:`BLUR_KINDS`.
        length: motion extent in pixels, default uniform in [5, 25] (shake) or [5, 21] (linear).
        radius: defocus disc radius in pixels, default uniform in [1.5, 5].
        sigma: Gaussian standard deviation in pixels, default uniform in [0.8, 3].
        kernel: an explicit 2-D PSF (normalised to sum 1); overrides the others.

    Returns:
        The blurred float32 image, same shape, in [0, 1].
    """
    x = check_image(clean)
    if kernel is None:
        if kind is None:
            kind = str(rng.choice(list(BLUR_KINDS), p=list(BLUR_KINDS.values())))
        kernel = blur_kernel(kind, rng, length, radius, sigma)
    elif kernel.ndim != 2 or kernel.sum() <= 0:
        raise ValueError(f"kernel must be a 2-D array with positive sum, got shape {kernel.shape}")
    return finish(convolve(x, np.asarray(kernel, np.float32) / np.sum(kernel)))
