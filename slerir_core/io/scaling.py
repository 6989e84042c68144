"""Value scaling: raw image values to the model's [0, 1] and back.

uint8 uses the fixed range 0-255, and float data that already lies in [0, 1] is used as it is (a dark image
must stay dark for the model to brighten it); every other array (uint16, float in other ranges, ...) uses the
data's own minimum and maximum, taken over the whole array, so every slice and tile is scaled alike and no
seam or flicker can come from the scaling. Nothing here imports torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from slerir_core.errors import ImageError
from slerir_core.io.layout import Layout


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
