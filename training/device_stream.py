"""Synthetic training batches made on the training device (``data.on_device: true``).

The CPU stream (``training.datasets.SyntheticDataset``) makes every crop and degradation in DataLoader
workers, about 17 ms a 128² crop on one core. Here the clean crops come from a bank made once
(``training.crop_bank``), and the degradations run as batched torch ops where the model trains
(``training.batched_degradations``), so data keeps up with a GPU's training step.

The stream keeps the CPU stream's contract: step ``s`` holds the items ``StreamSampler.batch(s)`` names, in the
same task interleave (``TrainStream.task_of``: same-task pairs, every task in ``2T`` crops) with the same
labels, the same composites (``composite_prob``, a partner of the same domain, physical order), the same share
of grey samples (``grey_prob``), and crops in the same source mix under one of the 8 flips and rotations. A
batch is a pure function of the run's seed, the step and the rank: the host draws (bank crops, flips,
composites, grey samples) come from numpy, the degradations' parameters from a torch generator on the device,
seeded for that batch. The CPU and CUDA generators differ, so a batch is the same on every machine of one
device type, not across types. The host's draws go to the device without waiting for it (``non_blocking``: a
blocking copy would wait for the step in flight), so the host queues the next batch while the GPU trains.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from slerir_core.degradations.composite import APPLY_ORDER, DOMAINS
from slerir_core.degradations.noise import NOISE_SIGMAS
from training.batched_degradations import BatchedDegradations, KernelBank
from training.config import DataConfig
from training.crop_bank import load_crop_bank
from training.datasets import StreamSampler, TrainStream, degradation_margin

DEVICE_STREAM_TAG = 0xD5EA
"""Spawn key of the batches' seeds, which keeps them apart from the CPU stream's and the bank's."""
BANK_SIZE = 8192
"""Clean crops in the bank (400 MB at 128²); under 8 flips and rotations, 65,536 distinct clean inputs."""
UPLOAD_CHUNK = 1024
"""Crops copied to the device at a time, so loading a bank never holds a second copy of it in memory."""


def flip_rotation_maps(side: int, device: torch.device) -> torch.Tensor:
    """Source pixel of each pixel under the 8 flips and rotations of ``training.datasets.augment``: (8, side²).

    Map ``4·flip + k`` is ``np.rot90(·, k)``, then a left-right flip if ``flip``; one ``gather`` applies a
    different map to each sample.
    """
    index = np.arange(side * side).reshape(side, side)
    maps = [np.rot90(index, k)[:, ::-1] if flip else np.rot90(index, k) for flip in (0, 1) for k in range(4)]
    return torch.from_numpy(np.stack([m.reshape(-1) for m in maps])).to(device)


