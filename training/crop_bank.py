"""A bank of clean training crops, made once on every CPU core, cached on disk and read memory-mapped.

A crop of the CPU stream costs about 17 ms on one core (a dead-leaves image about 29 ms), which caps a
16-core GPU machine near 900 crops/s; the bank makes each crop once, from the same sources and in the same
mix as the CPU stream (``SyntheticDataset.clean_crop``: dead leaves with ``dead_leaves_prob``, crops of the
scikit-image training pictures otherwise), and the device stream reuses them under random flips and
rotations.

Crop ``i`` is a pure function of ``(seed, i)`` and of the source settings, whichever process makes it, so a
bank is the same for a seed however many processes built it. The file, ``crops-<hash>.npy`` (uint8,
N×S×S×3), is named by a hash of everything it depends on and written atomically, so a bank is made once per
machine and settings, and a killed build leaves no half-written bank behind.
"""

from __future__ import annotations

import functools
import hashlib
import json
import multiprocessing
import os
from pathlib import Path

import numpy as np
import skimage

from slerir_core.atomic import atomic_write, prepare_folder
from slerir_core.clean_images import SKIMAGE_SOURCES
from training.config import DataConfig
from training.datasets import SyntheticDataset, degradation_margin

CROP_BANK_TAG = 0xBA4C
"""Spawn key of the bank's seeds, which keeps them apart from the CPU stream's ``(seed, epoch, index)``."""
CROP_BANK_FORMAT = 2
"""Bumped whenever the crops a setting gives change, so older cached banks are not reused."""
CHUNK = 32
"""Crops a worker process makes per task."""


def usable_cores() -> int:
    """Cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/slerir``, or ``~/.cache/slerir``."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "slerir"


def bank_key(cfg: DataConfig, size: int, seed: int) -> str:
    """A hash of what a bank's crops depend on: crop side and margin, source mix, sources, count, seed and
    format."""
    sources = sorted(name for name, s in SKIMAGE_SOURCES.items() if s.split == "train")
    settings = {
        "crop": cfg.crop,
        "margin": degradation_margin(cfg),
        "dead_leaves_prob": cfg.dead_leaves_prob,
        "sources": sources,
        "skimage": skimage.__version__,
        "size": size,
        "seed": seed,
        "format": CROP_BANK_FORMAT,
    }
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]


@functools.cache
def _stream(cfg: DataConfig, seed: int) -> SyntheticDataset:
    """One stream per process and setting, so the scikit-image pictures load once per worker."""
    return SyntheticDataset(cfg, seed)


def make_crops(cfg: DataConfig, seed: int, start: int, stop: int) -> np.ndarray:
    """Crops ``start`` to ``stop`` of the bank of ``seed``: uint8, (stop - start, S, S, 3), S the crop side with
    the margin its tasks need on every side (``training.datasets.degradation_margin``).

    Args:
        cfg: the data config (``crop`` and ``dead_leaves_prob`` are used).
        seed: the bank's seed.
        start, stop: the crops' indices in the bank.
    """
    stream, margin = _stream(cfg, seed), degradation_margin(cfg)
    side = cfg.crop + 2 * margin
    crops = np.empty((stop - start, side, side, 3), np.uint8)
    for j, i in enumerate(range(start, stop)):
        rng = np.random.default_rng(np.random.SeedSequence((seed, i), spawn_key=(CROP_BANK_TAG,)))
        crops[j] = np.round(np.clip(stream.clean_crop(rng, margin), 0.0, 1.0) * 255.0)
    return crops


def _make_chunk(args: tuple[DataConfig, int, int, int]) -> tuple[int, np.ndarray]:
    cfg, seed, start, stop = args
    return start, make_crops(cfg, seed, start, stop)


def build_crop_bank(cfg: DataConfig, size: int, seed: int, path: str | Path, workers: int) -> None:
    """Make a bank of ``size`` crops in ``workers`` processes and write it to ``path`` atomically.

    Args:
        cfg: the data config.
        size: crops in the bank.
        seed: the bank's seed.
        path: the ``.npy`` file to write.
        workers: processes (1 makes the crops in this one).
    """
    chunks = [(cfg, seed, start, min(start + CHUNK, size)) for start in range(0, size, CHUNK)]
    with atomic_write(path) as tmp:
        side = cfg.crop + 2 * degradation_margin(cfg)
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(size, side, side, 3))
        if workers <= 1:
            for chunk in chunks:
                start, crops = _make_chunk(chunk)
                out[start : start + len(crops)] = crops
        else:
            # The platform's default start method, as DataLoader workers use: the children run numpy only.
            with multiprocessing.Pool(workers) as pool:
                for start, crops in pool.imap_unordered(_make_chunk, chunks):
                    out[start : start + len(crops)] = crops
        out.flush()
        del out


def load_crop_bank(
    cfg: DataConfig, size: int, seed: int, cache_dir: str | Path | None = None, workers: int | None = None
) -> np.ndarray:
    """The bank of ``size`` crops for these settings and ``seed``, memory-mapped; made first if not cached.

    Args:
        cfg: the data config (``crop``, ``dead_leaves_prob``).
        size: crops in the bank.
        seed: the bank's seed.
        cache_dir: where banks are kept; default :func:`default_cache_dir`.
        workers: processes that make a missing bank; default one per available core.

    Returns:
        A read-only uint8 array (size, S, S, 3).
    """
    folder = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    path = folder / f"crops-{bank_key(cfg, size, seed)}.npy"
    if not path.is_file():
        prepare_folder(folder)
        build_crop_bank(cfg, size, seed, path, workers or usable_cores())
    return np.load(path, mmap_mode="r")
