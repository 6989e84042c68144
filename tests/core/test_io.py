"""Arrays and files: axes, channel modes, dtype scaling, reading and atomic writing."""

from __future__ import annotations

import numpy as np
import pytest

from slerir_core import io
from slerir_core.io import ImageError, Scaling, infer_axes, make_layout, read_image, write_image


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
    assert infer_axes(shape) == axes


@pytest.mark.parametrize("shape", [(2, 2, 3, 30, 40), (30,), (1, 2, 3, 4, 5, 6)])
def test_infer_axes_refuses_ambiguous_shapes(shape):
    with pytest.raises(ImageError, match=r"axes|at least 2"):
        infer_axes(shape)


@pytest.mark.parametrize(("axes", "message"), [("ZYX", "letters"), ("YYX", "repeats"), ("ZYC", "Y and X")])
def test_bad_axes_are_refused(axes, message):
    with pytest.raises(ImageError, match=message):
        make_layout((2, 3, 4, 5) if axes == "ZYX" else (2, 3, 4), axes)


@pytest.mark.parametrize(
    ("shape", "axes", "channels", "mode", "groups", "passthrough"),
    [
        ((8, 9), None, "auto", "grey", ((0, 1),), ()),
        ((8, 9, 3), None, "auto", "rgb", ((0, 3),), ()),
        ((8, 9, 4), None, "auto", "rgba", ((0, 3),), (3,)),
        ((8, 9, 3), None, "grey", "channels", ((0, 1), (1, 2), (2, 3)), ()),
        ((2, 8, 9), "CYX", "auto", "channels", ((0, 1), (1, 2)), ()),
        ((8, 9, 5), "YXC", "auto", "channels", tuple((c, c + 1) for c in range(5)), ()),
    ],
)
def test_layout_modes(shape, axes, channels, mode, groups, passthrough):
    layout = make_layout(shape, axes, channels)
    assert (layout.mode, layout.groups, layout.passthrough) == (mode, groups, passthrough)


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


def scaling_for(array: np.ndarray, axes: str | None = None) -> tuple[Scaling, np.ndarray]:
    layout = make_layout(array.shape, axes)
    canon = layout.canonical(array)
    return Scaling.fit(canon, layout), canon


def test_uint8_uses_the_fixed_range():
    scaling, canon = scaling_for(np.array([[10, 20], [30, 40]], np.uint8))
    unit = scaling.to_unit(canon, (0, 1))
    assert unit.dtype == np.float32 and np.allclose(unit[..., 0], np.array([[10, 20], [30, 40]]) / 255)


@pytest.mark.parametrize("dtype", [np.uint16, np.int16, np.float32, np.float64])
def test_other_dtypes_use_their_own_range_and_round_trip(dtype):
    rng = np.random.default_rng(0)
    a = (rng.random((6, 7, 3)) * 3000 - (1000 if dtype != np.uint16 else 0) + 500).astype(dtype)
    scaling, canon = scaling_for(a)
    unit = scaling.to_unit(canon, (0, 3))
    assert unit.min() == pytest.approx(0.0, abs=1e-6) and unit.max() == pytest.approx(1.0, abs=1e-6)
    back = scaling.from_unit(unit, (0, 3))
    assert back.dtype == dtype
    if np.dtype(dtype).kind == "f":
        assert np.allclose(back, a, rtol=1e-5, atol=1e-3)
    else:
        assert np.array_equal(back, a)


def test_floats_in_the_unit_range_are_used_as_they_are():
    dark = np.linspace(0.02, 0.2, 30, dtype=np.float32).reshape(5, 6)
    scaling, canon = scaling_for(dark)
    assert np.array_equal(scaling.to_unit(canon, (0, 1))[..., 0], dark)
    assert np.array_equal(scaling.from_unit(canon.astype(np.float32), (0, 1)), canon)


def test_integers_are_rounded_and_clipped_to_the_dtype_range():
    scaling, _ = scaling_for(np.array([[0, 1000]], np.uint16))
    back = scaling.from_unit(np.array([[[-0.5], [0.0004], [0.0006], [70.0]]], np.float32), (0, 1))
    assert back.tolist() == [[[0], [0], [1], [65535]]]


def test_channels_restored_one_by_one_get_their_own_range_and_rgb_shares_one():
    a = np.stack([np.linspace(0, 10, 20), np.linspace(100, 4000, 20)], axis=-1).reshape(4, 5, 2)
    separate, _ = scaling_for(a.astype(np.float32), "YXC")
    assert separate.offset.tolist() == [0, 100] and np.allclose(separate.scale, [10, 3900])
    rgb = np.stack([a[..., 0], a[..., 1], a[..., 1]], axis=-1).astype(np.uint16)
    shared, _ = scaling_for(rgb)
    assert len(set(shared.offset.tolist())) == 1 and len(set(shared.scale.tolist())) == 1


