"""Small noisy grey pictures planned as the network was trained to see noise: independent in each channel.

The network works on three channels, and every noise it was trained on is drawn for each channel on its own. A
grey picture (or one channel of microscopy data) is fed as three equal channels, so its noise is the same in all
three, a pattern no training sample had. The GLGF prior reads the plan's view in a grid of crops, each resized to
the degradation extractor's input (``SLERIR.analyse``; 4×4 crops of 64² for the compact model). Where the crops
are enlarged, in views under 256² there, their noise grain is smoothed away, and the colour of the noise is what
tells noise apart: a grey picture's prior then misleads the restoration. Eight grey held-out pictures with
Gaussian noise of σ = 25 came out at 21.9 dB at 128² and 23.1 dB at 192², against 27.9 dB at 256², where the
crops are not enlarged (the input is at 20.4 dB).

Noise that is the same in three channels is the part along their mean of noise that is independent in each:
independent noise of variance 3σ² per channel has variance σ² along the mean, and the rest, which sums to zero
over the channels, is independent of it. Adding that rest turns a grey picture with noise σ into one with
independent noise of √3·σ in each channel, like the network's training samples, whose channel mean is still the
grey picture. A small grey picture is planned on that view, and its tiles restored from the picture itself: the
same pictures came out at 27.0 dB at 128² and 27.5 dB at 192². Restoring the spread view too measured 0.5 dB
lower; at 256², where spreading is not needed, planning on it cost 0.5 dB, so views whose crops are not enlarged
are planned as they are.
"""

from __future__ import annotations

import numpy as np

from slerir_core.noise_level import estimate_noise_sigma

SPREAD_ABOVE = 6.0 / 255
"""The smallest estimated noise σ (0-1 scale) that is spread. Fine texture of clean pictures reads as σ ≈ 3 grey
levels of 255 to the estimator; rain, haze, blur and low light without noise as 0.5-5."""
SEED = 0x9E7
"""Seeds the spread noise, so that planning an image twice gives one plan."""


def grey_noise_sigma(image: np.ndarray) -> float | None:
    """The noise σ of a grey image (H×W×1 in [0, 1]) to spread over the channels, or ``None`` when its estimate
    is below ``SPREAD_ABOVE``."""
    sigma = estimate_noise_sigma(image)
    return sigma if sigma >= SPREAD_ABOVE else None


def spread_grey_noise(image: np.ndarray, sigma: float) -> np.ndarray:
    """A grey image (H×W×1 float32) as three channels with independent noise: the grey value plus the part off
    the channel mean of independent noise of √3·σ per channel, so the channels' mean is ``image``.

    Returns:
        H×W×3 float32, possibly a little outside [0, 1].
    """
    draw = np.random.default_rng(SEED).standard_normal((*image.shape[:2], 3), np.float32)
    return image + np.float32(np.sqrt(3.0) * sigma) * (draw - draw.mean(axis=-1, keepdims=True))
