"""How many tiles of a plane one network pass runs.

On a GPU a pass costs tens of milliseconds of kernel launches and host work whatever its size (one 512² tile
of the compact model: about 59 ms, of which 1-2 ms arithmetic, on an H200), so the tiles of a plane run
together, as many a pass as free memory holds (``tile_bytes`` estimates what one tile needs). On the CPU a
batch is faster too, but a pass is also the unit of progress and of cancelling: see ``CPU_TILES``.
"""

from __future__ import annotations

import torch

from slerir_core.config import ModelConfig
from slerir_core.device import free_memory

MEMORY_SHARE = 0.5
"""Share of the free memory one pass may fill: ``tile_bytes`` is an estimate, and the allocator's
fragmentation, the arrays of the caller and other processes need room too."""

CPU_TILES = 9
"""Most tiles a pass runs on the CPU unless asked for more. Batches are faster there too: restoring 1024² RGB
in 9 tiles of 512 with the compact model (bf16 autocast, 2 threads of a Xeon with AMX, busy with a training
run; ``benchmarks/restore_batch.py``, 3 interleaved rounds, medians) took 51.1 s one tile a pass, 42.0 s
three (0.82) and 32.6 s nine (0.64); in fp32, 512² in 9 tiles of 256 took 49.9 s one at a time and 22.2 s
nine a pass (0.45). Larger passes were not measured, and each pass is a step the progress bar waits for and
a cancel cannot interrupt, so the CPU keeps to the nine measured."""

INDEX_LIMIT = 2**31 - 1
"""Most elements of one feature map: kernels index with 32-bit integers."""


def _padded_pixels(height: int, width: int) -> int:
    """Pixels of a tile as the network runs it: padded to a multiple of 8."""
    return (height + -height % 8) * (width + -width % 8)


def widest_map(config: ModelConfig, height: int, width: int) -> int:
    """Elements of the widest feature map of one tile's pass: the full-resolution stages (2 * dim channels)
    hold 3 * 2 * dim channels in the attention's q, k, v and ``int(2 * dim * ffn_factor)`` in the feed-forward."""
    channels = max(6 * config.dim, int(2 * config.dim * config.ffn_factor))
    return _padded_pixels(height, width) * channels


def tile_bytes(config: ModelConfig, height: int, width: int) -> int:
    """Estimated peak working memory of the backbone on one ``height`` x ``width`` tile, in bytes: 64 float32
    values a pixel for each channel of ``dim``, and 16 more.

    Measured on the CPU in fp32 (peak resident set, ``benchmarks/restore_memory.py``), a pass of nine 256² tiles
    took 2043 MiB with the compact model (dim 16: 57 values a pixel per channel of dim) and 826 MiB with the
    tiny one (dim 8: 46); bf16 autocast took about half (1049 MiB, compact). The skip connections of the
    U-Net and the temporaries of a full-resolution stage and its prior injection make up most of it.
    """
    return _padded_pixels(height, width) * (64 * config.dim + 16) * 4


def batch_size(
    count: int, tile: tuple[int, int], config: ModelConfig, device: torch.device, limit: int | None = None
) -> int:
    """Tiles one pass runs, for ``count`` tiles of ``tile`` (height, width) pixels on ``device``.

    Args:
        count: tiles left to run.
        tile: their shape (the tiles of a grid all have one).
        config: the model's configuration.
        device: where the network runs.
        limit: at most this many; ``None``: every tile on a GPU, ``CPU_TILES`` elsewhere.

    Returns:
        At least 1, at most ``count``, ``limit`` and what ``MEMORY_SHARE`` of the free memory holds.
    """
    if limit is None:
        limit = count if device.type == "cuda" else CPU_TILES
    size = min(count, limit, INDEX_LIMIT // widest_map(config, *tile))
    free = free_memory(device)
    if free is not None:
        size = min(size, int(free * MEMORY_SHARE) // tile_bytes(config, *tile))
    return max(1, size)