class DeviceStream:
    """Batches ``(degraded, clean, labels)`` of a synthetic data config, made on ``device``.

    Args:
        cfg: a synthetic data config.
        seed: the run's seed (it seeds the bank, the kernel banks and every batch).
        device: where batches are made and returned.
        sampler: the items of each step on this rank (``StreamSampler``), as the CPU stream is read.
        bank_size: clean crops in the bank.
        cache_dir: where crop banks are kept; default ``training.crop_bank.default_cache_dir()``.
        workers: processes that make a missing bank; default one per available core.

    Raises:
        ValueError: ``cfg`` is not synthetic.
    """

    def __init__(
        self,
        cfg: DataConfig,
        seed: int,
        device: str | torch.device,
        sampler: StreamSampler,
        bank_size: int = BANK_SIZE,
        cache_dir: str | Path | None = None,
        workers: int | None = None,
    ) -> None:
        if cfg.type != "synthetic":
            raise ValueError(f"batches are made on the device only for synthetic data, not {cfg.type!r}")
        self.cfg, self.seed, self.sampler = cfg, seed, sampler
        self.device = torch.device(device)
        self.tasks = tuple(cfg.tasks)
        self.labeller = TrainStream(cfg, seed)
        bank = load_crop_bank(cfg, bank_size, seed, cache_dir, workers)
        self.bank: np.ndarray | torch.Tensor = bank if self.device.type == "cpu" else self._upload(bank)
        self.margin = degradation_margin(cfg)
        self.maps = flip_rotation_maps(cfg.crop + 2 * self.margin, self.device)
        kernels = KernelBank.build(seed, self.device)
        self.degradations = BatchedDegradations(cfg.noise_sigmas or NOISE_SIGMAS, kernels)
        # Partner table of the composites: row t lists the other tasks of t's domain, padded with -1.
        partners = [[j for j, o in enumerate(self.tasks) if o != t and DOMAINS[o] == DOMAINS[t]] for t in self.tasks]
        self.partner_count = np.array([len(p) for p in partners])
        self.partners = np.full((len(self.tasks), max(1, self.partner_count.max())), -1)
        for t, row in enumerate(partners):
            self.partners[t, : len(row)] = row

    def _upload(self, bank: np.ndarray) -> torch.Tensor:
        """The memory-mapped bank as one uint8 tensor on the device."""
        out = torch.empty(bank.shape, dtype=torch.uint8, device=self.device)
        for start in range(0, len(bank), UPLOAD_CHUNK):
            out[start : start + UPLOAD_CHUNK] = torch.from_numpy(np.array(bank[start : start + UPLOAD_CHUNK]))
        return out

    def batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The batch of ``step`` on this rank.

        Returns:
            ``degraded`` and ``clean``, (B, 3, S, S) float32 in [0, 1], and ``labels``, (B,) int64 task indices,
            all on the device.
        """
        items = self.sampler.batch(step)
        epoch, first = items[0]
        seeds = np.random.SeedSequence((self.seed, epoch, first), spawn_key=(DEVICE_STREAM_TAG,))
        host = np.random.default_rng(seeds)
        generator = torch.Generator(self.device).manual_seed(int(seeds.generate_state(1, np.uint64)[0] >> 1))
        labels = np.array([self.labeller.task_of(index) for _, index in items])
        clean = self.clean(host.integers(len(self.bank), size=len(items)), host.integers(8, size=len(items)))
        chosen = self.compose(labels, host)
        grey = None
        if self.cfg.grey_prob > 0:  # as the CPU stream: channels averaged, then the first degraded one in all three
            grey = torch.from_numpy(host.random(len(items)) < self.cfg.grey_prob).to(self.device, non_blocking=True)
            grey = grey[:, None, None, None]
            clean = torch.where(grey, clean.mean(dim=1, keepdim=True).expand_as(clean), clean)
        degraded = self.degrade(clean, chosen, generator)
        if grey is not None:
            degraded = torch.where(grey, degraded[:, :1].expand_as(degraded), degraded)
        inner = slice(self.margin, self.margin + self.cfg.crop)  # degraded with their margin, cut back
        degraded, clean = (t[..., inner, inner].contiguous() for t in (degraded, clean))
        return degraded, clean, torch.from_numpy(labels).to(self.device, non_blocking=True)

    def clean(self, picks: np.ndarray, transforms: np.ndarray) -> torch.Tensor:
        """Crops ``picks`` of the bank under flips and rotations ``transforms`` (indices into the 8 maps).

        Returns:
            (B, 3, S, S) float32 in [0, 1] on the device, S the crop side with the margin on every side.
        """
        if isinstance(self.bank, np.ndarray):
            crops = torch.from_numpy(self.bank[picks]).to(self.device)
        else:
            crops = self.bank.index_select(0, torch.from_numpy(picks).to(self.device, non_blocking=True))
        b, s = len(picks), self.bank.shape[1]
        flat = crops.permute(0, 3, 1, 2).reshape(b, 3, s * s)
        maps = self.maps[torch.from_numpy(transforms).to(self.device, non_blocking=True)]
        return (flat.gather(2, maps[:, None, :].expand(b, 3, s * s)).reshape(b, 3, s, s)).float() / 255.0

    def compose(self, labels: np.ndarray, host: np.random.Generator) -> np.ndarray:
        """Which tasks degrade each sample: its label's, and with ``composite_prob`` one partner of its domain.

        Returns:
            (B, T) booleans.
        """
        rows = np.arange(len(labels))
        chosen = np.zeros((len(labels), len(self.tasks)), bool)
        chosen[rows, labels] = True
        extra = (host.random(len(labels)) < self.cfg.composite_prob) & (self.partner_count[labels] > 0)
        slot = (host.random(len(labels)) * self.partner_count[labels]).astype(int)
        chosen[rows[extra], self.partners[labels, slot][extra]] = True
        return chosen

    def degrade(self, clean: torch.Tensor, chosen: np.ndarray, generator: torch.Generator) -> torch.Tensor:
        """Apply each task, in physical order, to the samples ``chosen`` gives it, one batched call per task.

        Args:
            clean: (B, 3, S, S) clean crops.
            chosen: (B, T) booleans (:meth:`compose`).
            generator: the batch's random source on the device.
        """
        out = clean.clone()
        for t in sorted(range(len(self.tasks)), key=lambda t: APPLY_ORDER[self.tasks[t]]):
            members = np.flatnonzero(chosen[:, t])
            if members.size:
                idx = torch.from_numpy(members).to(self.device, non_blocking=True)
                out.index_copy_(0, idx, self.degradations(out.index_select(0, idx), self.tasks[t], generator))
        return out
