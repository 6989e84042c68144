"""Whole-model speed and memory: eager, eager + kernels, torch.compile + kernels; fp32 and bf16.

Prints one table for inference (routed, hard, whole image) and one per config for a training step (forward +
backward + Adam, a batch of crops with mixed routes): images (crops) per second, megapixels per second and
peak memory. Every figure in a table comes from the same run, so compare ratios within it. The timed part
is the backbone (``restore_features``, prior injections included); the extractors run once, untimed, for the
routes and the prior. On a machine without a GPU it runs a small sanity version on the CPU (``--quick``).

Without open_clip (the GPU image has none) the extractors are stand-ins with the configured output sizes and
as many parameters as the real towers (held as a buffer), so the backbone, its timing and the peak memory are
those of the real model; only the (untimed) routes and prior come from random towers. ``--stand-in`` forces it.

    python benchmarks/model_speed.py                       # H100: paper config, 1024², batch 32 of 128²
    python benchmarks/model_speed.py --config compact --size 512
    python benchmarks/model_speed.py --tables inference --variants "eager + kernels" --dtypes bf16
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import sys
import time
import types
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

import kernels

VARIANTS = ("eager (reference ops)", "eager + kernels", "compile + kernels")
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
# (embed_dim, width, layers, image_size, patch_size) of the open_clip towers the shipped configs name that
# SLER-IR does not register itself (those are read from slerir_core/model/clip_configs).
OPEN_CLIP_TOWERS = {"ViT-B-32": (512, 768, 12, 224, 32), "ViT-B-16": (512, 768, 12, 224, 16)}


def tower_size(model_name: str) -> tuple[int, int, int, int, int]:
    """(embed_dim, width, layers, image_size, patch_size) of an extractor tower."""
    if model_name in OPEN_CLIP_TOWERS:
        return OPEN_CLIP_TOWERS[model_name]
    path = Path(__file__).parents[1] / "slerir_core" / "model" / "clip_configs" / f"{model_name}.json"
    cfg = json.loads(path.read_text())
    vision = cfg["vision_cfg"]
    return cfg["embed_dim"], vision["width"], vision["layers"], vision["image_size"], vision["patch_size"]


class StandInExtractor(nn.Module):
    """An extractor's interface and parameter count without open_clip: CLS (B, embed_dim) and patch tokens
    (B, g, g, width) from a linear map of the image pooled to the patch grid."""

    def __init__(self, config) -> None:
        super().__init__()
        embed, width, layers, image, patch = tower_size(config.model_name)
        self.embed_dim, self.token_dim, self.image_size = embed, width, (image, image)
        self.grid = image // patch
        tower = layers * (12 * width**2 + 13 * width) + (3 * patch**2 + self.grid**2 + 6) * width + width * embed
        if config.kind == "daclip":  # the controller copy and a zero linear per block
            tower = 2 * tower + layers * (width**2 + width)
        self.cls = nn.Linear(3, embed)
        self.tokens = nn.Linear(3, width)
        self.register_buffer("weights", torch.zeros(tower), persistent=False)  # the towers' memory

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = F.adaptive_avg_pool2d(images.float(), self.grid).permute(0, 2, 3, 1)
        return self.cls(x.mean(dim=(1, 2))), self.tokens(x)

    def content(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self(images)


def use_stand_in_extractors() -> None:
    """Replace ``slerir_core.model.extractors`` (which imports open_clip) before the model is imported."""
    if "slerir_core.model" in sys.modules:
        raise RuntimeError("the stand-in extractors must be installed before slerir_core.model is imported")
    module = types.ModuleType("slerir_core.model.extractors")
    module.build_extractor = StandInExtractor

    def crops(images: torch.Tensor, grid: int, size: tuple[int, int]) -> torch.Tensor:
        b, c = images.shape[:2]
        x = F.interpolate(images.float(), size=(grid * size[0], grid * size[1]), mode="bilinear")
        return x.reshape(b, c, grid, size[0], grid, size[1]).permute(0, 2, 4, 1, 3, 5).reshape(-1, c, *size)

    module.crops = crops
    sys.modules[module.__name__] = module


def timed(fn: Callable[[], object], device: torch.device, repeats: int) -> float:
    """Median seconds of ``fn`` after a warm-up, synchronising the device around each call."""
    for _ in range(2):
        fn()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def build(config: str, device: torch.device, variant: str) -> tuple[nn.Module, Callable]:
    """The model and the callable that runs its backbone for the variant."""
    from slerir_core.config import load_config
    from slerir_core.model import SLERIR

    torch.manual_seed(0)
    model = SLERIR(load_config(config)).to(device)
    run = model.restore_features
    if variant.startswith("compile"):
        run = torch.compile(model.restore_features)
    return model, run


def reference_ops(variant: str):
    """Force the PyTorch twins for the eager baseline."""
    return kernels.use_reference(True) if variant.startswith("eager (ref") else contextlib.nullcontext()


def inference_row(
    config: str, size: int, dtype: torch.dtype, device: torch.device, variant: str, repeats: int
) -> dict[str, float]:
    """Restore one size² image with the router's hard routes; images/s, MP/s and peak memory."""
    model, run = build(config, device, variant)
    model.eval()
    x = torch.rand(1, 3, size, size, device=device)
    autocast = torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32)
    with torch.no_grad(), autocast, reference_ops(variant):
        info = model.analyse(x)

        def step() -> None:
            run(x, info["routes"], info.get("prior"))

        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        seconds = timed(step, device, repeats)
    peak = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else float("nan")
    return {"img/s": 1 / seconds, "MP/s": size * size / 1e6 / seconds, "peak GiB": peak}


