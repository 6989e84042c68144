"""Image files: TIFF (stacks, with the axes tifffile reads from the metadata), PNG and JPEG.

``read_image_file`` also returns what a file says about its calibration (TIFF resolution, ImageJ and
OME-TIFF pixel sizes and units, PNG/JPEG dpi) and whether it stores colour; ``write_image`` writes that
calibration back. Writes go to a temporary file in the destination folder, then ``os.replace``, so a crash
never leaves a half-written image under the final name. Nothing here imports torch.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from slerir_core.atomic import atomic_write
from slerir_core.errors import ImageError, first_line
from slerir_core.io.layout import check_axes

IMAGE_SUFFIXES = (".tif", ".tiff", ".png", ".jpg", ".jpeg")
TIFF_SUFFIXES = (".tif", ".tiff")
MAX_PIXELS_ENV = "SLERIR_MAX_PIXELS"
DEFAULT_MAX_PIXELS = 178_956_970
"""Largest PNG or JPEG (width × height) read unless raised: Pillow's decompression-bomb threshold."""


@dataclass(frozen=True)
class Calibration:
    """What a file says about the physical size of its pixels, to be written into its restored copy.

    Attributes:
        resolution: TIFF ``XResolution`` and ``YResolution`` as (numerator, denominator) pairs.
        resolution_unit: TIFF ``ResolutionUnit`` (1 none, 2 inch, 3 centimetre).
        imagej: ImageJ hyperstack metadata (``spacing``, ``unit``, ``finterval``, ranges, labels, ...).
        ome: OME-TIFF pixel sizes, time increment and units (``PhysicalSizeX``...) and channel names.
        dpi: PNG or JPEG dots per inch (x, y).
    """

    resolution: tuple[tuple[int, int], tuple[int, int]] | None = None
    resolution_unit: int | None = None
    imagej: dict[str, Any] = field(default_factory=dict)
    ome: dict[str, Any] = field(default_factory=dict)
    dpi: tuple[float, float] | None = None


@dataclass(frozen=True)
class ImageFile:
    """An image read from a file.

    Attributes:
        array: the pixels.
        axes: what the file says its axes are (``S`` samples become ``C``, unknown stack axes ``Z`` and
            ``T``: see ``name_unknown_axes``); ``None`` when unknown.
        colour: the file stores its channels as colour (PNG, JPEG, TIFF with RGB photometric).
        calibration: pixel sizes and resolution, for ``write_image``.
    """

    array: np.ndarray
    axes: str | None
    colour: bool = False
    calibration: Calibration = field(default_factory=Calibration)


_UNKNOWN_AXES = "QI"
"""tifffile's letters for an axis whose meaning the file does not say."""
# ImageJ metadata that describes the array itself: tifffile writes it from the data and the axes.
_IMAGEJ_STRUCTURE = {"ImageJ", "images", "channels", "slices", "frames", "hyperstack", "axes"}
_OME_PIXELS = tuple(
    f"{name}{unit}"
    for name in ("PhysicalSizeX", "PhysicalSizeY", "PhysicalSizeZ", "TimeIncrement")
    for unit in ("", "Unit")
)


def pixel_limit(max_pixels: int | None = None) -> int:
    """The largest PNG or JPEG (width × height) to decode; 0 means no limit.

    Args:
        max_pixels: the limit; ``None`` reads ``SLERIR_MAX_PIXELS`` from the environment, else
            ``DEFAULT_MAX_PIXELS``.

    Raises:
        ImageError: a negative limit, or an environment value that is not a whole number.
    """
    if max_pixels is None:
        text = os.environ.get(MAX_PIXELS_ENV, "").strip()
        try:
            max_pixels = int(text) if text else DEFAULT_MAX_PIXELS
        except ValueError:
            raise ImageError(f"{MAX_PIXELS_ENV} must be a whole number of pixels (0: no limit), not {text!r}") from None
    if max_pixels < 0:
        raise ImageError(f"the pixel limit must be 0 (no limit) or positive, not {max_pixels}")
    return max_pixels


def read_image(path: str | Path) -> tuple[np.ndarray, str | None]:
    """Read a TIFF (any stack), PNG or JPEG file: ``read_image_file`` without colour and calibration.

    Returns:
        The array and its axes when the file says (TIFF metadata; ``S`` samples become ``C``), or the
        plain 2-D/colour layout of PNG and JPEG; ``None`` when unknown.

    Raises:
        ImageError: missing, unsupported, unreadable or (PNG, JPEG) too large a file.
    """
    image = read_image_file(path)
    return image.array, image.axes


