"""Evaluation of restoration methods: PSNR/SSIM per task and noise level, laid out like the paper's Tables 1 and 2
(``slerir evaluate``, whose command line is in ``training/commands.py``).

Rows: the degraded input, the classical scikit-image baselines (``training/baselines.py``) and the model
(a weights file, or an untrained network of a named config). Columns: Dehazing, Deraining, Denoising per
σ, Deblurring, Low-light, the microscopy tasks, and the average over the columns.

Protocol (as PromptIR reports it): RGB in [0, 1], images centre-cropped to a multiple of 16, no
border crop; PSNR and SSIM from ``skimage.metrics``; SSIM with the default 7×7 uniform window,
``channel_axis=-1``, ``data_range=1`` (MoCE-IR uses Gaussian weights instead, which gives other numbers).
Test data are either real test sets in the PromptIR folder layout (``--data``; denoising inputs are
``clip(x + N(0, σ²), 0, 255)`` on uint8 images with a fixed seed) or a generated set: held-out clean images
(scikit-image's test split, then dead-leaves images with seeds disjoint from training), degraded with fixed
seeds. The training loop's validation calls the same functions, so there is one evaluation path.
"""

from __future__ import annotations

import math
import zlib
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from slerir_core.degradations.registry import family
from slerir_core.plan import family_verdict
from training.datasets import (
    TEST_SEED_TAG,
    crop_to_multiple,
    folder_items,
    held_out_clean_images,
    read_rgb,
)

PROTOCOL = (
    "SSIM: skimage structural_similarity, 7×7 uniform window (default), data_range=1, channel_axis=-1; "
    "PSNR data_range=1; RGB, no border crop, centre crop to a multiple of 16"
)
TITLES = {
    "haze": "Dehazing",
    "rain": "Deraining",
    "noise": "Denoising",
    "blur": "Deblurring",
    "lowlight": "Low-light",
    "micro_noise": "Micro denoise",
    "micro_blur": "Micro deblur",
}
COLUMN_ORDER = ("haze", "rain", "noise", "blur", "lowlight", "micro_noise", "micro_blur")
DEFAULT_SIGMAS = (15.0, 25.0, 50.0)
# Images per task of the generated set: with 4, the same two weights files differed by 1.45 dB on haze where 12
# images put them 0.45 dB apart, a spread above the 0.3 dB a release may lose on any task.
DEFAULT_IMAGES = 12
PSNR_CAP = 100.0  # identical images: report 100 dB instead of infinity


@dataclass(frozen=True)
class EvalCase:
    """One test image.

    Attributes:
        task: degradation name.
        level: noise σ (0-255 scale) for denoising, else ``None``.
        name: image name.
        degraded: H×W×3 float32 input.
        clean: H×W×3 float32 ground truth.
    """

    task: str
    level: float | None
    name: str
    degraded: np.ndarray
    clean: np.ndarray

    @property
    def column(self) -> str:
        """The table column: the task, plus σ for denoising."""
        return self.task if self.level is None else f"{self.task} σ={self.level:g}"


# -- test sets -----------------------------------------------------------------------------------------------


def _task_code(task: str) -> int:
    """A stable integer per task name, for seeds (not Python's salted ``hash``)."""
    return zlib.crc32(task.encode())


def generated_test_set(
    tasks: Sequence[str], images: int, size: int, sigmas: Sequence[float] = DEFAULT_SIGMAS, seed: int = 0
) -> list[EvalCase]:
    """Held-out clean images degraded with fixed seeds: ``images`` per task (per σ for ``noise``).

    Args:
        tasks: degradation names.
        images: images per task and level.
        size: image side (a multiple of 16 is kept as is).
        sigmas: noise levels for the ``noise`` task.
        seed: varies the degradations (the clean images are fixed).
    """
    from slerir_core.degradations import degrade

    clean = [(name, crop_to_multiple(img)) for name, img in held_out_clean_images(images, size)]
    cases = []
    for task in tasks:
        levels: Sequence[float | None] = sigmas if task == "noise" else (None,)
        for level in levels:
            for i, (name, img) in enumerate(clean):
                rng = np.random.default_rng((TEST_SEED_TAG, seed, _task_code(task), int(level or 0), i))
                params = {} if level is None else {"sigma": float(level)}
                degraded = np.clip(degrade(img, task, rng, **params), 0, 1).astype(np.float32)
                cases.append(EvalCase(task, level, name, degraded, img))
    return cases


MIXED = "mixed: rain | noise σ=25"


