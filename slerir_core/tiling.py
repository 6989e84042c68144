"""Tiling, pure numpy: where the tiles of an image go and how their outputs blend.

A restoration runs the network on overlapping tiles (``TileGrid``) whose outputs are blended with separable
raised-cosine ramps over their overlaps, normalised per axis by the ramps' sum, so the weights of any pixel
add up to one and no seam shows.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


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


SMALL_TILE = 256
"""Tiles below this side are costly: each is a whole pass of the network, and its overlap is run twice."""


class SmallTileWarning(UserWarning):
    """A tile smaller than ``SMALL_TILE`` was asked for: restoring will take many more network passes."""


def small_tile_note(height: int, width: int, tiling: tuple[int, int], default: tuple[int, int]) -> str | None:
    """A one-line note on the cost of a small tile for a plane of ``height`` x ``width``; None when the tile
    is not below ``SMALL_TILE`` or takes no more passes than the default.

    Measured once with the shipped compact model on a 2-core CPU that was also training (so the times are
    loose): a 256x256 uint16 stack of 5 slices took 27 and 65 s with ``tile=128`` (9 tiles a slice, in
    batches) against 21 and 29 s with the default tile (one a slice), in two alternating runs of each; on
    the same CPU unloaded, 33.5 s against 3.2 s.

    Args:
        height, width: the plane's size.
        tiling: the ``(tile, overlap)`` asked for.
        default: the model's default ``(tile, overlap)``.
    """
    tile = tiling[0]
    if tile == 0 or tile >= SMALL_TILE:
        return None
    tiles, usual = len(TileGrid.build(height, width, *tiling)), len(TileGrid.build(height, width, *default))
    if tiles <= usual:
        return None
    return (
        f"tile {tile} cuts each {height}x{width} plane into {tiles} tiles, each a pass of the network, against "
        f"{usual} with the default tile {default[0]}: small tiles multiply the time"
    )


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


def meets(span: tuple[int, int], start: int, stop: int) -> bool:
    """Whether ``span`` overlaps ``[start, stop)``."""
    return span[0] < stop and span[1] > start
