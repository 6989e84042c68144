"""Image arrays and files: axes, channels, dtype scaling, reading and atomic writing.

The restorer sees every array through two small objects made here:

* ``Layout`` says what each axis is (``axes`` such as ``"TZYXC"``) and how channels are fed to the RGB
  model: grey (one channel, copied to three), RGB, RGBA (alpha passes through) or several channels
  restored one by one as grey. Its ``canonical`` view puts the axes in the order ``(stack..., Y, X, C)``
  without copying.
* ``Scaling`` maps raw values to the model's [0, 1] and back. uint8 uses the fixed range 0-255, and float
  data that already lies in [0, 1] is used as it is (a dark image must stay dark for the model to brighten
  it); every other array (uint16, float in other ranges, ...) uses the data's own minimum and maximum,
  taken over the whole array, so every slice and tile is scaled alike and no seam or flicker can come from
  the scaling.

Which channels are colours: 3 or 4 channels are RGB or RGBA only when the user says so (``channels="rgb"``),
when a file stores them as colour (PNG, JPEG, a TIFF with RGB photometric), or, with ``channels="auto"``,
for 8-bit data whose channels are the last axis (an ordinary RGB(A) picture). Every other multichannel
array, such as a uint16 ``CYX`` fluorescence image, is restored one channel at a time: its channels are
not colours, and mixing them as RGB would change each one's range and content.

Files: TIFF (stacks, with the axes tifffile reads from the metadata), PNG and JPEG. ``read_image_file``
also returns what a file says about its calibration (TIFF resolution, ImageJ and OME-TIFF pixel sizes and
units, PNG/JPEG dpi) and whether it stores colour; ``write_image`` writes that calibration back. Writes go
to a temporary file in the destination folder, then ``os.replace``, so a crash never leaves a half-written
image under the final name. Nothing here imports torch.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from slerir_core.atomic import atomic_write
from slerir_core.errors import ImageError

IMAGE_SUFFIXES = (".tif", ".tiff", ".png", ".jpg", ".jpeg")
TIFF_SUFFIXES = (".tif", ".tiff")
CHANNEL_MODES = ("auto", "rgb", "grey")
MIN_SIDE = 8
"""The smallest image side SLER-IR restores: its encoder halves the resolution three times."""
MAX_PIXELS_ENV = "SLERIR_MAX_PIXELS"
DEFAULT_MAX_PIXELS = 178_956_970
"""Largest PNG or JPEG (width × height) read unless raised: Pillow's decompression-bomb threshold."""


def is_dask(array: Any) -> bool:
    """True for a dask array (checked without importing dask, which is optional)."""
    return type(array).__module__.startswith("dask.") and hasattr(array, "chunks")


# -- axes and channels ------------------------------------------------------------------------------


def infer_axes(shape: Sequence[int]) -> str:
    """Guess the axes of an array from its shape.

    2-D is ``YX``; 3-D is ``YXC`` when the last axis has 1, 3 or 4 entries, else ``ZYX``; 4-D is ``ZYXC``
    when the last axis has 3 or 4 entries, else ``TZYX``. Anything else is ambiguous. Channels-first data
    such as ``(3, H, W)`` is therefore read as a stack of slices, with a warning: pass ``axes="CYX"``.

    Raises:
        ImageError: for fewer than 2 or more than 4 dimensions (pass ``axes``).
    """
    ndim = len(shape)
    if ndim == 2:
        return "YX"
    if ndim == 3:
        if shape[-1] in (1, 3, 4):
            return "YXC"
        if 2 <= shape[0] <= 4:
            warnings.warn(
                f"an array of shape {tuple(shape)} is read as ZYX ({shape[0]} slices); if its first axis holds "
                f"channels (channels-first, as torch tensors are), pass axes='CYX'",
                UserWarning,
                stacklevel=3,
            )
        return "ZYX"
    if ndim == 4:
        return "ZYXC" if shape[-1] in (3, 4) else "TZYX"
    if ndim < 2:
        raise ImageError(f"an image needs at least 2 dimensions (Y, X), got shape {tuple(shape)}")
    raise ImageError(
        f"cannot guess the axes of a {ndim}-D array of shape {tuple(shape)}: pass axes, one letter per "
        f"dimension with Y and X and optionally C (channels), e.g. axes='TZCYX'"
    )


