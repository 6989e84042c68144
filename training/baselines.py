"""Classical, training-free baselines from scikit-image and SciPy, one per task, for the evaluation tables.

Each baseline maps a degraded H×W×3 float32 image in [0, 1] to a restored one. They are blind: the noise
level is estimated (Donoho's wavelet estimator, as ``estimate_sigma``), the blur kernel is unknown and
guessed as a generic Gaussian PSF, and the haze model's airlight and transmission are estimated by the
dark-channel prior.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from slerir_core.noise_level import estimate_noise_sigma


@dataclass(frozen=True)
class Baseline:
    """A classical method for one task.

    Attributes:
        name: what the table's footnote calls it.
        run: degraded H×W×3 float32 -> restored H×W×3 float32.
    """

    name: str
    run: Callable[[np.ndarray], np.ndarray]


def non_local_means(image: np.ndarray, sigma: float | None = None) -> np.ndarray:
    """Non-local means (skimage's recommended h = 0.8 σ) with the noise level ``sigma`` (0-1 scale), estimated
    from the image when it is not given."""
    from skimage.restoration import denoise_nl_means

    sigma = estimate_noise_sigma(image) if sigma is None else sigma
    out = denoise_nl_means(
        image, h=0.8 * sigma, sigma=sigma, fast_mode=True, patch_size=5, patch_distance=6, channel_axis=-1
    )
    return np.clip(out, 0, 1).astype(np.float32)


def bm3d_known_sigma(image: np.ndarray, sigma: float) -> np.ndarray:
    """BM3D with the true noise level (σ on the 0-1 scale): the denoiser users compare with. Not blind, so it
    is reported beside the table's baseline rather than as it. Needs the optional ``bm3d`` package."""
    import bm3d

    return np.clip(bm3d.bm3d_rgb(image, sigma_psd=sigma), 0, 1).astype(np.float32)


def gaussian_psf(sigma: float = 1.5, size: int | None = None) -> np.ndarray:
    """A normalised 2-D Gaussian kernel, the generic PSF guessed when the true kernel is unknown."""
    size = size or 2 * int(np.ceil(3 * sigma)) + 1
    ax = np.arange(size) - size // 2
    k = np.exp(-(ax[:, None] ** 2 + ax[None, :] ** 2) / (2 * sigma**2))
    return (k / k.sum()).astype(np.float64)


def wiener_deconvolution(image: np.ndarray, psf_sigma: float = 1.5, balance: float = 0.05) -> np.ndarray:
    """Wiener deconvolution per channel (``skimage.restoration.wiener``) with a Gaussian PSF guess.

    The true kernel (camera shake, defocus, a microscope PSF) is unknown to a blind baseline; a generic
    Gaussian of σ = ``psf_sigma`` px is the usual stand-in, so this baseline under-restores strong or motion
    blur. Wiener was chosen over Richardson-Lucy because, with a wrong kernel, RL's iterations amplify
    ringing and lowered PSNR below the blurred input on the generated test set; Wiener's ``balance``
    (regularisation) keeps it above.
    """
    from skimage.restoration import wiener

    psf = gaussian_psf(psf_sigma)
    out = np.stack([wiener(image[..., c].astype(np.float64), psf, balance) for c in range(image.shape[-1])], axis=-1)
    return np.clip(out, 0, 1).astype(np.float32)


def guided_filter(guide: np.ndarray, src: np.ndarray, radius: int, eps: float) -> np.ndarray:
    """He et al.'s guided filter with a grey guide, by box filters (edge-preserving smoothing of ``src``)."""
    size = 2 * radius + 1
    mean = lambda a: ndimage.uniform_filter(a, size=size, mode="reflect")  # noqa: E731
    m_i, m_p = mean(guide), mean(src)
    cov = mean(guide * src) - m_i * m_p
    var = mean(guide * guide) - m_i * m_i
    a = cov / (var + eps)
    b = m_p - a * m_i
    return mean(a) * guide + mean(b)


def dark_channel_prior(
    image: np.ndarray, omega: float = 0.95, t_min: float = 0.1, patch: int | None = None
) -> np.ndarray:
    """Single-image dehazing by the dark channel prior (He, Sun and Tang, CVPR 2009).

    Dark channel: the minimum over colours and over a local patch. Airlight A: the mean colour of the
    brightest 0.1 % of pixels of the dark channel. Transmission ``t = 1 - ω·dark(I / A)``, refined by a
    guided filter (He et al. 2010, instead of soft matting), floored at ``t_min``; ``J = (I - A) / t + A``.

    Args:
        image: hazy H×W×3 image in [0, 1].
        omega: share of haze removed (keeps a little for depth perception).
        t_min: lower bound of the transmission.
        patch: dark-channel window; by default 15 px (the paper's) scaled down for small images.
    """
    img = image.astype(np.float64)
    h, w = img.shape[:2]
    patch = patch or int(np.clip(min(h, w) // 20, 3, 15)) | 1
    dark = ndimage.minimum_filter(img.min(axis=2), size=patch, mode="nearest")
    count = max(1, round(0.001 * h * w))
    brightest = np.argsort(dark.ravel())[-count:]
    airlight = np.maximum(img.reshape(-1, 3)[brightest].mean(axis=0), 1e-3)
    dark_norm = ndimage.minimum_filter((img / airlight).min(axis=2), size=patch, mode="nearest")
    t = 1.0 - omega * dark_norm
    t = guided_filter(img.mean(axis=2), t, radius=max(2, 4 * patch), eps=1e-3)
    t = np.maximum(t, t_min)[..., None]
    return np.clip((img - airlight) / t + airlight, 0, 1).astype(np.float32)


def adaptive_equalisation(image: np.ndarray) -> np.ndarray:
    """Contrast-limited adaptive histogram equalisation (CLAHE) of the value channel."""
    from skimage.exposure import equalize_adapthist

    return np.clip(equalize_adapthist(np.clip(image, 0, 1), clip_limit=0.01), 0, 1).astype(np.float32)


def rain_streak_opening(image: np.ndarray) -> np.ndarray:
    """Remove thin, bright, near-vertical streaks: grey opening with a short horizontal line per channel.

    Rain streaks are brighter than the background and a few pixels wide across; an opening whose
    footprint is wider than a streak removes it while keeping larger bright structures.
    """
    footprint = np.ones((1, 5), dtype=bool)
    out = np.stack([ndimage.grey_opening(image[..., c], footprint=footprint) for c in range(image.shape[-1])], axis=-1)
    return np.clip(out, 0, 1).astype(np.float32)


BASELINES: dict[str, Baseline] = {
    "noise": Baseline("non-local means (σ estimated)", non_local_means),
    "rain": Baseline("grey opening, 1×5 line", rain_streak_opening),
    "haze": Baseline("dark channel prior (He et al.)", dark_channel_prior),
    "blur": Baseline("Wiener, Gaussian PSF guess σ=1.5 px", wiener_deconvolution),
    "lowlight": Baseline("CLAHE (equalize_adapthist)", adaptive_equalisation),
    "micro_noise": Baseline("non-local means (σ estimated)", non_local_means),
    "micro_blur": Baseline("Wiener, Gaussian PSF guess σ=1.5 px", wiener_deconvolution),
}


def baseline_for(task: str) -> Baseline | None:
    """The classical baseline of a task, or ``None`` when there is none."""
    return BASELINES.get(task)