def mixed_test_set(images: int, size: int, seed: int = 0) -> list[EvalCase]:
    """Held-out clean images with rain on the left half and Gaussian noise (σ = 25) on the right half.

    The case GLGF is for: one image, two degradations in two regions, which one set of routes cannot both
    suit; only a prior that acts per region can treat each half for what it holds.
    """
    from slerir_core.degradations import degrade

    cases = []
    for i, (name, img) in enumerate(held_out_clean_images(images, size)):
        img = crop_to_multiple(img)
        rng = np.random.default_rng((TEST_SEED_TAG, seed, _task_code(MIXED), i))
        rainy = degrade(img, "rain", rng)
        noisy = degrade(img, "noise", rng, sigma=25.0)
        half = img.shape[1] // 2
        degraded = np.concatenate([rainy[:, :half], noisy[:, half:]], axis=1)
        cases.append(EvalCase(MIXED, None, name, np.clip(degraded, 0, 1).astype(np.float32), img))
    return cases


def evaluate_mixed(model: Any, device: Any, cases: Sequence[EvalCase]) -> dict[str, float]:
    """Mean PSNR of the mixed case: the input, and the model with the GLGF prior injected and not."""
    scores = {"input": float(np.mean([psnr_ssim(c.degraded, c.clean, ssim=False)[0] for c in cases]))}
    for label, inject in (("injection on", True), ("injection off", False)):
        model.inject_prior = inject
        try:
            method = ModelMethod(model, device)
            scores[label] = float(np.mean([psnr_ssim(method(c.degraded), c.clean, ssim=False)[0] for c in cases]))
        finally:
            model.inject_prior = True
    return scores


GREY = "grey: noise σ=25 the same in every channel"
GREY_SIGMA = 25.0


def grey_test_set(images: int, size: int, seed: int = 0) -> list[EvalCase]:
    """Held-out clean images made grey (channels averaged), with Gaussian noise (σ = 25) drawn once per pixel
    and repeated over the three channels: a grey picture, or one channel of microscopy data, as the Restorer
    feeds it to the network."""
    from slerir_core.degradations import degrade

    cases = []
    for i, (name, img) in enumerate(held_out_clean_images(images, size)):
        grey = np.repeat(crop_to_multiple(img).mean(axis=-1, keepdims=True), 3, axis=-1)
        rng = np.random.default_rng((TEST_SEED_TAG, seed, _task_code(GREY), i))
        noisy = degrade(grey, "noise", rng, sigma=GREY_SIGMA)[..., :1]
        cases.append(EvalCase(GREY, None, name, np.clip(noisy.repeat(3, axis=-1), 0, 1).astype(np.float32), grey))
    return cases


def evaluate_grey(model: Any, device: Any, cases: Sequence[EvalCase]) -> dict[str, float]:
    """Mean PSNR of the grey case: the input, the model as the Restorer runs it on a grey image (one piece, fp32),
    planned with its noise spread over the channels (``slerir_core.grey_noise``) and not, and NL-means given the
    true σ."""
    from slerir_core.restore import Restorer
    from training.baselines import non_local_means

    was_training, routing = model.training, model.routing  # the Restorer sets eval mode and hard routing
    restorer = Restorer(model, device, precision="fp32")

    def grey(spread: bool) -> Method:
        return lambda image: np.repeat(
            restorer.restore(image[..., 0], tile=0, spread_grey_noise=spread)[..., None], 3, -1
        )

    methods: dict[str, Method | None] = {
        "input": None,
        "model": grey(True),
        "model, noise as is": grey(False),
        "NL-means (true σ)": lambda image: non_local_means(image, GREY_SIGMA / 255),
    }
    try:
        return {label: evaluate_method(method, cases, ssim=False)[GREY]["psnr"] for label, method in methods.items()}
    finally:
        model.train(was_training)
        model.routing = routing


def centre_crop(images: Sequence[np.ndarray], size: int | None) -> list[np.ndarray]:
    """The same centre crop (at most ``size``², a multiple of 16) of each image of a pair."""
    h = min(i.shape[0] for i in images)
    w = min(i.shape[1] for i in images)
    if size is not None:
        h, w = min(h, size), min(w, size)
    h, w = h - h % 16, w - w % 16
    out = []
    for img in images:
        top, left = (img.shape[0] - h) // 2, (img.shape[1] - w) // 2
        out.append(np.ascontiguousarray(img[top : top + h, left : left + w]))
    return out


