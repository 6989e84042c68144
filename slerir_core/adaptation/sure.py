"""Stein's unbiased risk estimate (SURE) as a loss: the restored image's error, estimated without clean images.

For noise that is Gaussian and independent from pixel to pixel, with variance ``v_i`` at pixel ``i``,

    E ||f(y) − x||² = E [ ||f(y) − y||² − Σ v_i + 2 Σ v_i ∂f_i/∂y_i ]

where ``x`` is the clean image and ``y`` the noisy one. The right side needs only ``y``, the network ``f`` and
the noise variances, so it scores the very function a user applies (every pixel visible), unlike the blind-spot
loss, which scores the network with some pixels hidden. The divergence term is estimated with one random probe
``b``: ``Σ v_i ∂f_i/∂y_i ≈ Σ v_i b_i (f(y + εb) − f(y))_i / ε`` (Ramani et al. 2008, Monte-Carlo SURE).

The variances come from a noise model fitted to the user's images (``fit_noise_model``): a straight line of
the local mean, which covers Gaussian read noise (a constant), photon noise (proportional to the signal) and
their sum, the noise of fluorescence cameras. Photon noise is not Gaussian, but above a few photons per pixel
the estimate stays close (Poisson-Gaussian SURE differs from it by terms of the third moment).

Grey images reach the network as three equal channels, whose noise is one draw: for them the estimate counts
one value per pixel (the probe is shared by the channels, and the output is their mean, as the restorer
returns grey images).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np
import torch
import torch.nn.functional as F

from slerir_core.adaptation.blind_spot import Restore
from slerir_core.errors import ImageError

EPSILON = 1e-3
"""Step of the divergence's finite difference, on the 0-1 scale (the network runs in float32 for it)."""
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
            "too few pixels are neither black nor saturated to measure the noise; adapt with the blind-spot loss"
        )
    gain, floor = np.polyfit(centres, variances, 1)
    if gain < 0:
        gain, floor = 0.0, float(np.mean(variances))
    return NoiseModel(float(gain), float(max(floor, 0.0)))


def sure_case(x: torch.Tensor, generator: torch.Generator, noise: NoiseModel) -> Callable[[Restore], torch.Tensor]:
    """One draw of the loss on crops ``x``: a function of the network (``restore(crops) -> restored``), which
    must run in float32 for the finite difference.

    The probe is drawn once, so calling it again with another network scores that one on the same draw.
    """
    y = degrees_of_freedom(x)
    grey = y.shape[1] != x.shape[1]
    variance = noise.variance(local_mean(y))
    probe = torch.randn(y.shape, generator=generator, device=y.device)
    nudged = x + EPSILON * (probe.expand_as(x) if grey else probe)

    # A pixel clipped to 0 or 1 (a saturated camera, the scaling's percentiles) does not hold its Gaussian
    # noise: scored, it would teach the network to reproduce the clipping.
    counted = ((y > 0.0) & (y < 1.0)).float()
    share = counted.mean().clamp_min(1e-6)

    def loss(restore: Restore) -> torch.Tensor:
        restored, moved = (restore(v).float() for v in (x, nudged))
        if grey:
            restored, moved = restored.mean(dim=1, keepdim=True), moved.mean(dim=1, keepdim=True)
        error = (restored - y).square() - variance + 2.0 * variance * probe * (moved - restored) / EPSILON
        return (error * counted).mean() / share

    return loss
