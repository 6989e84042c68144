"""Pixel-noise level of an image, estimated from the image alone."""

from __future__ import annotations

import numpy as np


def estimate_noise_sigma(image: np.ndarray) -> float:
    """Gaussian noise σ by Donoho's robust estimator: median(|HH|) / 0.6745 of the finest diagonal Haar details.

    The same estimator as ``skimage.restoration.estimate_sigma`` (which uses a Daubechies wavelet and needs
    the optional PyWavelets package), written with NumPy. ``image`` is H×W×C; averaged over channels.
    """
    h, w = image.shape[0] // 2 * 2, image.shape[1] // 2 * 2
    x = image[:h, :w].astype(np.float64)
    hh = (x[0::2, 0::2] - x[0::2, 1::2] - x[1::2, 0::2] + x[1::2, 1::2]) / 2.0  # orthonormal Haar
    return float(np.mean([np.median(np.abs(hh[..., c])) / 0.6745 for c in range(hh.shape[-1])]))