def check_axes(axes: str, shape: Sequence[int]) -> str:
    """Validate an axes string against a shape and return it upper-cased.

    Raises:
        ImageError: wrong length, repeated letters, no Y or X, or more than one C.
    """
    axes = axes.upper()
    if len(axes) != len(shape):
        raise ImageError(
            f"axes {axes!r} has {len(axes)} letters but the array has {len(shape)} dimensions (shape {tuple(shape)})"
        )
    if len(set(axes)) != len(axes):
        raise ImageError(f"axes {axes!r} repeats a letter")
    if "Y" not in axes or "X" not in axes:
        raise ImageError(f"axes {axes!r} must name Y and X")
    return axes


@dataclass(frozen=True)
class Layout:
    """What each axis of an array is and how its channels reach the model.

    Attributes:
        axes: one letter per dimension of the input (``Y``, ``X``, optional ``C``, any others are stack axes).
        shape: the input's shape.
        mode: ``grey`` (no or one channel), ``rgb``, ``rgba`` (alpha untouched) or ``channels`` (each
            channel restored as a grey image).
        groups: channel ranges ``(start, stop)`` of the canonical view fed to the model together.
        passthrough: channels copied unchanged (alpha).
    """

    axes: str
    shape: tuple[int, ...]
    mode: str
    groups: tuple[tuple[int, int], ...]
    passthrough: tuple[int, ...] = ()

    @property
    def stack_axes(self) -> str:
        """Axes other than Y, X and C, in input order (the canonical view's leading axes)."""
        return "".join(a for a in self.axes if a not in "YXC")

    @property
    def stack_shape(self) -> tuple[int, ...]:
        """Lengths of the stack axes (``()`` for a single 2-D image)."""
        return tuple(self.shape[self.axes.index(a)] for a in self.stack_axes)

    @property
    def height(self) -> int:
        """Length of Y."""
        return self.shape[self.axes.index("Y")]

    @property
    def width(self) -> int:
        """Length of X."""
        return self.shape[self.axes.index("X")]

    @property
    def order(self) -> tuple[int, ...]:
        """Permutation of the input's dimensions into ``(stack..., Y, X[, C])``."""
        canonical = self.stack_axes + "YX" + ("C" if "C" in self.axes else "")
        return tuple(self.axes.index(a) for a in canonical)

    def canonical(self, array: Any) -> Any:
        """A view of ``array`` (numpy or dask) with axes ``(stack..., Y, X, C)``; C has length 1 for grey."""
        view = array.transpose(self.order)
        return view if "C" in self.axes else view[..., None]

    def original(self, canonical: Any) -> Any:
        """Inverse of ``canonical``: back to the input's axis order."""
        view = canonical if "C" in self.axes else canonical[..., 0]
        return view.transpose(tuple(np.argsort(self.order)))

    @property
    def channel_mode(self) -> str:
        """How the channels are restored, for reports: ``"grey"``, ``"RGB"``, ``"RGBA (alpha copied)"`` or
        ``"4 channels, each on its own"``."""
        if self.mode == "channels":
            return f"{len(self.groups)} channels, each on its own"
        return {"grey": "grey", "rgb": "RGB", "rgba": "RGBA (alpha copied)"}[self.mode]

    def describe(self, index: tuple[int, ...], group: int) -> str:
        """Human-readable name of one 2-D image of the array, e.g. ``"Z=3, C=1"`` (``"image"`` for 2-D)."""
        parts = [f"{a}={i}" for a, i in zip(self.stack_axes, index, strict=True)]
        if self.mode == "channels" and len(self.groups) > 1:
            parts.append(f"C={self.groups[group][0]}")
        return ", ".join(parts) or "image"


