"""Training and test data: the PromptIR folder layout for real data, and degraded clean crops made on the fly.

Every training sample is a pure function of ``(seed, epoch, index)``: its task, its source image, its crop,
flip, rotation and degradation come from ``numpy.random.default_rng((seed, epoch, index))``. Nothing depends
on worker processes, on the order samples are drawn in or on earlier samples, so a resumed run continues the
stream exactly, and ranks of a multi-GPU run read disjoint parts of it (``StreamSampler``).

Tasks are sampled uniformly, in adjacent pairs: samples ``2i`` and ``2i + 1`` of an epoch have task
``tasks[i % T]``. So every batch of an even number of crops holds same-task pairs (positives for the
contrastive loss) and, from 4 crops, other tasks (negatives); a batch of ``2T`` crops holds every task.

Real data (``data.type: folders``) follows PromptIR's folders, extended to the five-task setting::

    <root>/Train/Denoise/**/*.png|jpg             BSD400 + WED clean images; noise (σ from data.noise_sigmas) is added
    <root>/Train/Derain/rainy/rain-*.png          Rain100L training pairs, matched by number:
    <root>/Train/Derain/gt/norain-*.png              rainy/rain-12.png ↔ gt/norain-12.png
    <root>/Train/Dehaze/synthetic/**/NNNN_A_B.jpg RESIDE OTS pairs, matched by the part before '_':
    <root>/Train/Dehaze/original/NNNN.jpg            synthetic/part1/0025_0.8_0.1.jpg ↔ original/0025.jpg
    <root>/Train/Deblur/input/*.png               GoPro training pairs, same file names
    <root>/Train/Deblur/target/*.png
    <root>/Train/Lowlight/input/*.png             LOL our485 low/high pairs, same file names
    <root>/Train/Lowlight/target/*.png

    <root>/Test/denoise/bsd68/*.png               CBSD68 clean images (noise added at test time, fixed seed)
    <root>/Test/derain/Rain100L/{input,target}/   same names
    <root>/Test/dehaze/{input,target}/            SOTS outdoor: input/0001_0.8_0.2.jpg ↔ target/0001.png
    <root>/Test/deblur/{input,target}/            GoPro test
    <root>/Test/lowlight/{input,target}/          LOL eval15

Every paired task folder may use any of the pair names ``input/target``, ``rainy/gt``, ``synthetic/original``,
``low/high`` or ``blur/sharp``, directly or one folder below (``Test/derain/Rain100L``). Pairs are matched by
file stem, after dropping a ``rain-``/``norain-`` prefix, falling back to the part of the stem before the
first ``_``; an input without a target is an error, never silently skipped.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from training.config import DataConfig

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
TRAIN_FOLDERS = {"noise": "Denoise", "rain": "Derain", "haze": "Dehaze", "blur": "Deblur", "lowlight": "Lowlight"}
TEST_FOLDERS = {"noise": "denoise", "rain": "derain", "haze": "dehaze", "blur": "deblur", "lowlight": "lowlight"}
PAIR_NAMES = (("input", "target"), ("rainy", "gt"), ("synthetic", "original"), ("low", "high"), ("blur", "sharp"))
# Tag of the seeds of held-out test data. Held-out dead-leaves images use it as a SeedSequence spawn key:
# a plain key (tag, i) would equal the training key (seed, epoch, index) = (tag, i, 0), because NumPy pads
# short keys with zeros; a spawn key cannot collide with a key that has none.
TEST_SEED_TAG = 0x7E57
ORDER_SEED_TAG = 0x0DE5  # seeds of the per-epoch image order of folder datasets


class DataError(ValueError):
    """A data folder that does not follow the expected layout."""


# -- images -----------------------------------------------------------------------------------------------


def read_rgb(path: str | Path) -> np.ndarray:
    """Read an image file as H×W×3 float32 in [0, 1] (grey is repeated, alpha dropped)."""
    from skimage import io

    img = np.asarray(io.imread(str(path)))
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=-1)
    img = img[..., :3]
    if img.dtype == np.uint8:
        return img.astype(np.float32) / 255.0
    if img.dtype == np.uint16:
        return img.astype(np.float32) / 65535.0
    return np.clip(img.astype(np.float32), 0.0, 1.0)


def crop_to_multiple(img: np.ndarray, base: int = 16) -> np.ndarray:
    """Centre-crop H and W to multiples of ``base`` (PromptIR's test protocol)."""
    h, w = img.shape[:2]
    nh, nw = h - h % base, w - w % base
    top, left = (h - nh) // 2, (w - nw) // 2
    return img[top : top + nh, left : left + nw]


def paired_crop(images: Sequence[np.ndarray], size: int, rng: np.random.Generator) -> list[np.ndarray]:
    """The same random ``size``² crop of each image; images smaller than that are reflect-padded first."""
    h = min(i.shape[0] for i in images)
    w = min(i.shape[1] for i in images)
    out = []
    pad_h, pad_w = max(0, size - h), max(0, size - w)
    top = int(rng.integers(0, max(h, size) - size + 1))
    left = int(rng.integers(0, max(w, size) - size + 1))
    for img in images:
        img = img[:h, :w]
        if pad_h or pad_w:
            img = np.pad(img, ((0, pad_h), (0, pad_w), (0, 0)), mode="reflect" if min(h, w) > 1 else "edge")
        out.append(img[top : top + size, left : left + size])
    return out


def augment(images: Sequence[np.ndarray], rng: np.random.Generator) -> list[np.ndarray]:
    """One of the 8 flips/rotations, the same for every image of a pair."""
    k, flip = int(rng.integers(4)), bool(rng.integers(2))
    out = []
    for img in images:
        img = np.rot90(img, k, axes=(0, 1))
        out.append(np.ascontiguousarray(img[:, ::-1] if flip else img))
    return out


def to_tensor(img: np.ndarray) -> torch.Tensor:
    """H×W×3 float array -> 3×H×W float32 tensor."""
    return torch.from_numpy(np.ascontiguousarray(img, dtype=np.float32).transpose(2, 0, 1).copy())


def centre_square(img: np.ndarray, size: int) -> np.ndarray:
    """Scale the short side to ``size`` (anti-aliased) and take the centre ``size``² square."""
    from skimage.transform import resize

    h, w = img.shape[:2]
    if min(h, w) != size:
        scale = size / min(h, w)
        shape = (max(size, round(h * scale)), max(size, round(w * scale)), img.shape[2])
        img = resize(img, shape, anti_aliasing=scale < 1, preserve_range=True).astype(np.float32)
        h, w = img.shape[:2]
    top, left = (h - size) // 2, (w - size) // 2
    return np.ascontiguousarray(img[top : top + size, left : left + size])


def held_out_clean_images(n: int, size: int) -> list[tuple[str, np.ndarray]]:
    """``n`` clean test images never used for training: scikit-image's test split, then dead-leaves images.

    Dead-leaves seeds are ``i`` with the spawn key ``(TEST_SEED_TAG,)``, disjoint from the ``(seed, epoch,
    index)`` training seeds.
    """
    from slerir_core.clean_images import dead_leaves, skimage_images

    out = [(name, centre_square(img, size)) for name, img in skimage_images("test")[:n]]
    i = 0
    while len(out) < n:
        rng = np.random.default_rng(np.random.SeedSequence(i, spawn_key=(TEST_SEED_TAG,)))
        out.append((f"dead_leaves_{i}", dead_leaves(size, rng)))
        i += 1
    return out


# -- folders ------------------------------------------------------------------------------------------------


def list_images(folder: Path) -> list[Path]:
    """Image files under ``folder``, recursively, sorted by path."""
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def _pair_key(stem: str) -> str:
    key = stem.lower()
    for prefix in ("norain-", "rain-"):
        if key.startswith(prefix):
            return key[len(prefix) :]
    return key


def match_pairs(inputs: Sequence[Path], targets: Sequence[Path]) -> list[tuple[Path, Path]]:
    """Match degraded inputs to clean targets by name (see the module docstring).

    Raises:
        DataError: if an input has no target.
    """
    by_key = {_pair_key(p.stem): p for p in targets}
    pairs, missing = [], []
    for path in inputs:
        key = _pair_key(path.stem)
        target = by_key.get(key) or by_key.get(key.split("_")[0])
        if target is None:
            missing.append(path.name)
        else:
            pairs.append((path, target))
    if missing:
        raise DataError(f"{len(missing)} input image(s) have no target, e.g. {missing[:3]}")
    return pairs


def find_pairs(task_dir: Path) -> list[tuple[Path, Path]]:
    """Degraded/clean pairs of a paired task folder (or of its first subfolder that holds a pair layout).

    Raises:
        DataError: no pair folders found, or unmatched inputs.
    """
    candidates = [task_dir, *sorted(p for p in task_dir.iterdir() if p.is_dir())] if task_dir.is_dir() else []
    for folder in candidates:
        for inp, tgt in PAIR_NAMES:
            if (folder / inp).is_dir() and (folder / tgt).is_dir():
                pairs = match_pairs(list_images(folder / inp), list_images(folder / tgt))
                if not pairs:
                    raise DataError(f"{folder / inp} holds no images")
                return pairs
    names = ", ".join(f"{a}/+{b}/" for a, b in PAIR_NAMES)
    raise DataError(f"{task_dir}: expected a pair of folders ({names}) here or one level below")


def clean_folder_images(task_dir: Path) -> list[Path]:
    """Clean images of a denoising folder (noise is synthesised).

    Raises:
        DataError: if there are none.
    """
    images = list_images(task_dir) if task_dir.is_dir() else []
    if not images:
        raise DataError(f"{task_dir}: no clean images ({', '.join(IMAGE_SUFFIXES)}) found")
    return images


def folder_items(root: str | Path, task: str, split: str) -> list[tuple[Path, Path | None]]:
    """(degraded, clean) paths of one task and split; denoising items are (clean, None).

    Args:
        root: the data folder.
        task: a task name with a folder (``TRAIN_FOLDERS``).
        split: ``train`` or ``test``.
    """
    folders = TRAIN_FOLDERS if split == "train" else TEST_FOLDERS
    if task not in folders:
        raise DataError(f"task {task!r} has no real-data folder; tasks with folders: {sorted(folders)}")
    task_dir = Path(root) / ("Train" if split == "train" else "Test") / folders[task]
    if task == "noise":
        return [(p, None) for p in clean_folder_images(task_dir)]
    return list(find_pairs(task_dir))


# -- training datasets ---------------------------------------------------------------------------------------


def degradation_margin(cfg: DataConfig, task: str | None = None) -> int:
    """The margin a clean crop needs around it for ``task`` (any of ``cfg.tasks`` if None), with the partner
    tasks a composite may add: the largest ``REACH`` among them. Degraded with it and cut back, a crop's border
    shows a blur of the picture around it, not of the reflection that filters pad a crop with."""
    from slerir_core.degradations.composite import DOMAINS
    from slerir_core.degradations.registry import REACH

    tasks = set(cfg.tasks) if task is None else {task}
    if cfg.composite_prob > 0:
        tasks |= {t for t in cfg.tasks if any(DOMAINS[t] == DOMAINS[u] for u in tasks)}
    return max(REACH[t] for t in tasks)


def cut_margin(img: np.ndarray, margin: int) -> np.ndarray:
    """``img`` (H×W×C) without ``margin`` pixels on every side."""
    return img[margin : img.shape[0] - margin, margin : img.shape[1] - margin] if margin else img


def _degrade(clean: np.ndarray, task: str, rng: np.random.Generator, cfg: DataConfig) -> np.ndarray:
    """Apply ``task`` to a clean crop; with ``composite_prob``, also a second task of the same domain.

    A composite goes through ``slerir_core.degradations.composite``, so the pair is applied in physical
    order (sensor noise last, never blurred or hazed over) whichever of the two is the labelled task.
    """
    from slerir_core.degradations.composite import DOMAINS, composite

    chosen = [task]
    if cfg.composite_prob > 0 and rng.random() < cfg.composite_prob:
        partners = [t for t in cfg.tasks if t != task and DOMAINS[t] == DOMAINS[task]]
        if partners:
            chosen.append(partners[int(rng.integers(len(partners)))])
    params = {"noise": {"sigma": float(rng.choice(cfg.noise_sigmas))}} if "noise" in chosen and cfg.noise_sigmas else {}
    return np.clip(composite(clean, chosen, rng, params), 0.0, 1.0).astype(np.float32)


class TrainStream(Dataset):
    """Base of the training datasets: item ``(epoch, index)`` -> (degraded, clean, task label).

    Args:
        cfg: the data config.
        seed: the run's seed.
    """

    def __init__(self, cfg: DataConfig, seed: int) -> None:
        self.cfg, self.seed = cfg, seed
        self.tasks = tuple(cfg.tasks)

    def rng(self, epoch: int, index: int) -> np.random.Generator:
        """The random source of one sample."""
        return np.random.default_rng((self.seed, epoch, index))

    def task_of(self, index: int) -> int:
        """Uniform task sampling in adjacent pairs: indices 2i and 2i + 1 share task ``i % T``."""
        return (index // 2) % len(self.tasks)

    def task_position(self, index: int) -> int:
        """How many earlier indices of the epoch have this index's task."""
        return (index // (2 * len(self.tasks))) * 2 + index % 2

    def pair(self, epoch: int, index: int, label: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """(degraded, clean) crops of one sample; subclasses implement it."""
        raise NotImplementedError

    def __getitem__(self, item: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor, int]:
        epoch, index = (int(v) for v in item)
        label = self.task_of(index)
        degraded, clean = self.pair(epoch, index, label, self.rng(epoch, index))
        return to_tensor(degraded), to_tensor(clean), label

    def __len__(self) -> int:
        raise NotImplementedError


class SyntheticDataset(TrainStream):
    """Clean crops (dead-leaves or scikit-image training images) degraded on the fly; an endless stream."""

    def __init__(self, cfg: DataConfig, seed: int) -> None:
        super().__init__(cfg, seed)
        self._images: list[np.ndarray] | None = None

    @property
    def images(self) -> list[np.ndarray]:
        """scikit-image's training images, loaded once per process (workers load their own)."""
        if self._images is None:
            from slerir_core.clean_images import skimage_images

            self._images = [img for _, img in skimage_images("train")]
        return self._images

    def clean_crop(self, rng: np.random.Generator, margin: int = 0) -> np.ndarray:
        """One clean crop from the configured sources, ``margin`` pixels larger than the crop on every side."""
        from slerir_core.clean_images import dead_leaves, random_crop

        size = self.cfg.crop + 2 * margin
        if rng.random() < self.cfg.dead_leaves_prob or not self.images:
            return dead_leaves(size, rng)
        img = self.images[int(rng.integers(len(self.images)))]
        if min(img.shape[:2]) < size:  # reflect-pad images smaller than the crop
            return paired_crop([img], size, rng)[0]
        return random_crop(img, size, rng)

    def pair(self, epoch: int, index: int, label: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        m = degradation_margin(self.cfg, self.tasks[label])
        (clean,) = augment([self.clean_crop(rng, m).astype(np.float32)], rng)
        grey = self.cfg.grey_prob > 0 and rng.random() < self.cfg.grey_prob
        if grey:
            clean = np.repeat(clean.mean(axis=-1, keepdims=True), 3, axis=-1)
        degraded = _degrade(clean, self.tasks[label], rng, self.cfg)
        if grey:
            degraded = np.repeat(degraded[..., :1], 3, axis=-1)
        return cut_margin(degraded, m), cut_margin(clean, m)

    def __len__(self) -> int:
        return 0  # endless: the length of an epoch comes from train.steps_per_epoch


class FolderDataset(TrainStream):
    """Training pairs from the PromptIR folder layout (see the module docstring); noise is synthesised.

    Within an epoch each task walks through a fresh permutation of its images, so every image is used
    before any repeats; tasks with fewer images cycle sooner (uniform task sampling, as in the paper).
    """

    def __init__(self, cfg: DataConfig, seed: int) -> None:
        super().__init__(cfg, seed)
        self.items = {task: folder_items(cfg.root, task, "train") for task in self.tasks}

    @functools.lru_cache(maxsize=64)  # noqa: B019 - a handful of (epoch, task) permutations per process
    def order(self, epoch: int, label: int) -> np.ndarray:
        """The task's image order in an epoch."""
        rng = np.random.default_rng((ORDER_SEED_TAG, self.seed, epoch, label))
        return rng.permutation(len(self.items[self.tasks[label]]))

    def pair(self, epoch: int, index: int, label: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        task = self.tasks[label]
        order = self.order(epoch, label)
        degraded_path, clean_path = self.items[task][int(order[self.task_position(index) % len(order)])]
        if clean_path is None:  # denoising: clean image, noise added after cropping
            (clean,) = augment(paired_crop([read_rgb(degraded_path)], self.cfg.crop, rng), rng)
            return _degrade(clean, task, rng, self.cfg), clean
        degraded, clean = paired_crop([read_rgb(degraded_path), read_rgb(clean_path)], self.cfg.crop, rng)
        degraded, clean = augment([degraded, clean], rng)
        return degraded, clean

    def __len__(self) -> int:
        """All pairs once: the natural epoch length."""
        return sum(len(v) for v in self.items.values())


def build_train_dataset(cfg: DataConfig, seed: int) -> TrainStream:
    """The training dataset a data config describes."""
    return SyntheticDataset(cfg, seed) if cfg.type == "synthetic" else FolderDataset(cfg, seed)


# -- sampling ------------------------------------------------------------------------------------------------


@dataclass
class StreamSampler:
    """Batches of ``(epoch, index)`` items for one rank, from ``start_step`` on, endlessly.

    Step ``s`` of the run covers the indices ``[i0, i0 + world_size * batch_size)`` of epoch
    ``s // steps_per_epoch``, with ``i0 = (s % steps_per_epoch) * world_size * batch_size``; rank ``r`` takes
    the ``r``-th contiguous block of ``batch_size`` (contiguous, so the same-task pairs of an even batch stay
    on one rank and every rank sees every task when its batch holds ``2T`` crops). The batch of a step
    depends only on the step, which is the whole data position a checkpoint needs.
    """

    batch_size: int
    steps_per_epoch: int
    rank: int = 0
    world_size: int = 1
    start_step: int = 0

    def batch(self, step: int) -> list[tuple[int, int]]:
        """The items of ``step`` on this rank."""
        epoch, within = divmod(step, self.steps_per_epoch)
        first = (within * self.world_size + self.rank) * self.batch_size
        return [(epoch, first + j) for j in range(self.batch_size)]

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        step = self.start_step
        while True:
            yield self.batch(step)
            step += 1
