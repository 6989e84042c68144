"""Sample data (File ▸ Open Sample ▸ SLER-IR): the degraded pictures of :mod:`slerir_core.samples` as layers."""

from __future__ import annotations

from typing import Any

import numpy as np

LayerData = list[tuple[np.ndarray, dict[str, Any]]]


def degraded_photo(key: str) -> LayerData:
    """One photo sample as napari layer data: uint8 RGB, named after its picture and degradation."""
    from slerir_core.samples import PHOTO_SAMPLES, degraded_photo

    sample = PHOTO_SAMPLES[key]
    meta = {"slerir_sample": sample.provenance()}
    return [(degraded_photo(key), {"name": f"{sample.source} ({key})", "rgb": True, "metadata": meta})]


def make_noisy() -> LayerData:
    """Chelsea the cat with Gaussian noise (σ = 25 grey levels)."""
    return degraded_photo("noisy")


def make_rainy() -> LayerData:
    """Astronaut behind rain streaks."""
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


def make_cells_stack() -> LayerData:
    """A noisy fluorescence z-stack (nuclei), Poisson–Gaussian noise, uint16 like a camera's file."""
    from slerir_core.samples import noisy_cells_stack

    data, provenance = noisy_cells_stack()
    meta = {"slerir_sample": provenance}
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
