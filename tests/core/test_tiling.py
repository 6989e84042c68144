"""Tiling: tiles that cover an image with the asked overlap, and blending weights that add up to one."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from slerir_core.tiling import SMALL_TILE, TileGrid, blend_weights, meets, small_tile_note, tile_spans


@pytest.mark.parametrize(
    ("length", "tile", "overlap"),
    [(96, 48, 16), (113, 64, 16), (64, 64, 8), (65, 64, 8), (1000, 256, 32), (7, 64, 16), (300, 32, 0)],
)
def test_tile_spans_cover_the_axis_with_the_overlap(length, tile, overlap):
    spans = tile_spans(length, tile, overlap)
    assert spans[0][0] == 0 and spans[-1][1] == length
    assert all(stop - start == min(tile, length) for start, stop in spans)
    for (_, stop), (start, _) in itertools.pairwise(spans):
        assert stop - start >= overlap  # neighbours overlap at least as asked, and never leave a gap
    if len(spans) > 1:  # the fewest tiles: one fewer would not reach the end with that overlap
        assert (len(spans) - 1) * (tile - overlap) + overlap < length


@pytest.mark.parametrize(("length", "tile", "overlap"), [(96, 48, 16), (113, 64, 16), (65, 64, 8), (300, 32, 0)])
def test_blend_weights_are_positive_and_sum_to_one(length, tile, overlap):
    spans = tile_spans(length, tile, overlap)
    total = np.zeros(length)
    for (start, stop), w in zip(spans, blend_weights(spans, length), strict=True):
        assert np.all(w > 0)
        total[start:stop] += w
    assert np.allclose(total, 1.0, atol=1e-6)


def test_tile_zero_means_one_piece():
    assert len(TileGrid.build(500, 300, 0, 0)) == 1


def test_meets_is_overlap_of_half_open_ranges():
    assert meets((10, 20), 19, 30) and meets((10, 20), 0, 11) and meets((10, 20), 12, 15)
    assert not meets((10, 20), 20, 30) and not meets((10, 20), 0, 10)


def test_a_small_tile_gets_a_note_with_its_tiles_against_the_defaults():
    note = small_tile_note(256, 256, (128, 32), (512, 32))
    assert note == (
        "tile 128 cuts each 256x256 plane into 9 tiles, each a pass of the network, against 1 with the default "
        "tile 512: small tiles multiply the time"
    )
    assert small_tile_note(256, 256, (SMALL_TILE, 32), (512, 32)) is None  # not small
    assert small_tile_note(256, 256, (0, 0), (512, 32)) is None  # no tiling
    assert small_tile_note(100, 100, (128, 32), (512, 32)) is None  # one tile either way: nothing costs more
