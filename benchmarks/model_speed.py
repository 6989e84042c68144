"""Whole-model speed and memory: eager, eager + kernels, torch.compile + kernels; fp32 and bf16.

Prints one table for inference (routed, hard, whole image) and one for a training step (forward +
backward + Adam, a batch of crops). Every figure in a table comes from the same run, so compare ratios
within it. On a machine without a GPU it runs a small sanity version on the CPU (``--quick`` is implied).

    python benchmarks/model_speed.py                       # H100: paper config, 1024², batch 32 of 128²
    python benchmarks/model_speed.py --config compact --size 512
"""

from __future__ import annotations

import argparse
import contextlib
import time
from collections.abc import Callable

import torch

import kernels
from slerir_core.config import load_config
from slerir_core.model import SLERIR

VARIANTS = ("eager (reference ops)", "eager + kernels", "compile + kernels")


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


def build(config: str, device: torch.device, variant: str) -> tuple[SLERIR, Callable]:
    """The model and the callable that runs its backbone for the variant."""
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
    """One stage-2 step (hard routes, mixed across the batch) on ``batch`` crops: crops/s and peak memory."""
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
    return {"crops/s": batch / seconds, "peak GiB": peak}


def print_table(title: str, rows: list[tuple[str, str, dict[str, float]]]) -> None:
    """Rows of (variant, dtype, figures) under a title."""
    keys = list(rows[0][2])
    print(f"\n{title}")
    print(f"{'variant':<24}{'dtype':<10}" + "".join(f"{k:>12}" for k in keys))
    for variant, dtype, figures in rows:
        print(f"{variant:<24}{dtype:<10}" + "".join(f"{figures[k]:>12.2f}" for k in keys))


def main(argv: list[str] | None = None) -> None:
    """Run the inference and training tables."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="paper")
    parser.add_argument("--train-configs", nargs="+", default=["compact", "paper"])
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--crop", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--quick", action="store_true", help="tiny config and sizes (the CPU default)")
    args = parser.parse_args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if args.quick or device.type == "cpu":
        print("no GPU: a CPU sanity run of the tiny config (figures say nothing about GPU speed)")
        args.config, args.train_configs, args.size, args.batch, args.crop, args.repeats = "tiny", ["tiny"], 64, 2, 32, 2
    dtypes = {"fp32": torch.float32, "bf16": torch.bfloat16}
    variants = VARIANTS if device.type == "cuda" else VARIANTS[:2]

    rows = [
        (v, name, inference_row(args.config, args.size, dt, device, v, args.repeats))
        for v in variants
        for name, dt in dtypes.items()
    ]
    print_table(f"inference, {args.config} config, one {args.size}² image, hard routes ({device})", rows)
    for config in args.train_configs:
        rows = [
            (v, name, training_row(config, args.batch, args.crop, dt, device, v, args.repeats))
            for v in variants
            for name, dt in dtypes.items()
        ]
        print_table(f"training step, {config} config, batch {args.batch} of {args.crop}², mixed routes", rows)


if __name__ == "__main__":
    main()
