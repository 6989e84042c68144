"""Lazy restoration of dask arrays: chunk geometry, the in-memory values chunk by chunk, shipping to a cluster."""

from __future__ import annotations

import cloudpickle
import dask.array as da
import numpy as np
import pytest
from restoring import smooth_rgb, u16

from slerir_core.lazy import chunk_reach, merge_chunks


def test_chunks_are_merged_to_at_least_a_tile():
    assert merge_chunks((40, 40, 40, 30), 64) == (80, 70)
    assert merge_chunks((100, 100, 10), 64) == (100, 110)  # a short last chunk joins its neighbour
    assert merge_chunks((30,), 64) == (30,)  # the whole axis, however short


def test_chunk_reach_is_how_far_the_touching_tiles_reach_past_a_chunk():
    spans = [(0, 64), (48, 112), (96, 160)]
    assert chunk_reach((80, 80), spans) == 32  # chunk [0, 80) is touched by (48, 112): 32 past its end
    assert chunk_reach((160,), spans) == 0


def test_dask_stack_matches_the_in_memory_result(restorer):
    stack = u16((4, 40, 36))
    expected = restorer.restore(stack, axes="ZYX", plan_per="stack", tile=64, overlap=16)
    lazy = restorer.restore(da.from_array(stack, chunks=(1, 40, 36)), axes="ZYX", tile=64, overlap=16)
    assert isinstance(lazy, da.Array) and lazy.shape == stack.shape and lazy.dtype == stack.dtype
    assert np.array_equal(lazy.compute(), expected)


@pytest.mark.parametrize(
    ("chunks", "tile"),
    [
        ((1, 75, 85, 3), 64),  # chunks across Y and X, each crossed by tiles
        ((1, 40, 50, 3), 64),  # chunks smaller than a tile: merged to a tile
        ((2, 100, 64, 3), 64),
        ((1, 75, 85, 3), 0),  # one piece: each chunk needs the whole image
    ],
)
def test_dask_chunks_across_the_image_give_the_in_memory_values(restorer, chunks, tile):
    """Each chunk runs the whole image's tiles that touch it, with the same weights: one tile a pass gives
    equality, not a bound; batches of tiles, grouped per chunk, agree to the rounding of the last bit."""
    stack = (np.stack([smooth_rgb(150)[:, :170], smooth_rgb(150)[:, :170] ** 2]) * 255).astype(np.uint8)
    expected = restorer.restore(stack, axes="ZYXC", plan_per="stack", tile=tile, overlap=16, batch=1)
    lazy = restorer.restore(da.from_array(stack, chunks=chunks), axes="ZYXC", tile=tile, overlap=16, batch=1)
    got = lazy.compute()
    assert got.shape == stack.shape and got.dtype == np.uint8
    assert np.array_equal(got, expected)
    batched = restorer.restore(da.from_array(stack, chunks=chunks), axes="ZYXC", tile=tile, overlap=16).compute()
    assert np.abs(batched.astype(int) - expected).max() <= 1


def test_lazy_restoration_can_be_shipped_to_a_cluster(restorer):
    """A dask.distributed worker receives the graph pickled: restorer, plan and scaling included."""
    stack = u16((2, 24, 24))
    lazy = restorer.restore(da.from_array(stack, chunks=(1, 24, 24)), axes="ZYX", tile=64, overlap=16)
    shipped = cloudpickle.loads(cloudpickle.dumps(lazy))
    assert np.array_equal(shipped.compute(), lazy.compute())