def make_layout(shape: Sequence[int], axes: str | None = None, channels: str = "auto", dtype: Any = None) -> Layout:
    """Describe an array for restoration.

    Args:
        shape: the array's shape.
        axes: one letter per dimension (``"TZYX"``, ``"ZYXC"``, ``"YXC"``); ``None`` infers it (``infer_axes``).
        channels: ``auto`` (3 or 4 channels of 8-bit data on the last axis are RGB or RGBA, every other
            multichannel array is restored channel by channel), ``rgb`` (3 channels are RGB, 4 RGBA) or
            ``grey`` (every channel on its own).
        dtype: the array's dtype, which ``auto`` needs to recognise an 8-bit picture; ``None`` counts as
            not 8-bit.

    Raises:
        ImageError: empty array, bad axes, or a channel mode the data cannot take.
    """
    shape = tuple(int(s) for s in shape)
    if channels not in CHANNEL_MODES:
        raise ImageError(f"channels must be one of {CHANNEL_MODES}, not {channels!r}")
    if any(s == 0 for s in shape):
        raise ImageError(f"the image is empty (shape {shape})")
    axes = check_axes(axes, shape) if axes is not None else infer_axes(shape)
    n = shape[axes.index("C")] if "C" in axes else 1
    if n == 1:
        return Layout(axes, shape, "grey", ((0, 1),))
    if channels == "rgb" and n not in (3, 4):
        raise ImageError(f"channels='rgb' needs 3 or 4 channels, the image has {n}")
    picture = dtype is not None and np.dtype(dtype) == np.uint8 and axes.endswith("C") and n in (3, 4)
    if channels == "rgb" or (channels == "auto" and picture):
        if n == 3:
            return Layout(axes, shape, "rgb", ((0, 3),))
        return Layout(axes, shape, "rgba", ((0, 3),), passthrough=(3,))
    return Layout(axes, shape, "channels", tuple((c, c + 1) for c in range(n)))


def to_array(image: Any) -> np.ndarray:
    """An image given to the API (numpy array, nested list, CPU torch tensor, ...) as a numpy array.

    Raises:
        ImageError: a torch tensor that requires grad or lives on another device, or a ragged nested list.
    """
    if type(image).__module__.startswith("torch") and hasattr(image, "requires_grad"):
        if image.requires_grad:
            raise ImageError("the image is a torch tensor that requires grad; pass image.detach()")
        if image.device.type != "cpu":
            raise ImageError(f"the image is a torch tensor on {image.device}; pass image.cpu()")
    try:
        return np.asarray(image)
    except ValueError as err:  # numpy's message for ragged input spans a paragraph
        raise ImageError(
            "the image is a ragged nested sequence (rows of different lengths); pass a rectangular array"
        ) from err


# -- values -------------------------------------------------------------------------------------------


def check_dtype(dtype: np.dtype) -> np.dtype:
    """Accept unsigned/signed integers and floats.

    Raises:
        ImageError: for bool, complex, object and other dtypes.
    """
    dtype = np.dtype(dtype)
    if dtype.kind not in "uif":
        raise ImageError(f"cannot restore an array of dtype {dtype}: use an integer or float dtype")
    return dtype


