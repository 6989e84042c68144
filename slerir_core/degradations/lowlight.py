"""Low light: an exposure drop and a darkening gamma, then the sensor's shot and read noise."""

from __future__ import annotations

import numpy as np

from slerir_core.degradations._common import check_image, draw, draw_log, finish
from slerir_core.degradations.noise import poisson_gaussian
from slerir_core.degradations.registry import register_degradation

LOWLIGHT_EXPOSURE_RANGE = (0.05, 0.3)
LOWLIGHT_GAMMA_RANGE = (1.2, 2.2)
LOWLIGHT_PEAK_RANGE = (60.0, 600.0)
LOWLIGHT_READ_SIGMA_RANGE = (0.002, 0.01)


@register_degradation("lowlight")
def lowlight(
    clean: np.ndarray,
    rng: np.random.Generator,
    exposure: float | None = None,
    gamma: float | None = None,
    peak: float | None = None,
    read_sigma: float | None = None,
) -> np.ndarray:
    """Under-exposed, noisy capture in the style of LOL: ``y = PG(exposure · x^gamma)``.

    The gamma above 1 darkens shadows more than highlights, as low-light photographs do; ``PG`` is
    Poisson–Gaussian sensor noise (:func:`~slerir_core.degradations.noise.poisson_gaussian`), so the
    noise is strongest, relative to the signal, in the darkest regions.

    Args:
        clean: H×W×C float image in [0, 1].
        rng: random source.
        exposure: brightness scale, default uniform in [0.05, 0.3].
        gamma: tone exponent, default uniform in [1.2, 2.2].
        peak: photons at full scale (before the exposure drop), default log-uniform in [60, 600]; the
            darkened image then collects ``exposure · peak`` photons at most.
        read_sigma: read-noise standard deviation, default uniform in [0.002, 0.01].

    Returns:
        The dark, noisy float32 image, same shape, in [0, 1].
    """
    x = check_image(clean)
    exposure = draw(exposure, *LOWLIGHT_EXPOSURE_RANGE, rng)
    gamma = draw(gamma, *LOWLIGHT_GAMMA_RANGE, rng)
    peak = draw_log(peak, *LOWLIGHT_PEAK_RANGE, rng)
    read_sigma = draw(read_sigma, *LOWLIGHT_READ_SIGMA_RANGE, rng)
    dark = exposure * np.power(x, gamma)
    return finish(poisson_gaussian(dark, rng, peak=peak, read_sigma=read_sigma))
