"""Image-layer helpers: what a layer's axes are, the current slice, and output layers that line up with the input.

Qt-free and torch-free: functions read napari layers and viewers duck-typed, so they are tested without a
display. Call them on the main thread (they touch layers).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from slerir_core.io.layout import MIN_SIDE

if TYPE_CHECKING:
    import napari
    import napari.layers

LEADING_AXES = "TZ"
"""Letters for the non-spatial leading axes of a stack, right-aligned: (Z, Y, X), (T, Z, Y, X)."""

MAX_LEADING = 3


class LayerError(ValueError):
    """A layer the plugin cannot restore, with a message for the user."""


@dataclass(frozen=True)
class Geometry:
    """How a napari image layer's array is laid out.

    Attributes:
        shape: the array's shape.
        leading: number of leading (stack) axes before Y and X.
        rgb: the last axis holds colour channels (3 or 4).
        axes: axes string for ``Restorer`` (``"YX"``, ``"YXC"``, ``"ZYX"``, ``"TZYXC"``...).
    """

    shape: tuple[int, ...]
    leading: int
    rgb: bool
    axes: str

    @property
    def is_stack(self) -> bool:
        """Whether the layer has slices to choose between."""
        return self.leading > 0 and int(np.prod(self.shape[: self.leading])) > 1

    @property
    def plane_shape(self) -> tuple[int, int]:
        """(H, W) of one slice."""
        return self.shape[self.leading], self.shape[self.leading + 1]


def geometry(layer: napari.layers.Image) -> Geometry:
    """Describe an image layer's axes, or explain why it cannot be restored.

    Raises:
        LayerError: not an image layer, multiscale, fewer than two spatial axes, too many axes, or a
            colour axis that is not RGB/RGBA.
    """
    from napari.layers import Image

    if layer is None:
        raise LayerError("Choose an image layer first.")
    if not isinstance(layer, Image):
        raise LayerError(f"Layer '{layer.name}' is not an image layer.")
    if getattr(layer, "multiscale", False):
        raise LayerError(
            f"Layer '{layer.name}' is multiscale (a pyramid); restore its full-resolution level "
            "as a plain image layer instead."
        )
    shape = tuple(int(s) for s in layer.data.shape)
    rgb = bool(layer.rgb)
    if rgb and shape[-1] not in (3, 4):
        raise LayerError(f"Layer '{layer.name}' has {shape[-1]} colour channels; RGB or RGBA is needed.")
    spatial = len(shape) - int(rgb)
    if spatial < 2:
        raise LayerError(f"Layer '{layer.name}' has shape {shape}: an image needs at least two spatial axes.")
    leading = spatial - 2
    if leading > MAX_LEADING:
        raise LayerError(
            f"Layer '{layer.name}' has {len(shape)} axes; at most {MAX_LEADING} stack axes before "
            "Y and X are supported."
        )
    if min(shape[leading], shape[leading + 1]) < MIN_SIDE:
        raise LayerError(
            f"Layer '{layer.name}' is {shape[leading]}×{shape[leading + 1]} pixels; "
            f"at least {MIN_SIDE}×{MIN_SIDE} is needed."
        )
    letters = ("S" * MAX_LEADING + LEADING_AXES)[-leading:] if leading else ""
    return Geometry(shape, leading, rgb, letters + "YX" + ("C" if rgb else ""))


def current_index(layer: napari.layers.Image, viewer: napari.Viewer) -> tuple[int, ...]:
    """Indices of the layer's leading axes at the viewer's current position (clipped into the layer)."""
    geo = geometry(layer)
    if not geo.leading:
        return ()
    point = np.asarray(layer.world_to_data(viewer.dims.point))[: geo.leading]
    return tuple(int(np.clip(np.round(p), 0, n - 1)) for p, n in zip(point, geo.shape[: geo.leading], strict=True))


def take_plane(data: Any, index: tuple[int, ...]) -> np.ndarray:
    """The (H, W) or (H, W, C) plane at ``index`` along the leading axes, as a numpy array."""
    return np.asarray(data[tuple(index)])


def output_properties(layer: napari.layers.Image, index: tuple[int, ...] | None = None) -> dict[str, Any]:
    """Keyword arguments for ``viewer.add_image`` so an output lines up with ``layer``.

    Copies scale, translate, rotation, shear, axis labels, units, contrast range, gamma and colormap.

    Args:
        layer: the input layer.
        index: when the output is one slice kept as a length-1 stack (shape ``(1, ..., H, W)``), the
            slice's position on the leading axes; the translation moves the output there.
    """
    translate = np.asarray(layer.translate, dtype=float).copy()
    scale = np.asarray(layer.scale, dtype=float)
    if index:
        translate[: len(index)] += np.asarray(index) * scale[: len(index)]
    props: dict[str, Any] = {
        "scale": tuple(scale),
        "translate": tuple(translate),
        "rotate": np.asarray(layer.rotate),
        "shear": np.asarray(layer.shear),
        "axis_labels": tuple(layer.axis_labels),
        "units": tuple(str(u) for u in layer.units),
        "rgb": bool(layer.rgb),
        "contrast_limits": tuple(float(c) for c in layer.contrast_limits),
        "gamma": float(layer.gamma),
    }
    if not layer.rgb:
        props["colormap"] = layer.colormap
    return props


def map_properties(layer: napari.layers.Image, index: tuple[int, ...], map_shape: tuple[int, int]) -> dict[str, Any]:
    """Placement of a (1, ..., h, w) map that covers the layer's current (H, W) plane at a coarser sampling.

    Map sample ``j`` covers image pixels ``[j·f, (j+1)·f)`` with ``f = H / h``, so its centre sits at image
    coordinate ``(j + 0.5)·f − 0.5``: scale grows by ``f`` and the translation shifts by ``(f − 1) / 2`` pixels.
    """
    geo = geometry(layer)
    props = output_properties(layer, index or None)
    scale = np.asarray(props["scale"], dtype=float)
    translate = np.asarray(props["translate"], dtype=float)
    for axis, (n_image, n_map) in enumerate(zip(geo.plane_shape, map_shape, strict=True)):
        i = geo.leading + axis
        f = n_image / n_map
        translate[i] += scale[i] * (f - 1) / 2
        scale[i] *= f
    # Per-axis properties of an RGB layer already leave out the colour axis, so they fit the grey maps too.
    props.update(scale=tuple(scale), translate=tuple(translate), rgb=False)
    for key in ("contrast_limits", "gamma", "colormap"):
        props.pop(key, None)
    return props


def expand_leading(plane: np.ndarray, leading: int) -> np.ndarray:
    """A plane as a stack with ``leading`` length-1 axes in front (so it keeps the layer's dimensionality)."""
    return plane.reshape((1,) * leading + plane.shape)


def add_or_replace(
    viewer: napari.Viewer,
    name: str,
    data: np.ndarray,
    props: dict[str, Any],
    metadata: dict[str, Any] | None = None,
    **extra: Any,
) -> napari.layers.Image:
    """Show ``data`` as the image layer ``name``, replacing a layer of that name instead of adding another.

    A layer with the same dimensionality is updated in place (keeping what the user changed, like its
    visibility); otherwise it is removed and the new one takes its place in the layer list.
    """
    kwargs = {**props, **extra}
    existing = next((lyr for lyr in viewer.layers if lyr.name == name), None)
    same_kind = (
        existing is not None
        and existing.data.ndim == data.ndim
        and bool(existing.rgb) == bool(kwargs.get("rgb", False))
    )
    if same_kind:
        # Set only what changed: every placement or data change makes napari re-slice the layer.
        for key in ("scale", "translate", "rotate", "shear", "axis_labels", "units"):
            if key in kwargs and not _same(getattr(existing, key), kwargs[key]):
                setattr(existing, key, kwargs[key])
        existing.data = data
        for key in ("contrast_limits", "gamma", "colormap", "opacity", "blending"):
            if key in kwargs and not _same(getattr(existing, key), kwargs[key]):
                setattr(existing, key, kwargs[key])
        existing.metadata = {**existing.metadata, **(metadata or {})}
        return existing
    position = None
    if existing is not None:
        position = viewer.layers.index(existing)
        viewer.layers.remove(existing)
    layer = viewer.add_image(data, name=name, metadata=dict(metadata or {}), **kwargs)
    if position is not None:
        viewer.layers.move(viewer.layers.index(layer), position)
    return layer


def _same(current: Any, wanted: Any) -> bool:
    """Whether a layer attribute already has the wanted value (arrays, tuples, colormaps by name)."""
    if hasattr(current, "name") and isinstance(wanted, str):
        return current.name == wanted
    if hasattr(current, "name") and hasattr(wanted, "name"):
        return current.name == wanted.name
    try:
        return bool(np.array_equal(np.asarray(current, dtype=object), np.asarray(wanted, dtype=object)))
    except (TypeError, ValueError):
        return current == wanted


def visible_region(layer: napari.layers.Image, viewer: napari.Viewer, max_side: int) -> tuple[tuple[slice, slice], int]:
    """The part of the current plane shown on the canvas, and a stride that keeps it within ``max_side``.

    Falls back to the whole plane when the view is 3-D or the displayed axes are not the layer's Y and X.

    Returns:
        ``(rows, cols)`` slices into the plane, and the integer stride to subsample them with.
    """
    geo = geometry(layer)
    h, w = geo.plane_shape
    rows, cols = slice(0, h), slice(0, w)
    ndim = viewer.dims.ndim
    spatial = (ndim - 2, ndim - 1)
    if viewer.dims.ndisplay == 2 and tuple(viewer.dims.displayed) == spatial:
        centre = np.asarray(viewer.dims.point, dtype=float)
        camera = viewer.scene.camera if hasattr(viewer, "scene") else viewer.camera  # napari >= 0.9 / older
        cy, cx = camera.center[-2:]
        half = np.asarray(viewer.canvas.size, dtype=float) / (2 * float(camera.zoom))
        corners = []
        for dy, dx in ((-1, -1), (1, 1)):
            p = centre.copy()
            p[-2], p[-1] = cy + dy * half[0], cx + dx * half[1]
            corners.append(np.asarray(layer.world_to_data(p))[geo.leading : geo.leading + 2])
        lo, hi = np.minimum(*corners), np.maximum(*corners)
        y0, x0 = (int(np.clip(np.floor(v + 0.5), 0, n)) for v, n in zip(lo, (h, w), strict=True))
        y1, x1 = (int(np.clip(np.ceil(v + 0.5), 0, n)) for v, n in zip(hi, (h, w), strict=True))
        if y1 - y0 >= 8 and x1 - x0 >= 8:
            rows, cols = slice(y0, y1), slice(x0, x1)
    side = max(rows.stop - rows.start, cols.stop - cols.start)
    stride = max(1, int(np.ceil(side / max_side)))
    return (rows, cols), stride
