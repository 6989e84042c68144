"""Additive Gaussian noise on the uint8 grid (the CBSD68 / PromptIR protocol), and Poisson–Gaussian noise."""

from __future__ import annotations

import numpy as np

from slerir_core.degradations._common import check_image, finish
from slerir_core.degradations.registry import register_degradation

NOISE_SIGMAS: tuple[int, ...] = (15, 25, 50)
"""Noise levels of the denoising benchmarks (CBSD68, Urban100, Kodak24), in uint8 grey levels."""


@register_degradation("noise")
def gaussian_noise(
    clean: np.ndarray, rng: np.random.Generator, sigma: float | None = None, quantize: bool = False
) -> np.ndarray:
    """Additive white Gaussian noise as the denoising benchmarks add it.

    The clean image is first put on the uint8 grid (``round(255 x)``), then
    ``clip(x8 + N(0, sigma²), 0, 255) / 255``: the noise is i.i.d. per pixel and per channel.

    Args:
        clean: H×W×C float image in [0, 1].
        rng: random source.
        sigma: standard deviation in uint8 grey levels; default a uniform choice of 15, 25 and 50.
            Any positive value works.
        quantize: also put the noisy result on the uint8 grid by truncation, which is what PromptIR's
            ``astype(np.uint8)`` does (it lowers the mean by about half a grey level).

    Returns:
        The noisy float32 image, same shape, in [0, 1].
    """
    x = check_image(clean)
    sigma = float(rng.choice(NOISE_SIGMAS)) if sigma is None else float(sigma)
    if sigma < 0:
        raise ValueError(f"sigma must be >= 0, got {sigma}")
    x8 = np.round(x * 255.0)
    noisy = np.clip(x8 + rng.normal(0.0, sigma, size=x.shape).astype(np.float32), 0.0, 255.0)
    if quantize:
        noisy = np.floor(noisy)
    return finish(noisy / 255.0)


def poisson_gaussian(signal: np.ndarray, rng: np.random.Generator, peak: float, read_sigma: float) -> np.ndarray:
    """Sensor noise: Poisson shot noise at ``peak`` photons for signal 1, plus Gaussian read noise.

    ``y = Poisson(peak · x) / peak + N(0, read_sigma²)``, so the shot-noise variance is ``x / peak``:
    fewer photons, noisier image. Not clipped, so callers can chain further steps first.

    Args:
        signal: expected intensity, >= 0.
        rng: random source.
        peak: photons collected at intensity 1.
        read_sigma: standard deviation of the read noise, in units of intensity 1.

    Returns:
        The noisy float32 signal, unclipped.
    """
    if peak <= 0:
        raise ValueError(f"peak must be > 0, got {peak}")
    shot = rng.poisson(np.maximum(signal, 0.0) * peak).astype(np.float32) / np.float32(peak)
    return shot + rng.normal(0.0, read_sigma, size=signal.shape).astype(np.float32)
