"""Sample data (File ▸ Open Sample ▸ SLER-IR): bundled images with one synthetic degradation each.

The photographs ship inside scikit-image's wheel (astronaut, chelsea, coffee, rocket), so nothing is
downloaded; each is scaled to at most 256 pixels a side and degraded by :mod:`slerir_core.degradations`
with a fixed seed, so every call gives the same image. The microscopy sample is scikit-image's
``cells3d`` nuclei when that file is already in the local cache, otherwise a procedural stack of
textured nuclei; either way with Poisson–Gaussian (shot + read) noise.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

MAX_SIDE = 256
LayerData = list[tuple[np.ndarray, dict[str, Any]]]

# sample key -> (scikit-image image, degradation task, its parameters, seed)
PHOTO_SAMPLES: dict[str, tuple[str, str, dict[str, Any], int]] = {
    "noisy": ("astronaut", "noise", {"sigma": 25.0}, 1),
    "rainy": ("chelsea", "rain", {"density": 0.006, "intensity": 0.8}, 2),
    "hazy": ("coffee", "haze", {"beta": 1.6}, 3),
    "blurred": ("rocket", "blur", {"kind": "motion", "length": 15.0}, 4),
    "dark": ("astronaut", "lowlight", {"exposure": 0.12}, 5),
}


def _photo(name: str) -> np.ndarray:
    """A bundled scikit-image photo as float32 RGB in [0, 1], at most ``MAX_SIDE`` pixels a side."""
    import skimage.data
    from skimage.transform import rescale

    image = getattr(skimage.data, name)()
    image = image[..., :3].astype(np.float32) / 255.0
    factor = MAX_SIDE / max(image.shape[:2])
    if factor < 1:
        image = rescale(image, factor, anti_aliasing=True, channel_axis=-1, preserve_range=True)
    return np.clip(image, 0.0, 1.0).astype(np.float32)


def degraded_photo(key: str) -> LayerData:
    """One photo sample as napari layer data: uint8 RGB, like a camera's file."""
    from slerir_core.degradations import degrade

    source, task, params, seed = PHOTO_SAMPLES[key]
    degraded = degrade(_photo(source), task, np.random.default_rng(seed), **params)
    data = np.round(np.clip(degraded, 0.0, 1.0) * 255).astype(np.uint8)
    meta = {"slerir_sample": {"source": f"skimage.data.{source}", "degradation": task, "params": params, "seed": seed}}
    return [(data, {"name": f"{source} ({key})", "rgb": True, "metadata": meta})]


def make_noisy() -> LayerData:
    """Astronaut with Gaussian noise (σ = 25 grey levels)."""
    return degraded_photo("noisy")


def make_rainy() -> LayerData:
    """Chelsea the cat behind rain streaks."""
    return degraded_photo("rainy")


def make_hazy() -> LayerData:
    """Coffee cup in haze."""
    return degraded_photo("hazy")


def make_blurred() -> LayerData:
    """Rocket with motion blur."""
    return degraded_photo("blurred")


def make_dark() -> LayerData:
    """Astronaut in low light (dim, with shot noise)."""
    return degraded_photo("dark")


def _cached_cells3d() -> np.ndarray | None:
    """scikit-image's cells3d nuclei channel, only if already downloaded (never fetches)."""
    try:
        from skimage.data._fetchers import _image_fetcher, data_dir

        cache = str(_image_fetcher.abspath) if _image_fetcher is not None else os.path.dirname(data_dir)
        if not os.path.isfile(os.path.join(cache, "data", "cells3d.tif")):
            return None
        import skimage.data

        return skimage.data.cells3d()[:, 1]  # (60, 256, 256) uint16 nuclei
    except Exception:  # a private API or a corrupt cache: fall back to the procedural stack
        return None


def blob_stack(shape: tuple[int, int, int] = (16, 128, 128), cells: int = 28, seed: int = 0) -> np.ndarray:
    """A procedural fluorescence stack: textured ellipsoidal nuclei, float32 in [0, 1].

    Args:
        shape: (Z, Y, X).
        cells: number of nuclei.
        seed: random seed.
    """
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(seed)
    z, y, x = np.ogrid[: shape[0], : shape[1], : shape[2]]
    volume = np.zeros(shape, np.float32)
    texture = gaussian_filter(rng.standard_normal(shape).astype(np.float32), (1.0, 2.0, 2.0))
    texture /= np.abs(texture).max()
    for _ in range(cells):
        cz, cy, cx = (rng.uniform(0, n) for n in shape)
        rz, ry, rx = rng.uniform(2.5, 4.5), rng.uniform(7, 13), rng.uniform(7, 13)
        inside = ((z - cz) / rz) ** 2 + ((y - cy) / ry) ** 2 + ((x - cx) / rx) ** 2 <= 1
        volume = np.maximum(volume, inside * rng.uniform(0.35, 1.0))
    volume = gaussian_filter(volume * (1 + 0.35 * texture), (0.8, 1.2, 1.2)) + 0.03
    return np.clip(volume / volume.max(), 0.0, 1.0).astype(np.float32)


def make_cells_stack() -> LayerData:
    """A noisy fluorescence z-stack (nuclei), Poisson–Gaussian noise, uint16 like a camera's file."""
    from slerir_core.degradations import degrade

    cached = _cached_cells3d()
    if cached is not None:
        clean = cached[20:36, ::2, ::2].astype(np.float32)  # 16 planes, 128 px: small enough to be quick
        clean = (clean - clean.min()) / max(float(np.ptp(clean)), 1.0)
        source = "skimage.data.cells3d (nuclei)"
    else:
        clean = blob_stack()
        source = "procedural nuclei"
    rng = np.random.default_rng(6)
    noisy = np.stack([degrade(p[..., None], "micro_noise", rng, peak=12.0, read_sigma=0.02)[..., 0] for p in clean])
    data = np.round(noisy * 4000).astype(np.uint16)
    meta = {
        "slerir_sample": {
            "source": source,
            "degradation": "micro_noise",
            "params": {"peak": 12.0, "read_sigma": 0.02},
            "seed": 6,
        }
    }
    return [
        (
            data,
            {
                "name": "nuclei (noisy stack)",
                "scale": (2.0, 1.0, 1.0),
                "axis_labels": ("z", "y", "x"),
                "colormap": "green",
                "metadata": meta,
            },
        )
    ]
