"""Qt-free parts of the plugin: layer geometry and placement, map upsampling, plan cache keys, job errors."""

from __future__ import annotations

import numpy as np
import pytest
from napari.layers import Image, Points

from slerir_core.errors import ConfigError, WeightsError
from slerir_plugin._layers import LayerError, geometry, map_properties, output_properties
from slerir_plugin._state import ModelSpec, image_fingerprint
from slerir_plugin._workers import Failed, _failure, degradation_maps, resolve_routes, upsample


@pytest.mark.parametrize(
    ("shape", "rgb", "axes", "leading"),
    [
        ((32, 40), False, "YX", 0),
        ((32, 40, 3), True, "YXC", 0),
        ((32, 40, 4), True, "YXC", 0),
        ((5, 32, 40), False, "ZYX", 1),
        ((2, 5, 32, 40, 3), True, "TZYXC", 2),
        ((2, 2, 5, 32, 40), False, "STZYX", 3),
    ],
)
def test_geometry_axes(shape, rgb, axes, leading):
    geo = geometry(Image(np.zeros(shape, np.uint8), rgb=rgb))
    assert (geo.axes, geo.leading, geo.rgb) == (axes, leading, rgb)
    assert geo.plane_shape == (32, 40)


def test_geometry_rejects_unusable_layers():
    with pytest.raises(LayerError, match="Choose an image layer"):
        geometry(None)
    with pytest.raises(LayerError, match="not an image layer"):
        geometry(Points(np.zeros((2, 2))))
    with pytest.raises(LayerError, match="at least 8×8"):
        geometry(Image(np.zeros((4, 4))))
    with pytest.raises(LayerError, match="at most 3 stack axes"):
        geometry(Image(np.zeros((2, 2, 2, 2, 16, 16))))
    with pytest.raises(LayerError, match="multiscale"):
        geometry(Image([np.zeros((64, 64)), np.zeros((32, 32))], multiscale=True))


def test_output_properties_copy_placement_and_move_a_slice():
    layer = Image(
        np.zeros((5, 32, 40), np.uint16),
        scale=(2.0, 0.5, 0.25),
        translate=(10.0, 1.0, 2.0),
        axis_labels=("z", "y", "x"),
        contrast_limits=(100, 900),
    )
    props = output_properties(layer)
    assert props["scale"] == (2.0, 0.5, 0.25) and props["translate"] == (10.0, 1.0, 2.0)
    assert props["axis_labels"] == ("z", "y", "x") and props["contrast_limits"] == (100.0, 900.0)
    assert output_properties(layer, (3,))["translate"] == (16.0, 1.0, 2.0)  # slice 3 sits at z = 10 + 3·2


def test_map_properties_cover_the_plane():
    layer = Image(np.zeros((32, 40)), scale=(0.5, 0.5), translate=(1.0, 2.0))
    props = map_properties(layer, (), (8, 10))
    # A map sample covers 4×4 pixels: its centre is 1.5 pixels in from the covered block's first pixel.
    assert props["scale"] == (2.0, 2.0)
    assert props["translate"] == (1.0 + 0.5 * 1.5, 2.0 + 0.5 * 1.5)
    assert props["rgb"] is False and "contrast_limits" not in props


def test_upsample_is_bilinear_and_keeps_range():
    maps = np.array([[[0.0, 1.0], [1.0, 0.0]]], np.float32)
    up = upsample(maps, (4, 4))
    assert up.shape == (1, 4, 4) and up.dtype == np.float32
    assert up.min() >= 0 and up.max() <= 1
    np.testing.assert_allclose(up[0, 0, 0], 0.0)
    # Output pixel 1 sits a quarter of the way between map cells 0 and 1 along each axis.
    top, bottom = 0.75 * 0.0 + 0.25 * 1.0, 0.75 * 1.0 + 0.25 * 0.0
    np.testing.assert_allclose(up[0, 1, 1], 0.75 * top + 0.25 * bottom, atol=1e-6)
    np.testing.assert_allclose(upsample(maps, (2, 2)), maps)


def test_degradation_maps_fall_back_to_experts():
    class P:
        degradation_map = np.full((3, 4, 4), 1 / 3, np.float32)
        task_map = None

    class Info:
        tasks = ()

    maps, names = degradation_maps(P(), Info())
    assert maps.shape == (3, 4, 4) and names == ["expert 1", "expert 2", "expert 3"]
    P.task_map = np.full((2, 4, 4), 0.5, np.float32)
    Info.tasks = ("noise", "rain")
    maps, names = degradation_maps(P(), Info())
    assert names == ["noise", "rain"] and maps.shape == (2, 4, 4)


def test_fingerprint_follows_content():
    a = np.random.default_rng(0).random((64, 64), dtype=np.float32)
    assert image_fingerprint(a) == image_fingerprint(a.copy())
    b = a.copy()
    b[0, 0] += 1
    assert image_fingerprint(a) != image_fingerprint(b)
    assert image_fingerprint(a) != image_fingerprint(a.astype(np.float64))


def test_resolve_routes_fills_auto_from_the_plan():
    from types import SimpleNamespace

    plan = SimpleNamespace(routes=[2] * 8)
    assert resolve_routes([None, 0, None, 1, None, None, None, 0], plan) == [2, 0, 2, 1, 2, 2, 2, 0]


def test_errors_users_can_act_on_become_messages():
    oom = _failure(RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB"))
    assert isinstance(oom, Failed) and "Out of GPU memory" in oom.message and "tile" in oom.message
    cpu_oom = _failure(RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 9 GB"))
    assert isinstance(cpu_oom, Failed) and cpu_oom.message.startswith("Out of memory: choose a smaller tile")
    assert _failure(MemoryError()).message.startswith("Out of memory")

    assert _failure(WeightsError("bad header")).message.startswith("Could not load the weights file")
    assert _failure(ConfigError("unknown config 'x'")).message.startswith("Bad model configuration")
    assert _failure(ValueError("axes 'ZYX' has 3 letters")).message == "axes 'ZYX' has 3 letters"
    assert _failure(KeyError("bug")) is None  # bugs propagate with their traceback


def test_model_spec_describes_itself():
    assert ModelSpec().describe() == "shipped default"
    assert ModelSpec(weights="/w.safetensors").describe() == "/w.safetensors"
    assert ModelSpec(config="tiny").describe() == "untrained 'tiny' config"


def test_colour_layers_are_restored_as_colour_whatever_their_dtype():
    from slerir_plugin._state import channel_mode

    assert channel_mode("YXC") == channel_mode("TZYXC") == "rgb"  # napari gives a C axis to rgb layers only
    assert channel_mode("ZYX") == channel_mode("YX") == channel_mode(None) == "auto"
