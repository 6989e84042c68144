"""Sample data: layer data with provenance, listed under File ▸ Open Sample and opening in a viewer."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from slerir_plugin import _sample_data

KEYS = ("noisy", "rainy", "hazy", "blurred", "dark", "cells")


def test_photo_layer_data_names_its_picture_and_degradation():
    ((data, meta),) = _sample_data.make_noisy()
    assert data.dtype == np.uint8 and meta["rgb"] and meta["name"] == "chelsea (noisy)"
    assert meta["metadata"]["slerir_sample"]["degradation"] == "noise"


def test_cells_stack_layer_data_is_placed_in_z():
    ((data, meta),) = _sample_data.make_cells_stack()
    assert data.dtype == np.uint16 and data.ndim == 3
    assert meta["scale"] == (2.0, 1.0, 1.0) and meta["axis_labels"] == ("z", "y", "x")


def test_menu_names_the_right_picture():
    """File ▸ Open Sample names each photo's picture: the manifest's text matches what opens."""
    from npe2 import PluginManifest

    from slerir_core.samples import PHOTO_SAMPLES

    manifest = PluginManifest.from_file(Path(_sample_data.__file__).parent / "napari.yaml")
    for sample in manifest.contributions.sample_data:
        if sample.key in PHOTO_SAMPLES:
            assert f"({PHOTO_SAMPLES[sample.key].source}" in sample.display_name, sample.display_name


@pytest.mark.gui
def test_samples_open_in_the_viewer(make_napari_viewer):
    viewer = make_napari_viewer()
    for key in KEYS:
        viewer.open_sample("slerir", key)
    assert len(viewer.layers) == len(KEYS)
    assert viewer.layers["nuclei (noisy stack)"].data.shape[0] > 1
    assert viewer.layers["chelsea (noisy)"].rgb
