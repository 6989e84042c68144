"""Arrays and files: axes, channel modes, dtype scaling, reading and atomic writing."""

from __future__ import annotations

import struct
import warnings
import zlib

import numpy as np
import pytest
import tifffile
import torch
from PIL import Image

from slerir_core import io
from slerir_core.io import (
    Calibration,
    ImageError,
    Scaling,
    infer_axes,
    make_layout,
    read_image,
    read_image_file,
    to_array,
    write_image,
)


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
    ("shape", "axes", "channels", "dtype", "mode", "groups", "passthrough"),
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
def test_layout_modes(shape, axes, channels, dtype, mode, groups, passthrough):
    layout = make_layout(shape, axes, channels, dtype)
    assert (layout.mode, layout.groups, layout.passthrough) == (mode, groups, passthrough)


def test_layouts_say_which_channel_mode_they_use():
    modes = [
        make_layout(shape, axes, dtype=dtype).channel_mode
        for shape, axes, dtype in [
            ((8, 9), None, np.uint8),
            ((8, 9, 3), None, np.uint8),
            ((8, 9, 4), None, np.uint8),
            ((4, 8, 9), "CYX", np.uint16),
        ]
    ]
    assert modes == ["grey", "RGB", "RGBA (alpha copied)", "4 channels, each on its own"]


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


def scaling_for(array: np.ndarray, axes: str | None = None, channels: str = "auto") -> tuple[Scaling, np.ndarray]:
    layout = make_layout(array.shape, axes, channels, array.dtype)
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
    shared, _ = scaling_for(rgb, channels="rgb")
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


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32])
@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_restored_values_are_refused_not_cast(dtype, bad):
    """NaN cast to uint8 is 0: an all-black image that looks like a result."""
    scaling, _ = scaling_for(np.array([[0, 200]], dtype))
    unit = np.full((1, 2, 1), 0.5, np.float32)
    unit[0, 1, 0] = bad
    with pytest.raises(ImageError, match="NaN or infinite"):
        scaling.from_unit(unit, (0, 1))


def test_restored_values_that_overflow_a_float16_are_refused():
    scaling, _ = scaling_for(np.array([[0, 60000]], np.float16))
    with pytest.raises(ImageError, match="overflow float16"):
        scaling.from_unit(np.full((1, 2, 1), 1.5, np.float32), (0, 1))


def test_api_inputs_become_arrays_or_clear_errors():
    tensor = torch.rand(3, 16, 16)
    assert np.array_equal(to_array(tensor), tensor.numpy())
    with pytest.raises(ImageError, match=r"requires grad; pass image\.detach\(\)"):
        to_array(torch.rand(16, 16, requires_grad=True))
    with pytest.raises(ImageError, match="ragged"):
        to_array([[1, 2, 3], [4, 5]])
    assert to_array([[1, 2], [3, 4]]).shape == (2, 2)


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
        ((20, 30, 2), "YXC", np.float32),
    ],
)
def test_tiff_round_trip_keeps_values_and_axes(tmp_path, shape, axes, dtype):
    a = (np.random.default_rng(1).random(shape) * 200).astype(dtype)
    write_image(tmp_path / "x.tif", a, axes)
    b, read_axes = read_image(tmp_path / "x.tif")
    assert read_axes == axes and b.dtype == a.dtype and np.array_equal(a, b)
    pages = 1 if axes.endswith("C") else int(np.prod(shape[:-2]))  # channels last: samples of one page
    with tifffile.TiffFile(tmp_path / "x.tif") as tif:
        assert len(tif.pages) == pages


@pytest.mark.parametrize(
    ("array", "colour"),
    [
        (np.zeros((20, 30, 3), np.uint8), True),
        (np.zeros((20, 30, 4), np.uint8), True),
        (np.zeros((20, 30, 3), np.uint16), False),
        (np.zeros((20, 30, 4), np.uint16), False),
    ],
)
def test_tiffs_store_channels_as_colour_only_for_colour_data(tmp_path, array, colour):
    """A uint16 YXC image written as RGB would be read back as a colour picture next time."""
    write_image(tmp_path / "x.tif", array, "YXC")
    assert read_image_file(tmp_path / "x.tif").colour is colour
    write_image(tmp_path / "forced.tif", array, "YXC", colour=not colour)
    assert read_image_file(tmp_path / "forced.tif").colour is not colour


def test_tiff_resolution_survives_a_round_trip(tmp_path):
    array = np.random.default_rng(3).integers(0, 255, (20, 30, 3), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "in.tif", array, photometric="rgb", resolution=(300, 300), resolutionunit="INCH")
    image = read_image_file(tmp_path / "in.tif")
    assert image.colour and image.calibration.resolution == ((300, 1), (300, 1))
    write_image(tmp_path / "out.tif", image.array, image.axes, colour=True, calibration=image.calibration)
    with tifffile.TiffFile(tmp_path / "out.tif") as tif:
        page = tif.pages[0]
        assert page.tags["XResolution"].value == (300, 1) and page.tags["YResolution"].value == (300, 1)
        assert page.tags["ResolutionUnit"].value == tifffile.RESUNIT.INCH


