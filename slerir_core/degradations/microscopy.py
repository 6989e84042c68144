"""Fluorescence-microscopy degradations: photon-limited Poisson–Gaussian noise and a Gaussian PSF."""

from __future__ import annotations

import numpy as np
from scipy.ndimage import gaussian_filter

from slerir_core.degradations._common import check_image, draw, draw_log, finish
from slerir_core.degradations.noise import poisson_gaussian
from slerir_core.degradations.registry import register_degradation

MICRO_PEAK_RANGE = (5.0, 100.0)
MICRO_READ_SIGMA_RANGE = (0.005, 0.04)
MICRO_PSF_SIGMA_RANGE = (1.0, 3.0)
GAUSSIAN_TRUNCATE = 4.0
"""The Gaussian PSF's support, in standard deviations (scipy's default)."""


@register_degradation("micro_noise")
def micro_noise(
    clean: np.ndarray,
    rng: np.random.Generator,
    peak: float | None = None,
    read_sigma: float | None = None,
) -> np.ndarray:
    """Photon-limited noise of a fluorescence camera: ``Poisson(peak · x) / peak + N(0, read_sigma²)``.

    Args:
        clean: H×W×C float image in [0, 1].
        rng: random source.
        peak: photons at intensity 1, default log-uniform in [5, 100] (5 is a very dim live-cell frame,
            100 a comfortable one).
        read_sigma: camera read noise, default uniform in [0.005, 0.04].

    Returns:
        The noisy float32 image, same shape, in [0, 1].
    """
    x = check_image(clean)
    peak = draw_log(peak, *MICRO_PEAK_RANGE, rng)
    read_sigma = draw(read_sigma, *MICRO_READ_SIGMA_RANGE, rng)
    return finish(poisson_gaussian(x, rng, peak=peak, read_sigma=read_sigma))


@register_degradation("micro_blur", reach=int(np.ceil(GAUSSIAN_TRUNCATE * MICRO_PSF_SIGMA_RANGE[1])))
def micro_blur(clean: np.ndarray, rng: np.random.Generator, sigma: float | None = None) -> np.ndarray:
    """Widefield out-of-focus blur, with the PSF approximated by an isotropic Gaussian.

    No noise is added, so the label stays pure; compose with ``micro_noise`` for a realistic frame.

    Args:
        clean: H×W×C float image in [0, 1].
        rng: random source.
        sigma: PSF standard deviation in pixels, default uniform in [1, 3] (an Airy core sampled at
            roughly Nyquist to one defocused by a few depths of field).

    Returns:
        The blurred float32 image, same shape, in [0, 1].
    """
    x = check_image(clean)
    sigma = draw(sigma, *MICRO_PSF_SIGMA_RANGE, rng)
    return finish(gaussian_filter(x, sigma=(sigma, sigma, 0.0), mode="reflect", truncate=GAUSSIAN_TRUNCATE))