def test_constant_images_do_not_divide_by_zero():
    scaling, canon = scaling_for(np.full((4, 4), 7.5, np.float32))
    unit = scaling.to_unit(canon, (0, 1))
    assert np.all(unit == 0) and np.all(scaling.from_unit(unit, (0, 1)) == 7.5)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_values_are_refused(bad):
    a = np.ones((5, 5), np.float32)
    a[2, 3] = bad
    with pytest.raises(ImageError, match="NaN or infinite"):
        scaling_for(a)


@pytest.mark.parametrize("dtype", [bool, np.complex64])
def test_unsupported_dtypes_are_refused(dtype):
    with pytest.raises(ImageError, match="dtype"):
        scaling_for(np.zeros((4, 4), dtype))


# -- files -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("shape", "axes", "dtype"),
    [
        ((20, 30), "YX", np.uint16),
        ((20, 30, 3), "YXC", np.uint8),
        ((20, 30, 4), "YXC", np.uint16),
        ((5, 20, 30), "ZYX", np.float32),
        ((2, 3, 20, 30), "TZYX", np.uint16),
        ((2, 20, 30), "CYX", np.uint8),
        ((2, 3, 2, 20, 30), "TZCYX", np.uint16),
    ],
)
def test_tiff_round_trip_keeps_values_and_axes(tmp_path, shape, axes, dtype):
    a = (np.random.default_rng(1).random(shape) * 200).astype(dtype)
    write_image(tmp_path / "x.tif", a, axes)
    b, read_axes = read_image(tmp_path / "x.tif")
    assert read_axes == axes and b.dtype == a.dtype and np.array_equal(a, b)


@pytest.mark.parametrize(
    ("name", "shape", "dtype"),
    [
        ("g.png", (20, 30), np.uint8),
        ("g16.png", (20, 30), np.uint16),
        ("rgba.png", (20, 30, 4), np.uint8),
        ("grey_alpha.png", (20, 30, 2), np.uint8),
        ("rgb.png", (20, 30, 3), np.uint8),
    ],
)
def test_png_round_trip_is_lossless(tmp_path, name, shape, dtype):
    a = (np.random.default_rng(2).random(shape) * 250).astype(dtype)
    write_image(tmp_path / name, a)
    b, axes = read_image(tmp_path / name)
    assert axes == ("YX" if len(shape) == 2 else "YXC") and b.dtype == dtype and np.array_equal(a, b)


def test_jpeg_round_trip_keeps_shape(tmp_path):
    a = np.full((16, 24, 3), 120, np.uint8)
    write_image(tmp_path / "x.jpg", a)
    b, axes = read_image(tmp_path / "x.jpg")
    assert b.shape == a.shape and b.dtype == np.uint8 and axes == "YXC" and np.abs(b.astype(int) - 120).max() <= 2


@pytest.mark.parametrize(
    ("name", "array"),
    [
        ("f.png", np.zeros((4, 4), np.float32)),
        ("rgb16.png", np.zeros((4, 4, 3), np.uint16)),
        ("stack.jpg", np.zeros((2, 4, 4), np.uint8)),
        ("x.bmp", np.zeros((4, 4), np.uint8)),
    ],
)
def test_formats_that_cannot_hold_the_array_are_refused_without_leaving_files(tmp_path, name, array):
    with pytest.raises(ImageError):
        write_image(tmp_path / name, array)
    assert list(tmp_path.iterdir()) == []


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path, monkeypatch):
    target = tmp_path / "x.tif"
    write_image(target, np.ones((4, 4), np.uint8))
    before = target.read_bytes()

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(io, "_write_tiff", crash)
    with pytest.raises(OSError, match="disk full"):
        write_image(target, np.zeros((4, 4), np.uint8))
    assert target.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["x.tif"]


def test_written_files_get_ordinary_permissions(tmp_path):
    path = write_image(tmp_path / "x.png", np.zeros((4, 4), np.uint8))
    assert path.stat().st_mode & 0o044  # readable by group/others under the usual umask, unlike mkstemp's 0600


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("bad.png", b"not a png at all", "not a readable PNG"),
        ("bad.tif", b"II*\x00garbage", "cannot read"),
        ("empty.jpg", b"", "empty file"),
        (
            "deep.png",
            b"\x89PNG\r\n\x1a\n" + b"\x00\x00\x00\x0dIHDR" + b"\x00\x00\x00\x04" * 2 + bytes([16, 2]),
            "16-bit colour PNG",
        ),
    ],
)
def test_unreadable_files_raise_image_error(tmp_path, name, content, message):
    (tmp_path / name).write_bytes(content)
    with pytest.raises(ImageError, match=message):
        read_image(tmp_path / name)


def test_missing_and_unsupported_files_raise_image_error(tmp_path):
    with pytest.raises(ImageError, match="does not exist"):
        read_image(tmp_path / "nothing.png")
    (tmp_path / "x.gif").write_bytes(b"GIF89a")
    with pytest.raises(ImageError, match="unsupported"):
        read_image(tmp_path / "x.gif")
