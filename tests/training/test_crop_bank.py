"""The crop bank: the CPU stream's clean crops, the same for a seed however it is built, cached by settings."""

from __future__ import annotations

import numpy as np
import pytest

from training.config import DataConfig
from training.crop_bank import CROP_BANK_TAG, bank_key, load_crop_bank, make_crops
from training.datasets import SyntheticDataset

CFG = DataConfig(crop=32)


def test_a_crop_is_the_cpu_streams_clean_crop_on_the_uint8_grid():
    stream = SyntheticDataset(CFG, seed=5)
    crops = make_crops(CFG, seed=5, start=3, stop=6)
    for j, i in enumerate(range(3, 6)):
        rng = np.random.default_rng(np.random.SeedSequence((5, i), spawn_key=(CROP_BANK_TAG,)))
        expected = stream.clean_crop(rng, margin=20)  # the default tasks' blur reaches 20 px
        assert crops[j].dtype == np.uint8 and crops[j].shape == (72, 72, 3)
        np.testing.assert_allclose(crops[j] / 255.0, expected, atol=0.5 / 255 + 1e-6)


def test_the_source_mix_follows_dead_leaves_prob():
    all_leaves = make_crops(DataConfig(crop=32, dead_leaves_prob=1.0), seed=0, start=0, stop=4)
    no_leaves = make_crops(DataConfig(crop=32, dead_leaves_prob=0.0), seed=0, start=0, stop=4)
    pictures = SyntheticDataset(CFG, seed=0).images
    tol = 0.5 / 255 + 1e-6

    def in_a_picture(crop: np.ndarray) -> bool:
        """Whether the crop is a window of a scikit-image picture (a dead-leaves image is in none)."""
        c = crop / 255.0
        for img in pictures:
            corner = np.all(np.abs(img[: 1 - len(c) or None, : 1 - len(c) or None] - c[0, 0]) <= tol, axis=-1)
            for y, x in zip(*np.nonzero(corner), strict=True):
                if np.all(np.abs(img[y : y + len(c), x : x + len(c)] - c) <= tol):
                    return True
        return False

    assert all(in_a_picture(c) for c in no_leaves)
    assert not any(in_a_picture(c) for c in all_leaves)


def test_a_bank_is_the_same_however_many_processes_build_it(tmp_path):
    serial = load_crop_bank(CFG, 40, seed=2, cache_dir=tmp_path / "one", workers=1)
    parallel = load_crop_bank(CFG, 40, seed=2, cache_dir=tmp_path / "two", workers=2)
    assert isinstance(serial, np.memmap) and serial.dtype == np.uint8 and serial.shape == (40, 72, 72, 3)
    assert not serial.flags.writeable
    np.testing.assert_array_equal(serial, parallel)
    np.testing.assert_array_equal(serial[7:9], make_crops(CFG, seed=2, start=7, stop=9))
    assert len({c.tobytes() for c in serial}) == 40


def test_a_cached_bank_is_read_back_not_rebuilt(tmp_path):
    first = load_crop_bank(CFG, 8, seed=0, cache_dir=tmp_path, workers=1)
    (path,) = tmp_path.iterdir()  # one file, no temporary left behind
    assert path.name == f"crops-{bank_key(CFG, 8, 0)}.npy"
    stamp = path.stat().st_mtime_ns
    again = load_crop_bank(CFG, 8, seed=0, cache_dir=tmp_path, workers=1)
    assert path.stat().st_mtime_ns == stamp
    np.testing.assert_array_equal(first, again)


@pytest.mark.parametrize(
    "other",
    [
        (DataConfig(crop=64), 8, 0),
        (DataConfig(crop=32, dead_leaves_prob=0.2), 8, 0),
        (CFG, 9, 0),
        (CFG, 8, 1),
    ],
)
def test_the_bank_key_changes_with_every_setting_the_crops_depend_on(other):
    assert bank_key(*other) != bank_key(CFG, 8, 0)


def test_the_bank_key_ignores_settings_the_crops_do_not_depend_on():
    same_margin = DataConfig(crop=32, tasks=("noise", "blur"), composite_prob=0.5)  # blur's reach, as CFG's tasks
    assert bank_key(same_margin, 8, 0) == bank_key(CFG, 8, 0)
    assert bank_key(DataConfig(crop=32, tasks=("noise",)), 8, 0) != bank_key(CFG, 8, 0)  # no margin: other crops
