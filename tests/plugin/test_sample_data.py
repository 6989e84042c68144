"""Sample data: small, deterministic, degraded, and listed under File ▸ Open Sample."""

from __future__ import annotations

import numpy as np
import pytest

from slerir_plugin import _sample_data

KEYS = ("noisy", "rainy", "hazy", "blurred", "dark", "cells")


@pytest.mark.parametrize("key", ["noisy", "rainy", "hazy", "blurred", "dark"])
def test_photo_samples_are_small_deterministic_and_degraded(key):
    ((data, meta),) = _sample_data.degraded_photo(key)
    ((again, _),) = _sample_data.degraded_photo(key)
    np.testing.assert_array_equal(data, again)
    assert data.dtype == np.uint8 and data.ndim == 3 and data.shape[2] == 3 and max(data.shape[:2]) <= 256
    clean = np.round(_sample_data._photo(_sample_data.PHOTO_SAMPLES[key][0]) * 255)
    assert np.abs(data.astype(float) - clean).mean() > 2  # visibly degraded
    assert meta["rgb"] and meta["metadata"]["slerir_sample"]["degradation"]


def test_cells_stack_sample():
    ((data, meta),) = _sample_data.make_cells_stack()
    assert data.dtype == np.uint16 and data.ndim == 3 and max(data.shape) <= 256
    assert meta["scale"] == (2.0, 1.0, 1.0) and meta["axis_labels"] == ("z", "y", "x")
    ((again, _),) = _sample_data.make_cells_stack()
    np.testing.assert_array_equal(data, again)


@pytest.mark.gui
def test_samples_open_in_the_viewer(make_napari_viewer):
    viewer = make_napari_viewer()
    for key in KEYS:
        viewer.open_sample("slerir", key)
    assert len(viewer.layers) == len(KEYS)
    assert viewer.layers["nuclei (noisy stack)"].data.shape[0] > 1
    assert viewer.layers["astronaut (noisy)"].rgb