def folder_test_set(
    root: str | Path,
    tasks: Sequence[str],
    sigmas: Sequence[float] = DEFAULT_SIGMAS,
    images: int | None = None,
    size: int | None = None,
    seed: int = 0,
) -> list[EvalCase]:
    """Test cases from ``<root>/Test`` (PromptIR layout, see ``training/datasets.py``).

    Args:
        root: the data folder.
        tasks: tasks to load.
        sigmas: noise levels for ``noise``.
        images: at most this many images per task (all by default).
        size: centre-crop to at most ``size``² (for quick validation); full images by default.
        seed: seed of the synthesised test noise.
    """
    from slerir_core.degradations import degrade

    cases = []
    for task in tasks:
        items = folder_items(root, task, "test")[:images]
        for i, (degraded_path, clean_path) in enumerate(items):
            if clean_path is None:
                (clean,) = centre_crop([read_rgb(degraded_path)], size)
                for level in sigmas:
                    # PromptIR's test noise: clip(x + N(0, σ²), 0, 255) on the uint8 image, truncated to uint8.
                    rng = np.random.default_rng((TEST_SEED_TAG, seed, int(level), i))
                    noisy = degrade(clean, "noise", rng, sigma=float(level), quantize=True)
                    cases.append(EvalCase(task, level, degraded_path.stem, noisy, clean))
            else:
                degraded, clean = centre_crop([read_rgb(degraded_path), read_rgb(clean_path)], size)
                cases.append(EvalCase(task, None, degraded_path.stem, degraded, clean))
    return cases


# -- metrics and methods -------------------------------------------------------------------------------------


def psnr_ssim(restored: np.ndarray, clean: np.ndarray, ssim: bool = True) -> tuple[float, float]:
    """PSNR (dB) and SSIM (7×7 uniform window) of two H×W×3 images in [0, 1]; SSIM is NaN if not asked for."""
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    restored = np.clip(restored, 0, 1).astype(np.float64)
    clean = clean.astype(np.float64)
    p = (
        PSNR_CAP
        if np.array_equal(restored, clean)
        else min(PSNR_CAP, peak_signal_noise_ratio(clean, restored, data_range=1.0))
    )
    s = structural_similarity(clean, restored, channel_axis=-1, data_range=1.0) if ssim else math.nan
    return float(p), float(s)


Method = Callable[[np.ndarray], np.ndarray]


@dataclass
class ModelMethod:
    """Restores one image with the model (hard routing, eval mode, whole image) and records its routes.

    The network is called directly rather than through ``slerir_core.restore.Restorer``: the protocol feeds
    the [0, 1] values as they are (the Restorer rescales float images to their own min-max range, which
    would brighten a low-light input before the model sees it), restores whole images as PromptIR does,
    and leaves the model's mode and routing as it found them (the training loop validates mid-run).

    Args:
        model: the network.
        device: where it runs.
    """

    model: Any
    device: Any = "cpu"

    def __post_init__(self) -> None:
        self.routes: list[tuple[int, ...]] = []
        self.labels: list[str | None] = []  # the family a user is shown, None when uncertain

    def __call__(self, image: np.ndarray) -> np.ndarray:
        import torch

        net = self.model
        was_training, routing = net.training, net.routing
        net.eval()
        net.routing = "hard"
        try:
            with torch.no_grad():
                x = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))[None].float().to(self.device)
                restored, info = net(x)
        finally:
            net.train(was_training)
            net.routing = routing
        self.routes.append(tuple(int(r) for r in info["routes"][0].tolist()))
        if "task_probs" in info and net.config.tasks:
            probs = dict(zip(net.config.tasks, info["task_probs"][0].tolist(), strict=True))
            self.labels.append(family_verdict(probs).family)
        return restored[0].float().clamp(0, 1).permute(1, 2, 0).cpu().numpy()


def evaluate_method(method: Method | None, cases: Sequence[EvalCase], ssim: bool = True) -> dict[str, Any]:
    """Mean PSNR/SSIM of a method per column (``method=None`` scores the degraded input itself)."""
    scores: dict[str, list[tuple[float, float]]] = {}
    for case in cases:
        restored = case.degraded if method is None else method(case.degraded)
        scores.setdefault(case.column, []).append(psnr_ssim(restored, case.clean, ssim))
    return {
        col: {"psnr": float(np.mean([p for p, _ in v])), "ssim": float(np.mean([s for _, s in v])), "n": len(v)}
        for col, v in scores.items()
    }


def evaluate_baselines(cases: Sequence[EvalCase], ssim: bool = True) -> tuple[dict[str, Any], dict[str, str]]:
    """Scores of the classical baselines per column, and which method each column used."""
    from training.baselines import baseline_for

    results: dict[str, Any] = {}
    used: dict[str, str] = {}
    for task in order_columns([c.task for c in cases]):
        baseline = baseline_for(task)
        if baseline is None:
            continue
        used[task] = baseline.name
        results.update(evaluate_method(baseline.run, [c for c in cases if c.task == task], ssim))
    return results, used


