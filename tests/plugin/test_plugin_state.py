"""Shared state: plan cache keys, the model spec's name, the channels option of a layer."""

from __future__ import annotations

import numpy as np

from slerir_plugin._state import ModelSpec, channels_option, image_fingerprint


def test_fingerprint_follows_content():
    a = np.random.default_rng(0).random((64, 64), dtype=np.float32)
    assert image_fingerprint(a) == image_fingerprint(a.copy())
    b = a.copy()
    b[0, 0] += 1
    assert image_fingerprint(a) != image_fingerprint(b)
    assert image_fingerprint(a) != image_fingerprint(a.astype(np.float64))


def test_model_spec_describes_itself():
    assert ModelSpec().describe() == "shipped default"
    assert ModelSpec(weights="/w.safetensors").describe() == "/w.safetensors"
    assert ModelSpec(config="tiny").describe() == "untrained 'tiny' config"


def test_colour_layers_are_restored_as_colour_whatever_their_dtype():
    assert channels_option("YXC") == channels_option("TZYXC") == "rgb"  # napari gives a C axis to rgb layers only
    assert channels_option("ZYX") == channels_option("YX") == channels_option(None) == "auto"
