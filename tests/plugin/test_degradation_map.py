"""The Degradation map widget: one overlay per degradation (or expert), aligned, styled, not piling up."""

from __future__ import annotations

import numpy as np
import pytest

from slerir_plugin._state import STATE
from slerir_plugin._widgets.degradation_map import MAP_SEPARATOR

pytestmark = pytest.mark.gui


@pytest.fixture
def map_widget(docked):
    return docked("Degradation map")


def test_maps_appear_over_the_image(map_widget, rgb_image, wait_job):
    viewer, widget = map_widget
    widget._image.value = viewer.add_image(rgb_image, name="photo", scale=(0.5, 0.5), translate=(1.0, 2.0))
    widget.show_maps()
    wait_job(widget)
    names = [f"photo{MAP_SEPARATOR}expert {i}" for i in (1, 2, 3)]  # the tiny model has no task labels
    assert [layer.name for layer in widget.map_layers()] == names
    colormaps = set()
    for name in names:
        layer = viewer.layers[name]
        assert layer.data.shape == rgb_image.shape[:2] and layer.data.dtype == np.float32
        assert layer.data.min() >= 0.0 and layer.data.max() <= 1.0
        assert layer.opacity == 0.5 and layer.blending == "additive" and tuple(layer.contrast_limits) == (0, 1)
        assert tuple(layer.scale) == (0.5, 0.5) and tuple(layer.translate) == (1.0, 2.0)
        assert layer.metadata["slerir"]["routes"] == [int(r) for r in STATE.last_plan.routes]
        colormaps.add(layer.colormap.name)
    assert len(colormaps) == 3
    # The maps are the plan's 4×4 expert map, upsampled: their sum is 1 everywhere.
    total = sum(viewer.layers[n].data for n in names)
    np.testing.assert_allclose(total, 1.0, atol=1e-4)
    assert "no task labels" in widget._label.value  # the whole-image label needs task prototypes
    assert STATE.last_plan_layer == "photo"  # shared, so the Routes widget shows the same analysis

    # Style changes apply to the shown maps; a second run updates them instead of adding more.
    widget._blending.value = "translucent"
    widget._opacity.value = 0.3
    assert all(lyr.blending == "translucent" and abs(lyr.opacity - 0.3) < 1e-6 for lyr in widget.map_layers())
    n_layers = len(viewer.layers)
    widget.show_maps()
    wait_job(widget)
    assert len(viewer.layers) == n_layers


def test_maps_of_a_stack_sit_on_the_current_slice(map_widget, stack, wait_job):
    viewer, widget = map_widget
    layer = viewer.add_image(stack, name="cells", scale=(2.0, 1.0, 1.0))
    widget._image.value = layer
    viewer.dims.set_current_step(0, 1)
    widget.show_maps()
    wait_job(widget)
    maps = widget.map_layers()
    assert len(maps) == 3
    for m in maps:
        assert m.data.shape == (1, 32, 40)
        assert tuple(m.translate) == (2.0, 0.0, 0.0) and m.metadata["slerir"]["slice"] == [1]
    assert viewer.layers.selection.active is layer


def test_large_images_get_coarser_maps(map_widget, wait_job):
    viewer, widget = map_widget
    big = np.random.default_rng(3).random((40, 600), dtype=np.float32)
    widget._image.value = viewer.add_image(big, name="wide")
    widget.show_maps()
    wait_job(widget)
    m = widget.map_layers()[0]
    assert m.data.shape == (34, 512)  # at most 512 px a side, scaled to cover the image
    np.testing.assert_allclose(m.scale[1] * 512, 600)
