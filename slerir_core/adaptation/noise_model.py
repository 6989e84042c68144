"""The user's noise, as a straight line of the intensity: fitted to each noisy image, and drawn anew.

Fluorescence and photographic cameras add photon (shot) noise, whose variance grows in proportion to the
signal, to read noise of constant variance; per-pixel gain and offset maps add to both. ``fit_noise_model``
measures the line on one noisy image; ``NoiseModel.variance`` gives the variance it predicts, which SURE needs
(``slerir_core.adaptation.sure``), and ``NoiseModel.draw`` draws such noise on other images, which the
pseudo-clean pairs need (``slerir_core.adaptation.pseudo_clean``).
"""

from __future__ import annotations

from dataclasses import dataclass
from statistics import NormalDist

import numpy as np
import torch
import torch.nn.functional as F

from slerir_core.errors import ImageError

BINS = 16
"""Intensity bins of the noise model's fit."""
UNCLIPPED_SHARE = 0.9
"""Bins of the noise model's fit need at least this share of pixels whose 3×3 neighbourhood is not clipped."""
KEPT = 0.9
"""Share of each bin's residuals (the smallest) the noise model's fit reads."""
_EDGE = NormalDist().inv_cdf(0.5 + KEPT / 2)
_TRIMMED_GAUSSIAN = 1.0 - 2.0 * _EDGE * NormalDist().pdf(_EDGE) / KEPT
"""The mean square of a standard Gaussian's values inside its central ``KEPT`` share."""
_RESIDUAL = torch.tensor([[1.0, -2.0, 1.0], [-2.0, 4.0, -2.0], [1.0, -2.0, 1.0]]) / 6.0
"""A filter that removes constants, ramps and quadratics along rows and columns, with unit energy: applied to
pixel-independent noise of variance v, its output has variance v (Immerkær's noise estimator)."""


@dataclass(frozen=True)
class NoiseModel:
    """Noise variance as a straight line of the clean intensity: ``gain · intensity + floor``, 0-1 scale."""

    gain: float
    floor: float

    def variance(self, intensity: torch.Tensor) -> torch.Tensor:
        """The variance at each pixel of ``intensity`` (dark noisy pixels can read below zero: never negative)."""
        return (self.gain * intensity + self.floor).clamp_min(0.0)

    def draw(self, clean: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """A noisy version of ``clean`` crops (B, 3, H, W) in [0, 1], clipped to [0, 1] as the network's input is.

        The part proportional to the intensity is drawn as photons (Poisson counts of ``gain``), which keeps
        the skew and the discrete levels of photon noise at a few photons, and the floor as Gaussian read
        noise. Grey crops (three equal channels) get one draw, repeated, as a grey image's noise is.
        """
        signal = degrees_of_freedom(clean).float()
        if self.gain > 0.0:
            signal = torch.poisson(signal.clamp_min(0.0) / self.gain, generator=generator) * self.gain
        read = torch.randn(signal.shape, generator=generator, device=signal.device)
        return (signal + self.floor**0.5 * read).clamp(0.0, 1.0).expand_as(clean)


def degrees_of_freedom(x: torch.Tensor) -> torch.Tensor:
    """The independent values of crops ``x`` (B, 3, H, W): one channel for grey crops, all three otherwise."""
    return x[:, :1] if bool((x[:, 1:] == x[:, :1]).all()) else x


def local_mean(y: torch.Tensor) -> torch.Tensor:
    """Each pixel's 3×3 mean (edges reflected): the intensity its noise variance is read at."""
    return F.avg_pool2d(F.pad(y, (1, 1, 1, 1), mode="reflect"), 3, stride=1)


def fit_noise_model(plane: torch.Tensor) -> NoiseModel:
    """Fit ``NoiseModel`` to one noisy image (1, 3, H, W) in [0, 1], as the network sees it (each image has
    its own scaling, so its own model).

    The residual filter leaves the noise and little of the picture. In each of ``BINS`` bins of local mean
    (equal pixel counts), the variance is the mean square of the residuals below their ``KEPT`` quantile,
    divided by what that trimming leaves of a Gaussian's: edges that leak through land in the trimmed tail,
    and, unlike a median, the mean square stays right for the few discrete values of photon noise at a few
    photons. A line through the bins' variances is the model (least squares, gain ≥ 0). Pixels clipped to 0
    or 1 are left out.
    """
    y = degrees_of_freedom(plane.float()).reshape(-1, 1, *plane.shape[-2:])
    residual = F.conv2d(y, _RESIDUAL.to(y.device)[None, None]).flatten().cpu().numpy()
    mean = local_mean(y)[..., 1:-1, 1:-1].flatten().cpu().numpy()
    inside = ((y > 0.0) & (y < 1.0)).float()
    unclipped = (F.avg_pool2d(inside, 3, stride=1) == 1.0).flatten().cpu().numpy()
    centres, variances = [], []
    for chunk in np.array_split(np.argsort(mean), BINS):
        # Near a clipping level the unclipped pixels are those whose noise pulled them away from it, which
        # would read as too little noise: such bins are left out.
        kept = chunk[unclipped[chunk]]
        if len(kept) < max(UNCLIPPED_SHARE * len(chunk), 16):
            continue
        squares = np.sort(residual[kept] ** 2)[: int(KEPT * len(kept))]
        centres.append(float(mean[kept].mean()))
        variances.append(float(squares.mean()) / _TRIMMED_GAUSSIAN)
    if len(centres) < 2:
        raise ImageError(
            "too few pixels are neither black nor saturated to measure the noise; adapt with the blind-spot loss "
            "(--loss blind-spot)"
        )
    gain, floor = np.polyfit(centres, variances, 1)
    if gain < 0:
        gain, floor = 0.0, float(np.mean(variances))
    return NoiseModel(float(gain), float(max(floor, 0.0)))