def test_imagej_hyperstack_calibration_survives_a_round_trip(tmp_path):
    stack = np.random.default_rng(4).integers(0, 4095, (2, 3, 2, 24, 32)).astype(np.uint16)
    metadata = {"axes": "TZCYX", "spacing": 0.5, "unit": "um", "finterval": 2.0, "mode": "composite"}
    tifffile.imwrite(tmp_path / "in.tif", stack, imagej=True, resolution=(4.0, 4.0), metadata=metadata)
    image = read_image_file(tmp_path / "in.tif")
    assert image.axes == "TZCYX" and image.calibration.imagej["spacing"] == 0.5
    write_image(tmp_path / "out.tif", image.array, image.axes, calibration=image.calibration)
    with tifffile.TiffFile(tmp_path / "out.tif") as tif:
        assert tif.is_imagej and tif.series[0].axes == "TZCYX"
        written = tif.imagej_metadata
        assert (written["spacing"], written["unit"], written["finterval"], written["mode"]) == (
            0.5,
            "um",
            2.0,
            "composite",
        )
        assert (written["frames"], written["slices"], written["channels"]) == (2, 3, 2)
        assert tif.pages[0].tags["XResolution"].value == (4, 1)
        assert np.array_equal(tif.asarray(), stack)


def test_ome_tiff_pixel_sizes_survive_a_round_trip(tmp_path):
    stack = np.random.default_rng(5).integers(0, 4095, (3, 2, 24, 32)).astype(np.uint16)
    sizes = {"PhysicalSizeX": 0.2, "PhysicalSizeXUnit": "µm", "PhysicalSizeY": 0.2, "PhysicalSizeZ": 1.5}
    metadata = {"axes": "ZCYX", **sizes, "Channel": {"Name": ["DAPI", "GFP"]}}
    tifffile.imwrite(tmp_path / "in.ome.tif", stack, ome=True, metadata=metadata)
    image = read_image_file(tmp_path / "in.ome.tif")
    write_image(tmp_path / "out.ome.tif", image.array, image.axes, calibration=image.calibration)
    again = read_image_file(tmp_path / "out.ome.tif")
    assert again.axes == "ZCYX" and again.calibration.ome == {**sizes, "Channel": {"Name": ["DAPI", "GFP"]}}


@pytest.mark.parametrize(("name", "dpi"), [("x.png", (300, 300)), ("x.jpg", (72, 144))])
def test_png_and_jpeg_dpi_survive_a_round_trip(tmp_path, name, dpi):
    Image.fromarray(np.full((16, 24, 3), 99, np.uint8)).save(tmp_path / name, dpi=dpi)
    image = read_image_file(tmp_path / name)
    assert image.colour and image.calibration.dpi == pytest.approx(dpi, abs=0.01)
    write_image(tmp_path / f"out_{name}", image.array, calibration=image.calibration)
    with Image.open(tmp_path / f"out_{name}") as written:
        assert written.info["dpi"] == pytest.approx(dpi, abs=0.01)


def test_files_without_calibration_get_none(tmp_path):
    write_image(tmp_path / "x.png", np.zeros((8, 8), np.uint8))
    assert read_image_file(tmp_path / "x.png").calibration == Calibration()


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


def png_header(width: int, height: int) -> bytes:
    """A PNG whose header declares ``width`` x ``height`` 8-bit grey pixels, with one short IDAT chunk."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 1000)) + chunk(b"IEND", b"")
    )


def test_a_decompression_bomb_is_refused_with_the_limit_and_how_to_raise_it(tmp_path, monkeypatch):
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(png_header(100_000, 100_000))
    assert bomb.stat().st_size < 200
    with pytest.raises(ImageError) as caught:
        read_image(bomb)
    message = str(caught.value)
    assert "100000×100000 = 10,000,000,000 pixels" in message and "178,956,970" in message
    assert "--max-pixels" in message and "SLERIR_MAX_PIXELS" in message and "\n" not in message


def test_the_pixel_limit_can_be_lowered_and_raised(tmp_path, monkeypatch):
    write_image(tmp_path / "x.png", np.zeros((40, 50), np.uint8))
    with pytest.raises(ImageError, match="40×50 = 2,000 pixels, over the limit of 1,999"):
        read_image_file(tmp_path / "x.png", max_pixels=1999)
    assert read_image_file(tmp_path / "x.png", max_pixels=2000).array.shape == (40, 50)
    monkeypatch.setenv("SLERIR_MAX_PIXELS", "100")
    with pytest.raises(ImageError, match="limit of 100"):
        read_image(tmp_path / "x.png")
    monkeypatch.setenv("SLERIR_MAX_PIXELS", "0")  # no limit
    assert read_image(tmp_path / "x.png")[0].shape == (40, 50)
    monkeypatch.setenv("SLERIR_MAX_PIXELS", "lots")
    with pytest.raises(ImageError, match="SLERIR_MAX_PIXELS must be a whole number"):
        read_image(tmp_path / "x.png")


def test_missing_and_unsupported_files_raise_image_error(tmp_path):
    with pytest.raises(ImageError, match="does not exist"):
        read_image(tmp_path / "nothing.png")
    (tmp_path / "x.gif").write_bytes(b"GIF89a")
    with pytest.raises(ImageError, match="unsupported"):
        read_image(tmp_path / "x.gif")
