"""Sample images: bundled scikit-image pictures with one synthetic degradation each, made on demand.

The photographs ship inside scikit-image's wheel, so nothing is downloaded; each is scaled to at most
``MAX_SIDE`` pixels a side and degraded by :mod:`slerir_core.degradations` with a fixed seed, so every
call gives the same image. The ``noisy`` sample (the demo's default) uses chelsea, an image held out of
training (``slerir_core.clean_images``). The microscopy stack is scikit-image's ``cells3d`` nuclei when
that file is already in the local cache, otherwise a procedural stack of textured nuclei; either way with
Poisson–Gaussian (shot + read) noise.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np

MAX_SIDE = 256
CELLS_NOISE = {"peak": 12.0, "read_sigma": 0.02}
CELLS_SEED = 6


@dataclass(frozen=True)
class PhotoSample:
    """A recipe: a scikit-image picture, a degradation task with its parameters, and a seed."""

    source: str
    task: str
    params: dict[str, Any] = field(default_factory=dict)
    seed: int = 0

    def provenance(self) -> dict[str, Any]:
        """Where the sample came from, for layer metadata and reports."""
        return {
            "source": f"skimage.data.{self.source}",
            "degradation": self.task,
            "params": self.params,
            "seed": self.seed,
        }


PHOTO_SAMPLES: dict[str, PhotoSample] = {
    "noisy": PhotoSample("chelsea", "noise", {"sigma": 25.0}, 1),
    "rainy": PhotoSample("astronaut", "rain", {"density": 0.006, "intensity": 0.8}, 2),
    "hazy": PhotoSample("coffee", "haze", {"beta": 1.6}, 3),
    "blurred": PhotoSample("rocket", "blur", {"kind": "motion", "length": 15.0}, 4),
    "dark": PhotoSample("astronaut", "lowlight", {"exposure": 0.12}, 5),
}


def clean_photo(name: str) -> np.ndarray:
    """A bundled scikit-image photo as float32 RGB in [0, 1], at most ``MAX_SIDE`` pixels a side."""
    import skimage.data
    from skimage.transform import rescale

    image = getattr(skimage.data, name)()
    image = image[..., :3].astype(np.float32) / 255.0
    factor = MAX_SIDE / max(image.shape[:2])
    if factor < 1:
        image = rescale(image, factor, anti_aliasing=True, channel_axis=-1, preserve_range=True)
    return np.clip(image, 0.0, 1.0).astype(np.float32)


def degraded_photo(key: str) -> np.ndarray:
    """The photo sample ``key`` (a key of ``PHOTO_SAMPLES``) as uint8 RGB, like a camera's file.

    Raises:
        KeyError: an unknown sample, with the known ones.
    """
    if key not in PHOTO_SAMPLES:
        raise KeyError(f"no sample {key!r}; choose from {', '.join(PHOTO_SAMPLES)}")
    from slerir_core.degradations import degrade

    sample = PHOTO_SAMPLES[key]
    degraded = degrade(clean_photo(sample.source), sample.task, np.random.default_rng(sample.seed), **sample.params)
    return np.round(np.clip(degraded, 0.0, 1.0) * 255).astype(np.uint8)


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


def noisy_cells_stack() -> tuple[np.ndarray, dict[str, Any]]:
    """A noisy fluorescence z-stack (nuclei) as uint16 (Z, Y, X), like a camera's file, and its provenance."""
    from slerir_core.degradations import degrade

    cached = _cached_cells3d()
    if cached is not None:
        clean = cached[20:36, ::2, ::2].astype(np.float32)  # 16 planes, 128 px: small enough to be quick
        clean = (clean - clean.min()) / max(float(np.ptp(clean)), 1.0)
        source = "skimage.data.cells3d (nuclei)"
    else:
        clean = blob_stack()
        source = "procedural nuclei"
    rng = np.random.default_rng(CELLS_SEED)
    noisy = np.stack([degrade(p[..., None], "micro_noise", rng, **CELLS_NOISE)[..., 0] for p in clean])
    provenance = {"source": source, "degradation": "micro_noise", "params": CELLS_NOISE, "seed": CELLS_SEED}
    return np.round(noisy * 4000).astype(np.uint16), provenance
