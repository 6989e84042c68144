"""Value scaling: raw image values to the model's [0, 1] and back.

uint8 uses the fixed range 0-255, and float data that already lies in [0, 1] is used as it is (a dark image
must stay dark for the model to brighten it). Every other array (uint16, float in other ranges, ...) is mapped
by a range taken from the data, over the whole array, so every slice and tile is scaled alike and no seam or
flicker can come from the scaling:

* ``percentile`` (the default): the 1st to the 99.8th percentile, as CSBDeep and CAREamics normalise. A few
  hot or dead pixels (65535 in a 16-bit image of counts 100-2,100) then leave the signal its full range,
  where with the minimum and maximum they would squeeze it into the bottom 3 %.
* ``minmax``: the data's minimum and maximum.

What the network sees is clipped to [0, 1] (a hot pixel saturates), and its output is clipped to [0, 1] too:
the range it was trained on. A pixel whose input lay beyond the range gets its excess back (the input's
distance beyond 0 or 1) on top of the restored value, so hot and dead pixels stay where they were instead of
being flattened, the map back is the same linear one for every pixel, and an input left unchanged by the
network comes back exactly. The rule this gives for every dtype and range: the result lies within the
scaling's range, except where the input lay beyond it, and never beyond the input's own minimum and maximum.
Float input in [0, 1] therefore gives results in [0, 1]. Nothing here imports torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from slerir_core.errors import ImageError
from slerir_core.io.layout import Layout

SCALINGS = ("percentile", "minmax")
"""The values of the ``scaling`` option: how data that is neither uint8 nor float in [0, 1] is mapped."""
PERCENTILES = (1.0, 99.8)
"""The percentiles the ``percentile`` scaling maps to 0 and 1."""
HISTOGRAM_BINS = 65536


def check_dtype(dtype: np.dtype) -> np.dtype:
    """Accept unsigned/signed integers and floats.

    Raises:
        ImageError: for bool, complex, object and other dtypes.
    """
    dtype = np.dtype(dtype)
    if dtype.kind not in "uif":
        raise ImageError(f"cannot restore an array of dtype {dtype}: use an integer or float dtype")
    return dtype


def check_scaling(method: str) -> str:
    """Validate a ``scaling`` option.

    Raises:
        ImageError: a value outside ``SCALINGS``.
    """
    if method not in SCALINGS:
        raise ImageError(f"scaling must be one of {SCALINGS}, not {method!r}")
    return method


@dataclass(frozen=True)
class Scaling:
    """Affine map of each channel of the canonical view to [0, 1] and back.

    Attributes:
        offset: per channel, the raw value that maps to 0.
        scale: per channel, the raw range that maps to 1.
        dtype: the data's dtype, restored on the way back.
        rule: how the range was chosen: ``"uint8"`` (fixed 0-255), ``"unit"`` (float in [0, 1], as it is),
            or the ``scaling`` option that chose it from the data (``"percentile"``, ``"minmax"``).
    """

    offset: np.ndarray
    scale: np.ndarray
    dtype: np.dtype
    rule: str = "minmax"

    @classmethod
    def fit(cls, canonical: Any, layout: Layout, method: str = "percentile") -> Scaling:
        """The scaling of an array's canonical view (numpy, or dask: computes the ranges).

        Channels restored together share one range so colours keep their balance. A range whose percentiles
        meet (an image of few distinct values) widens to the minimum and maximum.

        Args:
            canonical: the ``(stack..., Y, X, C)`` view.
            layout: its layout, whose channel groups share a range.
            method: one of ``SCALINGS``, for data that is neither uint8 nor float in [0, 1]. A dask array's
                percentiles come from a histogram (see ``_percentiles``).

        Raises:
            ImageError: bad dtype or method, or NaN or infinite values.
        """
        dtype = check_dtype(canonical.dtype)
        check_scaling(method)
        channels = canonical.shape[-1]
        if dtype == np.uint8:
            return cls(np.zeros(channels), np.full(channels, 255.0), dtype, "uint8")
        low, high = _channel_ranges(canonical)
        if not (np.isfinite(low).all() and np.isfinite(high).all()):
            raise ImageError(
                "the image contains NaN or infinite values; replace them first "
                "(e.g. numpy.nan_to_num) so the restored values mean something"
            )
        offset, scale = np.zeros(channels), np.ones(channels)
        rule = "unit"
        for start, stop in layout.groups:
            lo, hi = low[start:stop].min(), high[start:stop].max()
            if dtype.kind == "f" and lo >= 0.0 and hi <= 1.0:
                continue  # already the model's range
            rule = method
            if method == "percentile":
                p_lo, p_hi = _percentiles(canonical[..., start:stop], lo, hi)
                if p_hi > p_lo:
                    lo, hi = p_lo, p_hi
            offset[start:stop] = lo
            scale[start:stop] = hi - lo if hi > lo else 1.0  # a constant image maps to 0 and back
        return cls(offset, scale, dtype, rule)

    def describe(self, groups: tuple[tuple[int, int], ...]) -> str:
        """The rule and the raw range of each channel group, for reports, e.g. ``"percentile 1-99.8: 100-2093"``.

        Args:
            groups: the layout's channel groups.
        """
        if self.rule == "uint8":
            return "uint8 0-255"
        if self.rule == "unit":
            return "as is (float in [0, 1])"
        name = f"percentile {PERCENTILES[0]:g}-{PERCENTILES[1]:g}" if self.rule == "percentile" else "minmax"
        ranges = ", ".join(f"{_number(self.offset[s])}-{_number(self.offset[s] + self.scale[s])}" for s, _ in groups)
        return f"{name}: {ranges}"

    def _unscaled(self, block: np.ndarray, group: tuple[int, int]) -> np.ndarray:
        start, stop = group
        out = block[..., start:stop].astype(np.float32)
        out -= self.offset[start:stop].astype(np.float32)
        out *= (1.0 / self.scale[start:stop]).astype(np.float32)
        return out

    def to_unit(self, block: np.ndarray, group: tuple[int, int]) -> np.ndarray:
        """Raw ``(..., C)`` values of channels ``group`` -> float32 clipped to [0, 1], what the network sees."""
        out = self._unscaled(block, group)
        return np.clip(out, 0.0, 1.0, out=out)

    def from_unit(self, block: np.ndarray, group: tuple[int, int], raw: np.ndarray) -> np.ndarray:
        """The network's float32 output of channels ``group`` -> the data's range and dtype.

        The output is clipped to [0, 1]; where the input ``raw`` lay beyond the scaling's range, its excess
        is added back (see the module's rule), so every value lies within the input's own range and fits
        its dtype. Integers are rounded.

        Args:
            block: the network's ``(..., k)`` output for channels ``group``.
            group: the channels, ``(start, stop)``.
            raw: the raw ``(..., C)`` input of the same pixels (all channels).

        Raises:
            ImageError: NaN or infinite network output (cast to an integer it would become plausible-looking
                zeros).
        """
        if not np.isfinite(block).all():  # checked before clipping, which would make infinities finite
            raise ImageError(
                "the network produced NaN or infinite values; its weights are probably corrupt or diverged in training"
            )
        start, stop = group
        unit = self._unscaled(raw, group)
        unit -= np.clip(unit, 0.0, 1.0)
        unit += np.clip(block, 0.0, 1.0)
        out = unit * self.scale[start:stop].astype(np.float32) + self.offset[start:stop].astype(np.float32)
        if self.dtype.kind in "ui":
            info = np.iinfo(self.dtype)  # float32 rounding can pass the largest int32 or int64
            np.rint(out, out=out)
            np.clip(out, info.min, info.max, out=out)
        return out.astype(self.dtype)


def _number(value: float) -> str:
    """A range's end for reports: whole numbers in full (65535), others to 4 significant digits."""
    return str(int(value)) if float(value).is_integer() else f"{value:.4g}"


def _channel_ranges(canonical: Any) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel minimum and maximum over all other axes, as float64 numpy arrays."""
    axes = tuple(range(canonical.ndim - 1))
    low, high = canonical.min(axis=axes), canonical.max(axis=axes)
    if hasattr(low, "compute"):  # dask: one pass over the data for both
        import dask

        low, high = dask.compute(low, high)
    return np.asarray(low, dtype=np.float64), np.asarray(high, dtype=np.float64)


def _percentiles(values: Any, low: float, high: float) -> tuple[float, float]:
    """``PERCENTILES`` of all the values of a numpy or dask array whose values lie in [``low``, ``high``].

    They come from a histogram of ``HISTOGRAM_BINS`` bins over the range, within a couple of bin widths of
    numpy's percentiles (about two counts for 16-bit data), so that a dask array, whose histogram is summed
    over its chunks in one pass, gets the very scaling the same data gets in memory (dask's own percentiles
    of chunks, merged, were hundreds of counts off on an uneven image).
    """
    if hasattr(values, "compute"):
        import dask.array as da

        counts, edges = da.histogram(values, bins=HISTOGRAM_BINS, range=(low, high))
        counts = counts.compute()
    else:
        counts, edges = np.histogram(values, bins=HISTOGRAM_BINS, range=(low, high))
    cumulative = np.cumsum(counts) / values.size
    found = np.interp(np.array(PERCENTILES) / 100, cumulative, edges[1:])
    return float(found[0]), float(found[1])
