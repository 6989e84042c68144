"""Layer geometry and placement of output and map layers (Qt-free)."""

from __future__ import annotations

import numpy as np
import pytest
from napari.layers import Image, Points

from slerir_plugin._layers import LayerError, geometry, map_properties, output_properties


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
