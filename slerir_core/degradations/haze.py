"""Haze by the atmospheric scattering model ``I = J·t + A·(1 − t)``, ``t = exp(−β·d)``."""

from __future__ import annotations

import numpy as np
from scipy.ndimage import gaussian_filter
from skimage.transform import resize

from slerir_core.degradations._common import check_image, draw, finish
from slerir_core.degradations.registry import register_degradation

HAZE_BETA_RANGE = (0.6, 2.2)
HAZE_AIRLIGHT_RANGE = (0.7, 1.0)
HAZE_TINT = 0.04
HAZE_NEAR_RANGE = (0.05, 0.35)


def depth_proxy(clean: np.ndarray, rng: np.random.Generator, near: float) -> np.ndarray:
    """A smooth scene-depth stand-in in [near, 1] (1 = farthest), for images that have no depth map.

    A random mix of three cues outdoor scenes share: distance grows towards the top of the frame (a
    ramp tilted up to ±30°), bright smooth regions are often sky or far away (heavily smoothed
    luminance), and unstructured variation (bicubically upsampled 3×3 to 5×5 noise). Each is smooth, so
    haze never copies fine texture of the image.

    Args:
        clean: H×W×C float image in [0, 1].
        rng: random source.
        near: depth of the nearest point; keeps some haze everywhere.

    Returns:
        H×W float32 depth in [near, 1].
    """
    h, w = clean.shape[:2]
    tilt = np.deg2rad(rng.uniform(-30.0, 30.0))
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    ramp = -(yy / max(h - 1, 1)) * np.cos(tilt) + (xx / max(w - 1, 1)) * np.sin(tilt)
    luminance = gaussian_filter(clean.mean(axis=-1), sigma=0.04 * max(h, w), mode="reflect")
    grid = rng.integers(3, 6)
    blobs = resize(rng.standard_normal((grid, grid)), (h, w), order=3, mode="reflect")
    cues = np.stack([_unit(ramp), _unit(luminance), _unit(blobs)])
    weights = rng.dirichlet((4.0, 1.5, 1.0))
    depth = _unit(np.tensordot(weights, cues, axes=1))
    return (near + (1.0 - near) * depth).astype(np.float32)


def _unit(a: np.ndarray) -> np.ndarray:
    """Rescale to [0, 1]; a constant array becomes 0.5 rather than a division by zero."""
    lo, hi = float(a.min()), float(a.max())
    return np.full_like(a, 0.5) if hi - lo < 1e-8 else (a - lo) / (hi - lo)


@register_degradation("haze")
def haze(
    clean: np.ndarray,
    rng: np.random.Generator,
    beta: float | None = None,
    airlight: float | np.ndarray | None = None,
    depth: np.ndarray | None = None,
) -> np.ndarray:
    """Synthetic haze by the atmospheric scattering model, as RESIDE/SOTS builds its hazy images.

    ``I = J·t + A·(1 − t)`` with transmission ``t = exp(−β·d)``. RESIDE draws β and A uniformly per
    image and takes ``d`` from a depth map; lacking depth, ``d`` here is :func:`depth_proxy`, normalised
    to [near, 1] with near uniform in [0.05, 0.35], so β is unitless. With β in [0.6, 2.2] the
    transmission spans about 0.11 (far, dense haze) to 0.97 (near, light haze).

    Args:
        clean: H×W×C float image in [0, 1].
        rng: random source.
        beta: scattering coefficient per unit of normalised depth, default uniform in [0.6, 2.2].
        airlight: atmospheric light A, a scalar or one value per channel. Default: a grey level uniform
            in [0.7, 1.0], tinted per channel by up to ±0.04 (bluish or yellowish skies) on RGB images.
        depth: H×W depth map in normalised units; default :func:`depth_proxy`.

    Returns:
        The hazy float32 image, same shape, in [0, 1].
    """
    x = check_image(clean)
    beta = draw(beta, *HAZE_BETA_RANGE, rng)
    if airlight is None:
        grey = rng.uniform(*HAZE_AIRLIGHT_RANGE)
        tint = rng.uniform(-HAZE_TINT, HAZE_TINT, size=x.shape[-1]) if x.shape[-1] == 3 else 0.0
        airlight = np.clip(grey + tint, 0.0, 1.0)
    airlight = np.broadcast_to(np.asarray(airlight, np.float32), (x.shape[-1],))
    if depth is None:
        depth = depth_proxy(x, rng, near=draw(None, *HAZE_NEAR_RANGE, rng))
    elif depth.shape != x.shape[:2]:
        raise ValueError(f"depth must have shape {x.shape[:2]}, got {depth.shape}")
    t = np.exp(-beta * depth.astype(np.float32))[:, :, None]
    return finish(x * t + airlight * (1.0 - t))
