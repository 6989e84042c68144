"""Pseudo-clean pairs: the starting model's own restorations, with fresh noise of the user's kind drawn on them.

The starting model restores the user's images once. Those restorations stand in for the clean images: the
noise model fitted to each noisy image (``slerir_core.adaptation.noise_model``) draws new noise on them, and
the network learns to map that noisy version back to the restoration. What it learns is the user's noise (its
level at each intensity, its photon statistics, the clipping of the camera and of the scaling), which is where
a model trained on other noise falls short; the pictures it learns on are the user's own, as restored.

Unlike the blind-spot loss, the network sees every pixel, as it does when it restores; unlike SURE, nothing in
the loss assumes Gaussian noise, so photon noise at a few photons and clipped pixels are scored as they are.
What it cannot teach is detail the starting model does not restore: the targets hold only what that model
recovers, so the gain is in how the user's noise comes off the user's pictures, and it levels off after a few
hundred steps.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from slerir_core.adaptation.blind_spot import Restore
from slerir_core.adaptation.noise_model import NoiseModel


def pseudo_clean_case(
    restored: torch.Tensor, generator: torch.Generator, noise: NoiseModel
) -> Callable[[Restore], torch.Tensor]:
    """One draw of the loss on crops of the starting model's restorations ``restored`` (B, 3, H, W): a function
    of the network (``restore(crops) -> restored``), the mean squared error of its restoration of a noisy draw.

    The noise is drawn once, so calling it again with another network scores that one on the same draw.
    """
    noisy = noise.draw(restored, generator)
    return lambda restore: F.mse_loss(restore(noisy).float(), restored.float())
