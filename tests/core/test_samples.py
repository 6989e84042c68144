"""Sample images: small, deterministic, visibly degraded, from held-out pictures where the demo uses them."""

from __future__ import annotations

import numpy as np
import pytest

from slerir_core import samples
from slerir_core.clean_images import SKIMAGE_SOURCES


@pytest.mark.parametrize("key", list(samples.PHOTO_SAMPLES))
def test_photo_samples_are_small_deterministic_and_degraded(key):
    data = samples.degraded_photo(key)
    np.testing.assert_array_equal(data, samples.degraded_photo(key))
    assert data.dtype == np.uint8 and data.ndim == 3 and data.shape[2] == 3 and max(data.shape[:2]) <= 256
    clean = np.round(samples.clean_photo(samples.PHOTO_SAMPLES[key].source) * 255)
    assert np.abs(data.astype(float) - clean).mean() > 2  # visibly degraded


def test_the_demo_sample_is_held_out_of_training():
    assert SKIMAGE_SOURCES[samples.PHOTO_SAMPLES["noisy"].source].split == "test"


def test_unknown_sample_names_the_known_ones():
    with pytest.raises(KeyError, match="noisy, rainy"):
        samples.degraded_photo("foggy")


def test_cells_stack_is_a_deterministic_uint16_stack():
    data, provenance = samples.noisy_cells_stack()
    assert data.dtype == np.uint16 and data.ndim == 3 and data.shape[0] > 1 and max(data.shape) <= 256
    np.testing.assert_array_equal(data, samples.noisy_cells_stack()[0])
    assert provenance["degradation"] == "micro_noise"