@dataclass(frozen=True)
class Scaling:
    """Affine map of each channel of the canonical view to [0, 1] and back.

    Attributes:
        offset: per channel, the raw value that maps to 0.
        scale: per channel, the raw range that maps to 1.
        dtype: the data's dtype, restored on the way back.
    """

    offset: np.ndarray
    scale: np.ndarray
    dtype: np.dtype

    @classmethod
    def fit(cls, canonical: Any, layout: Layout) -> Scaling:
        """The scaling of an array's canonical view (numpy, or dask: computes the minimum and maximum).

        Channels restored together share one range so colours keep their balance.

        Raises:
            ImageError: bad dtype, or NaN or infinite values.
        """
        dtype = check_dtype(canonical.dtype)
        channels = canonical.shape[-1]
        if dtype == np.uint8:
            return cls(np.zeros(channels), np.full(channels, 255.0), dtype)
        low, high = _channel_ranges(canonical)
        if not (np.isfinite(low).all() and np.isfinite(high).all()):
            raise ImageError(
                "the image contains NaN or infinite values; replace them first "
                "(e.g. numpy.nan_to_num) so the restored values mean something"
            )
        offset, scale = np.zeros(channels), np.ones(channels)
        for start, stop in layout.groups:
            lo, hi = low[start:stop].min(), high[start:stop].max()
            if dtype.kind == "f" and lo >= 0.0 and hi <= 1.0:
                continue  # already the model's range
            offset[start:stop] = lo
            scale[start:stop] = hi - lo if hi > lo else 1.0  # a constant image maps to 0 and back
        return cls(offset, scale, dtype)

    def to_unit(self, block: np.ndarray, group: tuple[int, int]) -> np.ndarray:
        """Raw ``(..., C)`` values of channels ``group`` -> float32 in [0, 1] (one small copy)."""
        start, stop = group
        out = block[..., start:stop].astype(np.float32)
        out -= self.offset[start:stop].astype(np.float32)
        out *= (1.0 / self.scale[start:stop]).astype(np.float32)
        return out

    def from_unit(self, block: np.ndarray, group: tuple[int, int]) -> np.ndarray:
        """float32 values in [0, 1] of channels ``group`` -> the data's range and dtype.

        Integers are rounded and clipped to the dtype's range; floats keep whatever range comes back.

        Raises:
            ImageError: NaN or infinite values, which no output may hold (cast to an integer they would
                become plausible-looking zeros).
        """
        start, stop = group
        with np.errstate(over="ignore", invalid="ignore"):  # non-finite results are refused below, in words
            out = block * self.scale[start:stop].astype(np.float32) + self.offset[start:stop].astype(np.float32)
        if not np.isfinite(out).all():
            raise ImageError(
                "the network produced NaN or infinite values; its weights are probably corrupt or diverged in training"
            )
        if self.dtype.kind in "ui":
            info = np.iinfo(self.dtype)
            np.rint(out, out=out)
            np.clip(out, info.min, info.max, out=out)
            return out.astype(self.dtype)
        with np.errstate(over="ignore"):
            cast = out.astype(self.dtype)
        if not np.isfinite(cast).all():
            raise ImageError(f"the restored values overflow {self.dtype}; convert the image to float32 first")
        return cast


def _channel_ranges(canonical: Any) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel minimum and maximum over all other axes, as float64 numpy arrays."""
    axes = tuple(range(canonical.ndim - 1))
    low, high = canonical.min(axis=axes), canonical.max(axis=axes)
    if hasattr(low, "compute"):  # dask: one pass over the data for both
        import dask

        low, high = dask.compute(low, high)
    return np.asarray(low, dtype=np.float64), np.asarray(high, dtype=np.float64)


# -- files --------------------------------------------------------------------------------------------


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
        axes: what the file says its axes are (``S`` samples become ``C``); ``None`` when unknown.
        colour: the file stores its channels as colour (PNG, JPEG, TIFF with RGB photometric).
        calibration: pixel sizes and resolution, for ``write_image``.
    """

    array: np.ndarray
    axes: str | None
    colour: bool = False
    calibration: Calibration = field(default_factory=Calibration)


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
        raise ImageError(f"cannot read {path}: not a readable {suffix[1:].upper()} image ({_first_line(err)})") from err


def _first_line(err: Exception) -> str:
    return (str(err).strip().splitlines() or [type(err).__name__])[0]


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
    try:
        return ImageFile(array, check_axes(axes, array.shape), colour, calibration)
    except ImageError:
        return ImageFile(array, None, colour, calibration)  # metadata we cannot use: let the shape decide


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