def training_row(
    config: str, batch: int, crop: int, dtype: torch.dtype, device: torch.device, variant: str, repeats: int
) -> dict[str, float]:
    """One phase-2 step (hard routes, mixed across the batch) on ``batch`` crops: crops/s and peak memory."""
    model, run = build(config, device, variant)
    model.train()
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-4)
    x = torch.rand(batch, 3, crop, crop, device=device)
    routes = torch.randint(0, model.config.num_experts, (batch, 8), device=device)
    autocast = torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32)
    with torch.no_grad():
        prior = model.analyse(x).get("prior")

    def step() -> None:
        with autocast, reference_ops(variant):
            loss = (run(x, routes, prior).float() - x).abs().mean()
        loss.backward()
        optimiser.step()
        optimiser.zero_grad(set_to_none=True)

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    seconds = timed(step, device, repeats)
    peak = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else float("nan")
    return {"crops/s": batch / seconds, "MP/s": batch * crop * crop / 1e6 / seconds, "peak GiB": peak}


def print_table(title: str, rows: list[tuple[str, str, dict[str, float]]]) -> None:
    """Rows of (variant, dtype, figures) under a title."""
    keys = list(rows[0][2])
    print(f"\n{title}")
    print(f"{'variant':<24}{'dtype':<10}" + "".join(f"{k:>12}" for k in keys))
    for variant, dtype, figures in rows:
        print(f"{variant:<24}{dtype:<10}" + "".join(f"{figures[k]:>12.3g}" for k in keys), flush=True)


def main(argv: list[str] | None = None) -> None:
    """Run the inference and training tables."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="paper", help="config of the inference table")
    parser.add_argument("--train-configs", nargs="+", default=["compact", "paper"])
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--crop", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--tables", nargs="+", default=["inference", "training"], choices=["inference", "training"])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    parser.add_argument("--dtypes", nargs="+", default=list(DTYPES), choices=list(DTYPES))
    parser.add_argument("--stand-in", action="store_true", help="stand-in extractors even if open_clip imports")
    parser.add_argument("--json", type=Path, help="also write the tables to this JSON file")
    parser.add_argument("--quick", action="store_true", help="tiny config and sizes (the CPU default)")
    args = parser.parse_args(argv)
    if args.stand_in or importlib.util.find_spec("open_clip") is None:
        print("extractors: stand-ins (no open_clip); backbone and peak memory as the real model's")
        use_stand_in_extractors()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if args.quick or device.type == "cpu":
        print(f"quick: a sanity run of the tiny config on {device} (figures say nothing about GPU speed)")
        args.config, args.train_configs, args.size, args.batch, args.crop, args.repeats = "tiny", ["tiny"], 64, 2, 32, 2
    else:
        props = torch.cuda.get_device_properties(device)
        print(f"{props.name}; torch {torch.__version__}")
    variants = [v for v in args.variants if device.type == "cuda" or not v.startswith("compile")]
    dtypes = {name: DTYPES[name] for name in args.dtypes}
    results: dict[str, list] = {}

    if "inference" in args.tables:
        rows = [
            (v, name, inference_row(args.config, args.size, dt, device, v, args.repeats))
            for v in variants
            for name, dt in dtypes.items()
        ]
        print_table(f"inference, {args.config} config, one {args.size}² image, hard routes ({device})", rows)
        results[f"inference {args.config} {args.size}"] = rows
    for config in args.train_configs if "training" in args.tables else []:
        rows = [
            (v, name, training_row(config, args.batch, args.crop, dt, device, v, args.repeats))
            for v in variants
            for name, dt in dtypes.items()
        ]
        print_table(f"training step, {config} config, batch {args.batch} of {args.crop}², mixed routes", rows)
        results[f"training {config} {args.batch}x{args.crop}"] = rows
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
