"""The device stream: the CPU stream's items, labels, flips and composites, a batch a function of its step."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from slerir_core.degradations.composite import DOMAINS
from training.config import DataConfig
from training.datasets import StreamSampler, SyntheticDataset, augment
from training.device_stream import DeviceStream, flip_rotation_maps

TASKS = ("noise", "rain", "haze", "blur", "lowlight", "micro_noise", "micro_blur")
CFG = DataConfig(tasks=TASKS, crop=32, on_device=True)
DEVICES = ["cpu", *(["cuda"] if torch.cuda.is_available() else [])]


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("banks")


def stream(cache, cfg=CFG, device="cpu", rank=0, world_size=1, seed=0) -> DeviceStream:
    sampler = StreamSampler(batch_size=10, steps_per_epoch=7, rank=rank, world_size=world_size)
    return DeviceStream(cfg, seed, device, sampler, bank_size=32, cache_dir=str(cache), workers=1)


def test_flip_rotation_maps_are_the_cpu_augmentations():
    image = np.random.default_rng(0).random((8, 8, 3))
    maps = flip_rotation_maps(8, torch.device("cpu"))
    flat = image.reshape(64, 3)
    expected = []
    for seed in range(64):
        rng = np.random.default_rng(seed)
        k, flip = int(rng.integers(4)), int(rng.integers(2))
        (out,) = augment([image], np.random.default_rng(seed))
        expected.append((4 * flip + k, out))
    for index, out in expected:
        np.testing.assert_array_equal(flat[maps[index].numpy()].reshape(8, 8, 3), out)
    assert len({m.numpy().tobytes() for m in maps}) == 8


@pytest.mark.parametrize("device", DEVICES)
def test_a_batch_is_a_function_of_the_step(cache, device):
    s = stream(cache, device=device)
    degraded, clean, labels = s.batch(9)
    again = s.batch(9)
    assert degraded.shape == clean.shape == (10, 3, 32, 32) and labels.shape == (10,)
    assert degraded.dtype == clean.dtype == torch.float32 and labels.dtype == torch.int64
    assert degraded.device.type == clean.device.type == labels.device.type == device
    assert float(degraded.min()) >= 0 and float(degraded.max()) <= 1
    assert all(torch.equal(a, b) for a, b in zip((degraded, clean, labels), again, strict=True))
    assert not torch.equal(s.batch(10)[1], clean)
    fresh = stream(cache, device=device).batch(9)  # a new stream (a resumed run) continues exactly
    assert all(torch.equal(a, b) for a, b in zip((degraded, clean, labels), fresh, strict=True))


def test_labels_and_items_are_the_cpu_streams(cache):
    cpu = SyntheticDataset(CFG, seed=0)
    for rank in (0, 1):
        s = stream(cache, rank=rank, world_size=2)
        for step in (0, 3, 8):
            labels = s.batch(step)[2].tolist()
            assert labels == [cpu[item][2] for item in s.sampler.batch(step)]
    a, b = stream(cache, rank=0, world_size=2).batch(2), stream(cache, rank=1, world_size=2).batch(2)
    assert not torch.equal(a[1], b[1])  # ranks read disjoint parts of the stream


def test_clean_crops_are_bank_crops_under_a_flip_or_rotation(cache):
    s = stream(cache)
    _, clean, _ = s.batch(4)
    side = CFG.crop + 2 * s.margin
    assert s.margin == 20 and s.bank.shape == (32, side, side, 3)  # the blur's reach around every crop
    bank = torch.from_numpy(np.array(s.bank)).permute(0, 3, 1, 2).float().reshape(32, 3, -1) / 255.0
    variants = bank[:, :, s.maps].reshape(32, 3, 8, side, side).permute(0, 2, 1, 3, 4)  # (bank, 8 maps, 3, S, S)
    centres = variants[..., s.margin : s.margin + CFG.crop, s.margin : s.margin + CFG.crop]
    for crop in clean:
        assert torch.isclose(centres, crop).all(dim=(-3, -2, -1)).any()


def test_degradations_follow_the_labels(cache):
    s = stream(cache)
    degraded, clean, labels = s.batch(0)  # items 0-9: the five photo tasks, twice each
    noise = labels == TASKS.index("noise")
    assert bool(((degraded[noise] - clean[noise]).std(dim=(1, 2, 3)) > 10 / 255).all())  # sigma >= 15 grey levels
    haze = labels == TASKS.index("haze")
    assert bool(degraded[haze].mean() > clean[haze].mean())  # haze brightens: its samples got the haze op
    low = labels == TASKS.index("lowlight")
    assert bool(degraded[low].mean() < 0.5 * clean[low].mean())


@pytest.mark.parametrize("composite_prob", [0.0, 1.0])
def test_composites_add_one_partner_of_the_same_domain(cache, composite_prob):
    from dataclasses import replace

    s = stream(cache, cfg=replace(CFG, composite_prob=composite_prob))
    labels = np.arange(200) % len(TASKS)
    chosen = s.compose(labels, np.random.default_rng(0))
    assert chosen[np.arange(200), labels].all()
    assert (chosen.sum(axis=1) == (2 if composite_prob else 1)).all()
    for row, label in zip(chosen, labels, strict=True):
        assert {DOMAINS[TASKS[t]] for t in np.flatnonzero(row)} == {DOMAINS[TASKS[label]]}
    partners = {TASKS[t] for row, label in zip(chosen, labels, strict=True) if label == 0 for t in np.flatnonzero(row)}
    assert partners == ({"noise", "rain", "haze", "blur", "lowlight"} if composite_prob else {"noise"})


@pytest.mark.parametrize("grey_prob", [0.0, 0.5, 1.0])
def test_grey_samples_are_the_cpu_streams_share(cache, grey_prob):
    from dataclasses import replace

    s = stream(cache, cfg=replace(CFG, dead_leaves_prob=1.0, grey_prob=grey_prob))  # colour crops only
    degraded, clean, _ = (torch.cat(parts) for parts in zip(*(s.batch(step) for step in range(4)), strict=True))
    grey = (clean[:, 1:] == clean[:, :1]).flatten(1).all(dim=1)
    assert torch.equal(grey, (degraded[:, 1:] == degraded[:, :1]).flatten(1).all(dim=1))
    share = float(grey.float().mean())
    assert share == grey_prob if grey_prob in (0.0, 1.0) else 0.3 < share < 0.7


def test_only_synthetic_data_is_made_on_the_device(cache):
    with pytest.raises(ValueError, match="on_device"):
        DataConfig(type="folders", root="/data", on_device=True)
    with pytest.raises(ValueError, match="synthetic"):
        stream(cache, cfg=DataConfig(type="folders", root="/data"))
