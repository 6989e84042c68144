"""Training data: determinism, uniform task sampling, rank sharding, augmentation and the folder layout."""

from __future__ import annotations

import importlib
from collections import Counter

import numpy as np
import pytest
import torch

from training import datasets
from training.config import DataConfig
from training.datasets import (
    DataError,
    FolderDataset,
    StreamSampler,
    SyntheticDataset,
    _degrade,
    augment,
    degradation_margin,
    folder_items,
    held_out_clean_images,
    match_pairs,
    paired_crop,
)
from training.evaluate import folder_test_set

TASKS = ("noise", "rain", "haze", "blur", "lowlight")


@pytest.fixture(scope="module")
def synthetic() -> SyntheticDataset:
    return SyntheticDataset(DataConfig(tasks=TASKS, crop=32), seed=3)


def test_samples_are_a_function_of_seed_epoch_and_index(synthetic):
    a, b = synthetic[(1, 7)], synthetic[(1, 7)]
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) and a[2] == b[2]
    assert a[0].shape == (3, 32, 32) and a[0].dtype == torch.float32
    assert float(a[0].min()) >= 0 and float(a[0].max()) <= 1
    assert not torch.equal(synthetic[(2, 7)][1], a[1])  # another epoch, another crop
    other = SyntheticDataset(DataConfig(tasks=TASKS, crop=32), seed=4)
    assert not torch.equal(other[(1, 7)][1], a[1])


def test_tasks_are_sampled_uniformly_in_pairs(synthetic):
    labels = [synthetic.task_of(i) for i in range(100)]
    assert Counter(labels) == {t: 20 for t in range(len(TASKS))}
    assert all(labels[2 * i] == labels[2 * i + 1] for i in range(50))
    batch = StreamSampler(batch_size=10, steps_per_epoch=5).batch(3)
    assert sorted(synthetic.task_of(i) for _, i in batch) == sorted(2 * list(range(5)))


def test_ranks_split_the_global_batch():
    whole = StreamSampler(batch_size=8, steps_per_epoch=4)
    ranks = [StreamSampler(batch_size=4, steps_per_epoch=4, rank=r, world_size=2) for r in range(2)]
    for step in (0, 3, 4, 9):
        parts = [r.batch(step) for r in ranks]
        assert not set(parts[0]) & set(parts[1])
        assert parts[0] + parts[1] == whole.batch(step)
    assert whole.batch(5)[0][0] == 1  # step 5 is in epoch 1
    it = iter(StreamSampler(batch_size=2, steps_per_epoch=3, start_step=4))
    assert next(it) == whole.__class__(batch_size=2, steps_per_epoch=3).batch(4)


def test_paired_crop_and_augment_transform_both_images_alike():
    rng = np.random.default_rng(0)
    img = rng.random((40, 50, 3)).astype(np.float32)
    a, b = paired_crop([img, img + 1], 16, rng)
    assert a.shape == (16, 16, 3) and np.allclose(b, a + 1)
    a, b = augment([a, b], rng)
    assert np.allclose(b, a + 1)
    small = paired_crop([img[:8, :8]], 16, rng)[0]
    assert small.shape == (16, 16, 3)  # reflect-padded


def test_held_out_images_are_not_training_images():
    from slerir_core.clean_images import skimage_images

    held = held_out_clean_images(3, 32)
    train_names = {name for name, _ in skimage_images("train")}
    assert all(img.shape == (32, 32, 3) for _, img in held)
    assert not {name for name, _ in held} & train_names
    # Generated held-out images cannot share a seed with a training sample, even for a run seeded with the tag.
    from slerir_core.clean_images import dead_leaves
    from training.datasets import TEST_SEED_TAG

    name, image = held_out_clean_images(len(skimage_images("test")) + 1, 32)[-1]
    assert name == "dead_leaves_0"
    assert not np.array_equal(image, dead_leaves(32, np.random.default_rng((TEST_SEED_TAG, 0, 0))))


def test_folder_dataset_matches_pairs_by_name(promptir_root):
    cfg = DataConfig(type="folders", root=str(promptir_root), tasks=("noise", "rain", "haze", "lowlight"), crop=16)
    ds = FolderDataset(cfg, seed=0)
    assert len(ds) == 12
    seen = Counter()
    for index in range(16):
        degraded, clean, label = ds[(0, index)]
        seen[label] += 1
        assert degraded.shape == clean.shape == (3, 16, 16)
        if cfg.tasks[label] != "noise":
            assert torch.allclose(degraded - clean, torch.full_like(clean, 5 / 255), atol=1e-6)
    assert set(seen.values()) == {4}


