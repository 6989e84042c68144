"""Array layout: axes inference and checks, how channels reach the model, the canonical view, API inputs."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from slerir_core.errors import ImageError
from slerir_core.io.layout import describe_channels, infer_axes, make_layout, to_array


@pytest.mark.parametrize(
    ("shape", "axes"),
    [
        ((30, 40), "YX"),
        ((30, 40, 3), "YXC"),
        ((30, 40, 4), "YXC"),
        ((30, 40, 1), "YXC"),
        ((5, 30, 40), "ZYX"),
        ((5, 30, 40, 3), "ZYXC"),
        ((2, 5, 30, 40), "TZYX"),
    ],
)
def test_infer_axes(shape, axes):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # none of these is ambiguous enough to warn
        assert infer_axes(shape) == axes


@pytest.mark.parametrize("shape", [(3, 30, 40), (2, 30, 40), (4, 30, 40)])
def test_channels_first_shapes_are_read_as_slices_with_a_warning(shape):
    with pytest.warns(UserWarning, match=r"read as ZYX .*axes='CYX'"):
        assert infer_axes(shape) == "ZYX"


@pytest.mark.parametrize("shape", [(2, 2, 3, 30, 40), (30,), (1, 2, 3, 4, 5, 6)])
def test_infer_axes_refuses_ambiguous_shapes(shape):
    with pytest.raises(ImageError, match=r"axes|at least 2"):
        infer_axes(shape)


@pytest.mark.parametrize(("axes", "message"), [("ZYX", "letters"), ("YYX", "repeats"), ("ZYC", "Y and X")])
def test_bad_axes_are_refused(axes, message):
    with pytest.raises(ImageError, match=message):
        make_layout((2, 3, 4, 5) if axes == "ZYX" else (2, 3, 4), axes)


PER_CHANNEL3 = ((0, 1), (1, 2), (2, 3))


@pytest.mark.parametrize(
    ("shape", "axes", "channels", "dtype", "handling", "groups", "passthrough"),
    [
        ((8, 9), None, "auto", np.uint16, "grey", ((0, 1),), ()),
        ((8, 9, 3), None, "auto", np.uint8, "rgb", ((0, 3),), ()),
        ((8, 9, 4), None, "auto", np.uint8, "rgba", ((0, 3),), (3,)),
        ((8, 9, 3), None, "grey", np.uint8, "channels", PER_CHANNEL3, ()),
        ((2, 8, 9), "CYX", "auto", np.uint8, "channels", ((0, 1), (1, 2)), ()),
        ((8, 9, 5), "YXC", "auto", np.uint8, "channels", tuple((c, c + 1) for c in range(5)), ()),
        # Microscopy: channels are not colours unless someone says so.
        ((4, 8, 9), "CYX", "auto", np.uint16, "channels", ((0, 1), (1, 2), (2, 3), (3, 4)), ()),
        ((3, 8, 9), "CYX", "auto", np.uint8, "channels", PER_CHANNEL3, ()),
        ((8, 9, 3), "YXC", "auto", np.uint16, "channels", PER_CHANNEL3, ()),
        ((8, 9, 4), "YXC", "auto", np.uint16, "channels", ((0, 1), (1, 2), (2, 3), (3, 4)), ()),
        ((8, 9, 3), "YXC", "auto", np.float32, "channels", PER_CHANNEL3, ()),
        ((8, 9, 2), "YXC", "auto", np.uint16, "channels", ((0, 1), (1, 2)), ()),
        ((8, 9, 3), "YXC", "auto", None, "channels", PER_CHANNEL3, ()),
        ((8, 9, 3), "YXC", "rgb", np.uint16, "rgb", ((0, 3),), ()),
        ((4, 8, 9), "CYX", "rgb", np.uint16, "rgba", ((0, 3),), (3,)),
        ((8, 9, 3), "YXC", "rgb", np.float32, "rgb", ((0, 3),), ()),
    ],
)
def test_layout_channel_handling(shape, axes, channels, dtype, handling, groups, passthrough):
    layout = make_layout(shape, axes, channels, dtype)
    assert (layout.channel_handling, layout.groups, layout.passthrough) == (handling, groups, passthrough)


def test_reports_say_how_channels_are_restored():
    texts = [
        describe_channels(make_layout(shape, axes, dtype=dtype))
        for shape, axes, dtype in [
            ((8, 9), None, np.uint8),
            ((8, 9, 3), None, np.uint8),
            ((8, 9, 4), None, np.uint8),
            ((4, 8, 9), "CYX", np.uint16),
        ]
    ]
    assert texts == ["grey", "RGB", "RGBA (alpha copied)", "4 channels, each on its own"]


def test_layout_refuses_rgb_of_two_channels_and_empty_arrays():
    with pytest.raises(ImageError, match="3 or 4 channels"):
        make_layout((2, 8, 9), "CYX", "rgb")
    with pytest.raises(ImageError, match="empty"):
        make_layout((0, 9))
    with pytest.raises(ImageError, match="channels must be"):
        make_layout((8, 9), channels="colour")


def test_canonical_view_is_a_view_and_inverts():
    a = np.arange(2 * 3 * 2 * 5 * 6, dtype=np.uint16).reshape(2, 3, 2, 5, 6)
    layout = make_layout(a.shape, "TZCYX")
    canon = layout.canonical(a)
    assert canon.shape == (2, 3, 5, 6, 2) and np.shares_memory(canon, a)
    assert canon[1, 2, 4, 5, 1] == a[1, 2, 1, 4, 5]
    assert np.array_equal(layout.original(canon), a)
    assert layout.stack_axes == "TZ" and layout.stack_shape == (2, 3) and (layout.height, layout.width) == (5, 6)
    grey = make_layout((4, 5))
    assert grey.canonical(np.zeros((4, 5))).shape == (4, 5, 1)


def test_api_inputs_become_arrays_or_clear_errors():
    tensor = torch.rand(3, 16, 16)
    assert np.array_equal(to_array(tensor), tensor.numpy())
    with pytest.raises(ImageError, match=r"requires grad; pass image\.detach\(\)"):
        to_array(torch.rand(16, 16, requires_grad=True))
    with pytest.raises(ImageError, match="ragged"):
        to_array([[1, 2, 3], [4, 5]])
    assert to_array([[1, 2], [3, 4]]).shape == (2, 2)