def read_image_file(path: str | Path, max_pixels: int | None = None) -> ImageFile:
    """Read a TIFF (any stack), PNG or JPEG file with its axes, colour and calibration.

    Args:
        path: the file.
        max_pixels: refuse a PNG or JPEG whose header declares more pixels (see ``pixel_limit``): a
            small file can declare an image that would fill the memory (a decompression bomb).

    Raises:
        ImageError: missing, unsupported, unreadable or too large a file.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in IMAGE_SUFFIXES:
        raise ImageError(f"{path}: unsupported file type {suffix!r}; supported: {', '.join(IMAGE_SUFFIXES)}")
    if not path.is_file():
        raise ImageError(f"{path} does not exist")
    if path.stat().st_size == 0:
        raise ImageError(f"{path} is an empty file (0 bytes)")
    limit = pixel_limit(max_pixels)
    try:
        if suffix in TIFF_SUFFIXES:
            return _read_tiff(path)
        _refuse_deep_colour_png(path)
        return _read_flat(path, limit)
    except ImageError:
        raise
    except Exception as err:  # readers raise many types for a corrupt file
        raise ImageError(f"cannot read {path}: not a readable {suffix[1:].upper()} image ({first_line(err)})") from err


def _refuse_deep_colour_png(path: Path) -> None:
    """Pillow reads 16-bit colour PNGs as 8 bits; refuse them rather than lose precision silently."""
    if path.suffix.lower() != ".png":
        return
    with open(path, "rb") as fh:
        head = fh.read(26)
    # Signature (8), IHDR length and type (8), width and height (8), then bit depth and colour type.
    if len(head) == 26 and head[12:16] == b"IHDR" and head[24] == 16 and head[25] in (2, 4, 6):
        raise ImageError(f"{path} is a 16-bit colour PNG, which would be read as 8 bits; save it as TIFF")


def _read_flat(path: Path, limit: int) -> ImageFile:
    """A PNG or JPEG through Pillow, checking its declared size before decoding anything."""
    from PIL import JpegImagePlugin, PngImagePlugin

    with open(path, "rb") as fh:
        head = fh.read(8)
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        opener: Any = PngImagePlugin.PngImageFile
    elif head.startswith(b"\xff\xd8\xff"):
        opener = JpegImagePlugin.JpegImageFile
    else:
        raise ValueError("neither PNG nor JPEG data")
    # The format's own class reads the header only; PIL.Image.open would raise its bomb error first,
    # with a message that names no limit a user can change (imageio turns it into "unknown error").
    with opener(path) as picture:
        width, height = picture.size
        if limit and width * height > limit:
            raise ImageError(
                f"{path} declares {height}×{width} = {width * height:,} pixels, over the limit of {limit:,} that "
                f"guards against decompression bombs; if the image is genuine, raise the limit with "
                f"--max-pixels N or {MAX_PIXELS_ENV}=N (0: no limit)"
            )
        dpi = picture.info.get("dpi")
        mode = picture.mode
        if mode in ("P", "PA"):
            has_alpha = mode == "PA" or "transparency" in picture.info
            picture = picture.convert("RGBA" if has_alpha else "RGB")
        elif mode == "1":
            picture = picture.convert("L")
        elif mode not in ("L", "LA", "RGB", "RGBA", "I") and not mode.startswith("I;16"):
            picture = picture.convert("RGBA" if "A" in mode else "RGB")
        array = np.asarray(picture)
    # Older Pillow opens a 16-bit grey PNG as 32-bit "I"; its values fit 16 bits by the format's definition.
    array = array.astype(np.uint16 if mode == "I" else array.dtype.newbyteorder("="), copy=False)
    calibration = Calibration(dpi=tuple(float(d) for d in dpi[:2]) if dpi else None)
    axes = "YX" if array.ndim == 2 else "YXC"
    return ImageFile(array, axes, colour=array.ndim == 3 and array.shape[-1] in (3, 4), calibration=calibration)


def _read_tiff(path: Path) -> ImageFile:
    import tifffile

    with tifffile.TiffFile(path) as tif:
        series = tif.series[0]
        array = series.asarray()
        axes = series.axes.upper()
        page = tif.pages[0]
        colour = page.photometric == tifffile.PHOTOMETRIC.RGB
        calibration = _tiff_calibration(tif, page)
    if "S" in axes and "C" not in axes:
        axes = axes.replace("S", "C")
    axes = name_unknown_axes(axes)
    try:
        return ImageFile(array, check_axes(axes, array.shape), colour, calibration)
    except ImageError:
        return ImageFile(array, None, colour, calibration)  # metadata we cannot use: let the shape decide


def name_unknown_axes(axes: str) -> str:
    """TIFF axes with tifffile's letters for an axis of unknown meaning named as plain stacks are.

    tifffile calls the leading axis of a stack written without axes ``Q`` (unknown) or ``I`` (a sequence of
    images): a plain 3-D stack reads as ``QYX``. These become ``Z`` and then ``T``, from the axis nearest
    to Y and X outwards, as ``infer_axes`` names them (3-D stacks are ``ZYX``, 4-D ``TZYX``); letters the
    file names already are kept, and unknown axes beyond those two keep their letter.
    """
    free = [a for a in "ZT" if a not in axes]
    named = list(axes)
    for i in reversed(range(len(named))):
        if named[i] in _UNKNOWN_AXES and free:
            named[i] = free.pop(0)
    return "".join(named)


def _tiff_calibration(tif: Any, page: Any) -> Calibration:
    tags = page.tags
    resolution = None
    if "XResolution" in tags and "YResolution" in tags:
        resolution = (tuple(tags["XResolution"].value), tuple(tags["YResolution"].value))
    unit = int(tags["ResolutionUnit"].value) if "ResolutionUnit" in tags else None
    imagej = {}
    if tif.is_imagej:
        imagej = {k: v for k, v in (tif.imagej_metadata or {}).items() if k not in _IMAGEJ_STRUCTURE}
    ome: dict[str, Any] = {}
    if tif.is_ome:
        import tifffile

        image = tifffile.xml2dict(tif.ome_metadata)["OME"]["Image"]
        pixels = (image[0] if isinstance(image, list) else image)["Pixels"]
        ome = {k: pixels[k] for k in _OME_PIXELS if k in pixels}
        channels = pixels.get("Channel", [])
        names = [c.get("Name") for c in (channels if isinstance(channels, list) else [channels])]
        if names and all(names):
            ome["Channel"] = {"Name": names}
    return Calibration(resolution, unit, imagej, ome)


def write_image(
    path: str | Path,
    array: np.ndarray,
    axes: str | None = None,
    *,
    colour: bool | None = None,
    calibration: Calibration | None = None,
) -> Path:
    """Write an image atomically: a temporary file in the same folder, then ``os.replace``.

    Args:
        path: destination (``.tif``/``.tiff``, ``.png``, ``.jpg``/``.jpeg``); its folder must exist.
        array: the image.
        axes: axes to record in a TIFF (``ZYX``...); ignored for PNG and JPEG.
        colour: a TIFF whose last axis is ``C`` stores those channels as RGB(A) colour, else as plain
            samples; ``None`` decides as ``make_layout``'s ``auto`` does (3 or 4 channels of uint8).
        calibration: resolution and pixel sizes from ``read_image_file``, written back (TIFF tags, ImageJ
            or OME-TIFF metadata, PNG/JPEG dpi).

    Raises:
        ImageError: a format that cannot hold this array (e.g. float in PNG, a stack in JPEG).
    """
    path = Path(path)
    suffix = path.suffix.lower()
    calibration = calibration or Calibration()
    if suffix not in IMAGE_SUFFIXES:
        raise ImageError(f"{path}: unsupported file type {suffix!r}; supported: {', '.join(IMAGE_SUFFIXES)}")
    if suffix not in TIFF_SUFFIXES:
        _check_flat_format(path, array)
    with atomic_write(path) as tmp:
        if suffix in TIFF_SUFFIXES:
            _write_tiff(tmp, array, axes, colour, calibration)
        else:
            from PIL import Image

            picture = Image.fromarray(array[..., 0] if array.ndim == 3 and array.shape[-1] == 1 else array)
            options: dict[str, Any] = {"quality": 95} if suffix in (".jpg", ".jpeg") else {}
            if calibration.dpi is not None:
                options["dpi"] = calibration.dpi
            picture.save(tmp, format="PNG" if suffix == ".png" else "JPEG", **options)
    return path


def write_text(path: str | Path, text: str) -> Path:
    """Write a text file (a JSON report) atomically, as ``write_image`` does."""
    path = Path(path)
    with atomic_write(path) as tmp:
        tmp.write_text(text)
    return path


def _check_flat_format(path: Path, array: np.ndarray) -> None:
    """PNG holds uint8 grey, grey + alpha, RGB or RGBA and uint16 grey; JPEG holds uint8 grey or RGB."""
    jpeg = path.suffix.lower() in (".jpg", ".jpeg")
    grey = array.ndim == 2 or (array.ndim == 3 and array.shape[-1] == 1)
    colour = array.ndim == 3 and array.shape[-1] in ((3,) if jpeg else (2, 3, 4))
    ok = ((grey or colour) and array.dtype == np.uint8) or (not jpeg and grey and array.dtype == np.uint16)
    if not ok:
        raise ImageError(f"{path.suffix} cannot hold a {array.dtype} array of shape {array.shape}; write a .tif")


def _write_tiff(path: Path, array: np.ndarray, axes: str | None, colour: bool | None, calibration: Calibration) -> None:
    import tifffile

    samples = axes is not None and axes.endswith("C") and array.shape[-1] > 1
    if colour is None:
        colour = array.dtype == np.uint8 and array.shape[-1] in (3, 4)
    colour = samples and colour and array.shape[-1] in (3, 4)
    options: dict[str, Any] = {"photometric": "rgb" if colour else "minisblack"}
    if samples:
        options["planarconfig"] = "contig"  # one page of pixels with C samples each, not a page per row
    if calibration.resolution is not None:
        options["resolution"] = calibration.resolution
    if calibration.resolution_unit is not None:
        options["resolutionunit"] = calibration.resolution_unit
    metadata: dict[str, Any] = {}
    if axes is not None:
        metadata["axes"] = axes[:-1] + "S" if samples else axes
    if calibration.imagej:
        options["imagej"] = True
        metadata.update(calibration.imagej)
    elif calibration.ome:
        options["ome"] = True
        metadata.update(calibration.ome)
    tifffile.imwrite(path, array, metadata=metadata or None, **options)