def test_unmatched_inputs_are_errors(promptir_root):
    (promptir_root / "Train" / "Derain" / "gt" / "norain-2.png").unlink()
    with pytest.raises(DataError, match="no target"):
        folder_items(promptir_root, "rain", "train")
    with pytest.raises(DataError, match="pair of folders"):
        folder_items(promptir_root, "blur", "train")
    with pytest.raises(DataError, match="no target"):
        match_pairs([promptir_root / "x_1.png"], [])


def test_folder_test_set_crops_to_multiples_of_16(promptir_root):
    cases = folder_test_set(promptir_root, ["noise", "rain"], sigmas=(15, 50))
    assert [c.column for c in cases] == ["noise σ=15", "noise σ=50", "rain"]
    assert all(c.clean.shape == (32, 32, 3) for c in cases)
    noisy = cases[1].degraded
    assert noisy.std() > cases[0].degraded.std() > 0 and np.allclose(noisy * 255, np.round(noisy * 255), atol=1e-4)


def channels_alike(t: torch.Tensor) -> bool:
    """Whether the three channels of a (3, H, W) crop are the same picture."""
    return bool((t[1:] == t[:1]).all())


@pytest.mark.parametrize("grey_prob", [0.0, 0.5, 1.0])
def test_grey_samples_carry_the_same_noise_in_every_channel(grey_prob):
    cfg = DataConfig(tasks=("noise", "rain"), crop=16, dead_leaves_prob=1.0, grey_prob=grey_prob)  # colour crops only
    data = SyntheticDataset(cfg, seed=1)
    samples = [data[0, index] for index in range(40)]
    grey = [channels_alike(clean) for _, clean, _ in samples]
    assert all(channels_alike(degraded) == g for (degraded, _, _), g in zip(samples, grey, strict=True))
    share = sum(grey) / len(grey)
    assert share == grey_prob if grey_prob in (0.0, 1.0) else 0.3 < share < 0.7
    colour = [(d - c).std() for (d, c, label), g in zip(samples, grey, strict=True) if label == 0 and not g]
    assert all(s > 10 / 255 for s in colour)  # the noise itself is unchanged, only shared


def test_composite_samples_pair_tasks_of_one_domain(monkeypatch):
    composite_module = importlib.import_module("slerir_core.degradations.composite")
    calls = []
    real = composite_module.composite

    def spy(clean, tasks, rng, params=None):
        calls.append((list(tasks), dict(params or {})))
        return real(clean, tasks, rng, params)

    monkeypatch.setattr(composite_module, "composite", spy)
    cfg = DataConfig(tasks=("noise", "haze", "micro_noise", "micro_blur"), crop=16, composite_prob=1.0)
    clean = np.full((16, 16, 3), 0.4, np.float32)
    for seed in range(6):
        for task in cfg.tasks:
            out = _degrade(clean, task, np.random.default_rng(seed), cfg)
            assert out.shape == clean.shape and out.dtype == np.float32
            tasks, params = calls[-1]
            assert tasks[0] == task and len(tasks) == 2
            assert len({t.startswith("micro_") for t in tasks}) == 1
            if "noise" in tasks:
                assert params["noise"]["sigma"] in cfg.noise_sigmas


def test_spreading_degradations_see_a_margin_around_the_crop(monkeypatch):
    """A blurred crop is the centre of a blurred larger crop: its border blurs the picture around it."""
    seen = []
    real = datasets._degrade

    def spy(clean, task, rng, cfg):
        seen.append(clean)
        return real(clean, task, rng, cfg)

    monkeypatch.setattr(datasets, "_degrade", spy)
    cfg = DataConfig(tasks=("noise", "blur", "micro_blur"), crop=16, dead_leaves_prob=1.0)
    stream = SyntheticDataset(cfg, seed=0)
    for index, margin in ((0, 0), (2, 20), (4, 12)):  # indices 2i and 2i + 1 share task i
        degraded, clean, label = stream[(0, index)]
        assert cfg.tasks[label] == ("noise", "blur", "micro_blur")[index // 2]
        assert degraded.shape == clean.shape == (3, 16, 16)
        assert seen[-1].shape == (16 + 2 * margin, 16 + 2 * margin, 3)
        centre = seen[-1][margin : margin + 16, margin : margin + 16]
        np.testing.assert_array_equal(clean.permute(1, 2, 0).numpy(), centre)
    assert degradation_margin(cfg) == 20 and degradation_margin(DataConfig(tasks=("noise", "haze"))) == 0
    assert degradation_margin(DataConfig(tasks=("noise", "blur"), composite_prob=0.5), "noise") == 20
