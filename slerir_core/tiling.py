"""Tiling, pure numpy: where the tiles of an image go, how their outputs blend, and the planning view.

A restoration runs the network on overlapping tiles (``TileGrid``) whose outputs are blended with separable
raised-cosine ramps normalised per axis, so every pixel's weights add up to one. A dask chunk runs the tiles
of the whole image's grid that touch it (``meets``), reading a margin as deep as they reach
(``chunk_reach``) from chunks merged to at least a tile (``merge_chunks``). Planning sees the whole image
block-averaged down to ``PLAN_SIDE`` (``planning_view``), while the router reads windows of it at full
resolution (``routing_mosaic``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from slerir_core.io.scaling import Scaling

PLAN_SIDE = 1024
"""Longest side of the view a plan is computed on (the extractors see 32-224 px views anyway)."""
ROUTING_WINDOWS = 8
"""Most windows per side that the router reads of an image (``window_starts``)."""


def tile_spans(length: int, tile: int, overlap: int) -> list[tuple[int, int]]:
    """Start and stop of the fewest tiles of size ``tile`` covering ``length`` with overlaps >= ``overlap``.

    Tiles are spread evenly, so the overlaps are equal (give or take a pixel) instead of one thin last
    tile; ``tile=0`` or a short axis gives a single span.
    """
    if tile <= 0 or length <= tile:
        return [(0, length)]
    count = math.ceil((length - overlap) / (tile - overlap))
    step = (length - tile) / (count - 1)
    return [(round(i * step), round(i * step) + tile) for i in range(count)]


def ramp(n: int) -> np.ndarray:
    """Raised cosine rising over ``n`` samples, strictly inside (0, 1); ``ramp(n) + ramp(n)[::-1] == 1``."""
    return (0.5 - 0.5 * np.cos(np.pi * (np.arange(n) + 0.5) / n)).astype(np.float32)


def blend_weights(spans: Sequence[tuple[int, int]], length: int) -> list[np.ndarray]:
    """Per span, 1-D weights that ramp over the overlaps with its neighbours and, summed over spans, give 1.

    A tile's edges, where its convolutions and attention saw the least context, get the least weight.
    """
    weights = []
    for i, (start, stop) in enumerate(spans):
        w = np.ones(stop - start, np.float32)
        if i > 0:
            n = min(spans[i - 1][1] - start, (stop - start) // 2)
            w[:n] *= ramp(n)
        if i + 1 < len(spans):
            n = min(stop - spans[i + 1][0], (stop - start) // 2)
            w[len(w) - n :] *= ramp(n)[::-1]
        weights.append(w)
    total = np.zeros(length, np.float32)
    for (start, stop), w in zip(spans, weights, strict=True):
        total[start:stop] += w
    return [w / total[start:stop] for (start, stop), w in zip(spans, weights, strict=True)]


@dataclass(frozen=True)
class TileGrid:
    """Rows and columns of tiles over an image, with their normalised blending weights.

    The 2-D weight of tile (i, j) is ``row_weights[i][:, None] * col_weights[j][None, :]``; since each
    axis' weights sum to one, so do the tiles' weights at every pixel.
    """

    rows: tuple[tuple[int, int], ...]
    cols: tuple[tuple[int, int], ...]
    row_weights: tuple[np.ndarray, ...]
    col_weights: tuple[np.ndarray, ...]

    @classmethod
    def build(cls, height: int, width: int, tile: int, overlap: int) -> TileGrid:
        """The grid for an image of ``height`` x ``width`` (``tile=0``: one tile, the whole image)."""
        rows, cols = tile_spans(height, tile, overlap), tile_spans(width, tile, overlap)
        return cls(tuple(rows), tuple(cols), tuple(blend_weights(rows, height)), tuple(blend_weights(cols, width)))

    def __len__(self) -> int:
        """Number of tiles."""
        return len(self.rows) * len(self.cols)

    @property
    def height(self) -> int:
        """Height of the image the grid covers (its last row of tiles ends there)."""
        return self.rows[-1][1]

    @property
    def width(self) -> int:
        """Width of the image the grid covers."""
        return self.cols[-1][1]


def middle_index(shape: Sequence[int]) -> tuple[int, ...]:
    """Index of the middle element along each axis (the middle slice of a stack)."""
    return tuple(n // 2 for n in shape)


def planning_view(plane: Any, scaling: Scaling, group: tuple[int, int], side: int = PLAN_SIDE) -> np.ndarray:
    """Channels ``group`` of a 2-D image as float32 in [0, 1], block-averaged so neither side exceeds ``side``.

    Works strip by strip, so a large image is never copied to float whole. A dask plane is read here.
    """
    height, width = plane.shape[:2]
    fy, fx = math.ceil(height / side), math.ceil(width / side)
    if fy == fx == 1:
        return scaling.to_unit(np.asarray(plane), group)
    h, w = height // fy, width // fx  # the last < fy rows and < fx columns are left out
    out = np.empty((h, w, group[1] - group[0]), np.float32)
    rows = max(1, 64 // fy) * fy
    for r0 in range(0, h * fy, rows):
        r1 = min(r0 + rows, h * fy)
        strip = scaling.to_unit(np.asarray(plane[r0:r1, : w * fx]), group)
        out[r0 // fy : r1 // fy] = strip.reshape((r1 - r0) // fy, fy, w, fx, -1).mean(axis=(1, 3))
    return out


def window_starts(side: int, window: int, most: int = ROUTING_WINDOWS) -> list[int]:
    """Starts of evenly spaced windows along a side: as many as cover it, at most ``most``, the last flush with
    the end; a side no longer than the window has one, at 0."""
    if side <= window:
        return [0]
    n = min(most, math.ceil(side / window))
    return [round(i * (side - window) / (n - 1)) for i in range(n)]


def routing_mosaic(plane: Any, scaling: Scaling, group: tuple[int, int], window: tuple[int, int]) -> np.ndarray:
    """The windows the router reads of a 2-D image (``SLERIR.degradation_embedding``), cut at full resolution
    and laid side by side, as float32 in [0, 1]: cut into windows again, the mosaic gives back the same ones.

    For an image planned on a reduced view (``planning_view``), whose block averages would show noise grain
    and blur at a fraction of their size. A dask plane is read window by window.
    """
    (h, w), (wh, ww) = plane.shape[:2], window
    lh, lw = min(h, wh), min(w, ww)
    return np.concatenate(
        [
            np.concatenate(
                [scaling.to_unit(np.asarray(plane[y : y + lh, x : x + lw]), group) for x in window_starts(w, ww)],
                axis=1,
            )
            for y in window_starts(h, wh)
        ],
        axis=0,
    )


def meets(span: tuple[int, int], start: int, stop: int) -> bool:
    """Whether ``span`` overlaps ``[start, stop)``."""
    return span[0] < stop and span[1] > start


def merge_chunks(chunks: Sequence[int], minimum: int) -> tuple[int, ...]:
    """Chunk lengths along one axis, neighbours merged until each is at least ``minimum`` (or the axis)."""
    merged: list[int] = []
    for size in chunks:
        if merged and merged[-1] < minimum:
            merged[-1] += size
        else:
            merged.append(size)
    if len(merged) > 1 and merged[-1] < minimum:
        last = merged.pop()
        merged[-1] += last
    return tuple(merged)


def chunk_reach(chunks: Sequence[int], spans: Sequence[tuple[int, int]]) -> int:
    """How far past a chunk, along one axis, the tiles that touch it reach: the overlap depth a chunk needs."""
    reach, start = 0, 0
    for size in chunks:
        stop = start + size
        touching = [s for s in spans if meets(s, start, stop)]
        reach = max(reach, start - min(s[0] for s in touching), max(s[1] for s in touching) - stop)
        start = stop
    return reach