def evaluate_known_sigma(
    cases: Sequence[EvalCase], denoise: Callable[[np.ndarray, float], np.ndarray], ssim: bool = True
) -> dict[str, Any]:
    """Scores of a denoiser given each Gaussian-noise case's true σ (0-1 scale), per column: the non-blind
    references the model's denoising is held against."""
    noisy = [c for c in cases if c.task == "noise" and c.level]
    scores: dict[str, Any] = {}
    for column in order_columns([c.column for c in noisy]):
        subset = [c for c in noisy if c.column == column]
        sigma = subset[0].level / 255
        scores.update(evaluate_method(lambda image, s=sigma: denoise(image, s), subset, ssim))
    return scores


def label_accuracy(tasks: Sequence[str], labels: Sequence[str | None]) -> dict[str, float]:
    """Per task: the share of its images whose label (the verdict the CLI and the plugin show) names the
    task's family; an uncertain verdict counts as wrong."""
    out: dict[str, float] = {}
    for task in dict.fromkeys(tasks):
        named = [label for t, label in zip(tasks, labels, strict=True) if t == task]
        out[task] = sum(label == family(task) for label in named) / len(named)
    return out


def routing_summary(
    tasks: Sequence[str], routes: Sequence[Sequence[int]], num_experts: int | None = None
) -> dict[str, Any]:
    """Per task: the most common path, its purity (share of the task's samples taking it), per-stage purity and
    per-stage expert load (each expert's share of the task's samples at that stage).

    Args:
        tasks: task of each sample.
        routes: expert per stage of each sample.
        num_experts: experts per stage (default: the highest index seen, plus one).
    """
    experts = num_experts or 1 + max((max(r) for r in routes), default=0)
    out: dict[str, Any] = {}
    for task in dict.fromkeys(tasks):
        paths = [tuple(r) for t, r in zip(tasks, routes, strict=True) if t == task]
        path, count = Counter(paths).most_common(1)[0]
        per_stage = [Counter(p[i] for p in paths) for i in range(len(path))]
        out[task] = {
            "path": "-".join(map(str, path)),
            "purity": count / len(paths),
            "stage_purity": [c.most_common(1)[0][1] / len(paths) for c in per_stage],
            "stage_load": [[c[j] / len(paths) for j in range(experts)] for c in per_stage],
            "n": len(paths),
        }
    return out


# -- the table -----------------------------------------------------------------------------------------------


def order_columns(columns: Sequence[str]) -> list[str]:
    """Columns in the paper's order (Dehazing, Deraining, Denoising by σ, Deblurring, Low-light, then the rest)."""

    def key(col: str) -> tuple[int, float, str]:
        task, _, level = col.partition(" σ=")
        rank = COLUMN_ORDER.index(task) if task in COLUMN_ORDER else len(COLUMN_ORDER)
        return rank, float(level or 0), task

    return sorted(dict.fromkeys(columns), key=key)


def column_title(col: str) -> str:
    """``noise σ=25`` -> ``Denoising σ=25``."""
    task, sep, level = col.partition(" σ=")
    return TITLES.get(task, task) + (f" σ={level}" if sep else "")


def with_average(scores: dict[str, Any], columns: Sequence[str]) -> dict[str, Any]:
    """Add the average over ``columns`` (over the columns present, flagged ``partial`` when some are not)."""
    present = [scores[c] for c in columns if c in scores]
    if not present:
        return dict(scores)
    avg = {
        "psnr": float(np.mean([v["psnr"] for v in present])),
        "ssim": float(np.mean([v["ssim"] for v in present])),
        "partial": len(present) < len(columns),
    }
    return {**scores, "average": avg}


def format_table(rows: dict[str, dict[str, Any]], columns: Sequence[str], notes: Sequence[str] = ()) -> str:
    """A plain-text table: one row per method, one ``PSNR / SSIM`` cell per column, then the average."""
    titles = [column_title(c) for c in columns] + ["Average"]
    keys = [*columns, "average"]

    def cell(v: dict[str, Any] | None) -> str:
        if v is None:
            return "—"
        ssim = "—" if math.isnan(v["ssim"]) else f"{v['ssim']:.3f}"
        return f"{v['psnr']:.2f} / {ssim}" + ("*" if v.get("partial") else "")

    table = [["Method", *titles]] + [[name, *(cell(scores.get(k)) for k in keys)] for name, scores in rows.items()]
    widths = [max(len(r[i]) for r in table) for i in range(len(table[0]))]
    lines = [" | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in table]
    lines.insert(1, "-+-".join("-" * w for w in widths))
    return "\n".join(["PSNR / SSIM  (" + PROTOCOL + ")", *lines, *notes])
