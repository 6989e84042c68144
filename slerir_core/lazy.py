"""Lazy restoration of dask arrays, chunk by chunk, with ``dask.array.map_overlap``.

Each chunk runs the tiles of the whole image's grid that touch it, with the same blending weights, reading
them from a margin as deep as those tiles reach past the chunk (``chunk_reach``), so the result equals the
in-memory one (planned with ``plan_per="stack"``) value for value when a network pass runs one tile
(``batch=1``). Passes of several tiles group the tiles of a chunk unlike those of the whole image, which
changes the last bits of float32 arithmetic (3e-7 of the range, measured on the CPU) and may round an integer
output the other way. A tile that crosses a chunk border is computed
by every chunk it touches: chunks several tiles wide keep that extra work small (chunks are merged, along Y
and X, to at least one tile: ``merge_chunks``). Stacks larger than memory work, locally or on a
``dask.distributed`` cluster (the restorer, model included, travels with the task graph)::

    restored = restorer.restore(dask_stack, axes="ZYX")    # lazy, same shape and dtype
    restored.to_zarr("restored.zarr")                        # or .compute() / tifffile.imwrite(...)

Computing the value range (one pass) and the plan (the middle slice) happen when ``restore`` is called.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from functools import partial
from typing import TYPE_CHECKING, Any

import numpy as np

from slerir_core.io.layout import Layout
from slerir_core.io.scaling import Scaling
from slerir_core.plan import Plan, PlanChooser, middle_index
from slerir_core.tiling import TileGrid, meets

if TYPE_CHECKING:
    from slerir_core.restore import RestoreOptions, Restorer


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


def restore_lazy(restorer: Restorer, layout: Layout, canon: Any, scaling: Scaling, opts: RestoreOptions) -> Any:
    """Lazy restoration of a dask array, chunk by chunk with overlap, one shared plan per channel group.

    Args:
        restorer: restores each chunk.
        layout, canon, scaling: the array's layout, canonical ``(stack..., Y, X, C)`` dask view and value
            scaling.
        opts: resolved options (``Restorer.resolve_options``); ``plan_per`` is taken as ``"stack"``.

    Returns:
        A dask array of the input's shape and dtype.
    """
    chooser = PlanChooser(restorer, layout, canon, scaling, replace(opts, plan_per="stack"))
    plans = [chooser.get(middle_index(layout.stack_shape), g) for g in range(len(layout.groups))]
    tile = opts.tile
    grid = TileGrid.build(layout.height, layout.width, tile, opts.overlap)
    y_axis, x_axis = canon.ndim - 3, canon.ndim - 2
    # A chunk holds every channel of its pixels, and is at least a tile long so that the margin the
    # tiles touching it need (under a tile) fits in its neighbours, as map_overlap requires.
    canon = canon.rechunk(
        {
            canon.ndim - 1: -1,
            y_axis: merge_chunks(canon.chunks[y_axis], tile or layout.height),
            x_axis: merge_chunks(canon.chunks[x_axis], tile or layout.width),
        }
    )
    depth = {
        y_axis: chunk_reach(canon.chunks[y_axis], grid.rows),
        x_axis: chunk_reach(canon.chunks[x_axis], grid.cols),
    }
    block = partial(_restore_block, restorer, plans, scaling, layout, grid, opts.batch, canon.chunks, depth)
    restored = canon.map_overlap(
        block, depth=depth, boundary="none", dtype=canon.dtype, meta=np.empty((0,) * canon.ndim, canon.dtype)
    )
    return layout.original(restored)


def _restore_block(
    restorer: Restorer,
    plans: list[Plan],
    scaling: Scaling,
    layout: Layout,
    grid: TileGrid,
    batch: int | None,
    chunks: tuple[tuple[int, ...], ...],
    depth: dict[int, int],
    block: np.ndarray,
    block_info: dict | None = None,
) -> np.ndarray:
    """Restore one dask chunk (canonical axes, with ``map_overlap``'s margin) in place of its function.

    Only the chunk itself is computed; the margin of the returned block, which ``map_overlap`` trims, is zero.
    """
    location = block_info[0]["chunk-location"]
    y_axis, x_axis = block.ndim - 3, block.ndim - 2
    top = sum(chunks[y_axis][: location[y_axis]])
    left = sum(chunks[x_axis][: location[x_axis]])
    region = (top, left, top + chunks[y_axis][location[y_axis]], left + chunks[x_axis][location[x_axis]])
    # With boundary="none" the first chunk along an axis has no margin before it.
    origin = (top - (depth[y_axis] if location[y_axis] else 0), left - (depth[x_axis] if location[x_axis] else 0))
    out = np.zeros(block.shape, block.dtype)
    core = (slice(top - origin[0], region[2] - origin[0]), slice(left - origin[1], region[3] - origin[1]))
    for index in np.ndindex(block.shape[:-3]):
        for plan, group in zip(plans, layout.groups, strict=True):
            steps = restorer.restore_region_steps(
                block[index], origin, out[index][core], region, scaling, group, plan, grid, batch
            )
            for _ in steps:
                pass
        for c in layout.passthrough:
            out[index][..., c] = block[index][..., c]
    return out
