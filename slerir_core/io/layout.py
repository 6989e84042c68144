"""Array layout: what each axis of an image is and how its channels reach the RGB model.

``Layout`` says what each axis is (``axes`` such as ``"TZYXC"``) and how channels are fed to the model: grey
(one channel, copied to three), RGB, RGBA (alpha passes through) or several channels restored one by one as
grey. Its ``canonical`` view puts the axes in the order ``(stack..., Y, X, C)`` without copying.

Which channels are colours: 3 or 4 channels are RGB or RGBA only when the user says so (``channels="rgb"``),
when a file stores them as colour (PNG, JPEG, a TIFF with RGB photometric; the caller passes ``"rgb"`` then),
or, with ``channels="auto"``, for 8-bit data whose channels are the last axis (an ordinary RGB(A) picture).
Every other multichannel array, such as a uint16 ``CYX`` fluorescence image, is restored one channel at a
time: its channels are not colours, and mixing them as RGB would change each one's range and content.
Nothing here imports torch.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from slerir_core.errors import ImageError

CHANNEL_OPTIONS = ("auto", "rgb", "grey")
"""The values of the ``channels`` option: how to decide which channels are colours."""
MIN_SIDE = 8
"""The smallest image side SLER-IR restores: its encoder halves the resolution three times."""


def is_dask(array: Any) -> bool:
    """True for a dask array (checked without importing dask, which is optional)."""
    return type(array).__module__.startswith("dask.") and hasattr(array, "chunks")


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
        channel_handling: how the channels reach the model: ``grey`` (no or one channel), ``rgb``, ``rgba``
            (alpha untouched) or ``channels`` (each channel restored as a grey image).
        groups: channel ranges ``(start, stop)`` of the canonical view fed to the model together.
        passthrough: channels copied unchanged (alpha).
    """

    axes: str
    shape: tuple[int, ...]
    channel_handling: str
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
    def colour(self) -> bool:
        """Whether the channels are restored as colour (RGB or RGBA)."""
        return self.channel_handling in ("rgb", "rgba")

    def describe(self, index: tuple[int, ...], group: int) -> str:
        """Human-readable name of one 2-D image of the array, e.g. ``"Z=3, C=1"`` (``"image"`` for 2-D)."""
        parts = [f"{a}={i}" for a, i in zip(self.stack_axes, index, strict=True)]
        if self.channel_handling == "channels" and len(self.groups) > 1:
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
        ImageError: empty array, bad axes, or a ``channels`` option the data cannot take.
    """
    shape = tuple(int(s) for s in shape)
    if channels not in CHANNEL_OPTIONS:
        raise ImageError(f"channels must be one of {CHANNEL_OPTIONS}, not {channels!r}")
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


def describe_channels(layout: Layout) -> str:
    """How an image's channels are restored, in words for reports: ``"grey"``, ``"RGB"``,
    ``"RGBA (alpha copied)"`` or ``"4 channels, each on its own"``."""
    if layout.channel_handling == "channels":
        return f"{len(layout.groups)} channels, each on its own"
    return {"grey": "grey", "rgb": "RGB", "rgba": "RGBA (alpha copied)"}[layout.channel_handling]


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
