"""Image files: TIFF, PNG and JPEG round trips with axes, colour and calibration; atomic writes; refusals."""

from __future__ import annotations

import resource
import struct
import subprocess
import sys
import textwrap
import zlib

import numpy as np
import pytest
import tifffile
from PIL import Image

from slerir_core.errors import ImageError
from slerir_core.io.files import Calibration, name_unknown_axes, read_image, read_image_file, write_image


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


def test_a_write_that_fails_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    """A file size limit below the image's size stands in for a full disk."""
    target = tmp_path / "x.tif"
    write_image(target, np.ones((4, 4), np.uint8))
    before = target.read_bytes()
    code = f"""
        import numpy as np
        from slerir_core.io.files import write_image
        try:
            write_image({str(target)!r}, np.zeros((512, 512), np.uint16))
        except OSError:
            print("write failed")
        """

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, 100_000))

    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, preexec_fn=limit, check=False
    )
    assert result.stdout.strip() == "write failed", result.stderr
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


def test_a_decompression_bomb_is_refused_with_the_limit_and_how_to_raise_it(tmp_path):
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


@pytest.mark.parametrize(("shape", "axes"), [((5, 24, 24), "ZYX"), ((5, 24, 24, 3), "ZYXC"), ((2, 5, 24, 24), "TZYX")])
def test_stacks_tifffile_writes_without_axes_read_as_the_shape_says(tmp_path, shape, axes):
    tifffile.imwrite(tmp_path / "s.tif", np.zeros(shape, np.uint16))
    assert read_image(tmp_path / "s.tif")[1] == axes


def test_unknown_axes_take_z_then_t_and_named_ones_stay():
    assert name_unknown_axes("QYX") == "ZYX" and name_unknown_axes("IQYX") == "TZYX"
    assert name_unknown_axes("TQYX") == "TZYX" and name_unknown_axes("ZCYX") == "ZCYX"
    assert name_unknown_axes("QQQYX") == "QTZYX"
