"""Stein's unbiased risk estimate (SURE) as a loss: the restored image's error, estimated without clean images.

For noise that is Gaussian and independent from pixel to pixel, with variance ``v_i`` at pixel ``i``,

    E ||f(y) − x||² = E [ ||f(y) − y||² − Σ v_i + 2 Σ v_i ∂f_i/∂y_i ]

where ``x`` is the clean image and ``y`` the noisy one. The right side needs only ``y``, the network ``f`` and
the noise variances, so it scores the very function a user applies (every pixel visible), unlike the blind-spot
loss, which scores the network with some pixels hidden. The divergence term is estimated with one random probe
``b``: ``Σ v_i ∂f_i/∂y_i ≈ Σ v_i b_i (f(y + εb) − f(y))_i / ε`` (Ramani et al. 2008, Monte-Carlo SURE).

The variances come from a noise model fitted to the user's images (``slerir_core.adaptation.noise_model``):
a straight line of the local mean, which covers Gaussian read noise (a constant), photon noise (proportional
to the signal) and their sum, the noise of fluorescence cameras. Photon noise is not Gaussian, but above a few
photons per pixel the estimate stays close (Poisson-Gaussian SURE differs from it by terms of the third moment).

Grey images reach the network as three equal channels, whose noise is one draw: for them the estimate counts
one value per pixel (the probe is shared by the channels, and the output is their mean, as the restorer
returns grey images).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from slerir_core.adaptation.blind_spot import Restore
from slerir_core.adaptation.noise_model import NoiseModel, degrees_of_freedom, local_mean

EPSILON = 1e-3
"""Step of the divergence's finite difference, on the 0-1 scale (the network runs in float32 for it)."""


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
