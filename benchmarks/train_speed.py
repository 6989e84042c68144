"""Training and inference speed of the compact model on this machine's CPU: the baseline next to the default.

Training rows run ``slerir train`` itself (data pipeline, losses, centre updates, optimiser) on
``compact-synthetic-cpu`` for a few steps each, and read the crops per second of every step from its
``train_log.csv`` (median over the steps after the first few). All rows are measured in one run, in interleaved
rounds, so that load from other processes falls on every row alike: compare the ratios, not the absolute
figures. Each row changes one lever on top of the one before:

* baseline: the starting configuration: one process (two torch threads), fp32, every soft-routing expert runs,
  8 crops of 64² a step;
* + bf16 autocast (where the CPU has native bf16), whose steps take the math attention in the extractors;
* + skip experts under 2 % probability (``model.soft_skip``);
* default: + two single-threaded processes of 4 crops (``train.cpu_processes: 0``), i.e. the config as shipped;
* for the routing choice: the default with gradients to every expert (``soft_gradients: all``).

The data row times one training sample as the phase-1 loader makes it (clean crop, dead leaves or a
scikit-image picture, and its degradation), the mean over the seven tasks' samples (their costs differ
tenfold: a median would hide the dear half), in the main process.

The inference row times ``Restorer.restore`` of a 512² RGB image (plan included, model load excluded), the
median of a few calls, with the compact model (shipped weights when present, else untrained: the time is the
same).

    python benchmarks/train_speed.py                 # about 8 minutes on 2 cores
    python benchmarks/train_speed.py --steps 40 --rounds 3
    python benchmarks/train_speed.py --init runs/compact-synthetic-cpu-phase1/model.safetensors
"""

from __future__ import annotations

import argparse
import csv
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from slerir_core.device import hardware_name, native_bf16

BASE = ["train.cpu_processes=1", "train.precision=fp32", "model.soft_skip=0.0", "train.phase1.batch_size=8"]
ROWS: dict[str, list[str]] = {
    "baseline (1 process × 2 threads, fp32, all experts)": BASE,
    "+ bf16 autocast": [*BASE[:1], "train.precision=auto", *BASE[2:]],
    "+ skip experts < 2 %": [*BASE[:1], "train.precision=auto", "train.phase1.batch_size=8"],
    "default (+ 2 processes × 1 thread, 4 crops each)": [],
    "default, but every expert learns (soft_gradients: all)": ["model.soft_gradients=all"],
}
COMMON = ["data.val_images=0", "train.log_every=1", "train.checkpoint_every=100000", "train.phase1.warmup_steps=1"]


def train_rate(overrides: list[str], steps: int, skip: int, init: str | None = None) -> float:
    """Median crops per second of one short phase-1 ``slerir train`` run with these overrides, from
    initialisation or from the weights ``init``."""
    with tempfile.TemporaryDirectory() as out:
        cmd = [sys.executable, "-m", "slerir_core.cli", "train", "--config", "compact-synthetic-cpu", "--steps"]
        cmd += [str(steps), "--out", out, "--phase", "1"]
        cmd += ["--init", init] if init else []
        cmd += ["--set", *COMMON, *overrides]
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        with (Path(out) / "train_log.csv").open() as fh:
            rates = [float(row["img_per_s"]) for row in csv.DictReader(fh)]
    return statistics.median(rates[skip:])


def sample_seconds(repeats: int) -> float:
    """Mean seconds of making one ``compact-synthetic-cpu`` training sample (crop and degradation)."""
    from training.config import load_experiment
    from training.datasets import build_train_dataset

    dataset = build_train_dataset(load_experiment("compact-synthetic-cpu").data, seed=0)
    dataset[(0, 0)]  # loads the scikit-image pictures
    times = []
    for index in range(repeats):
        start = time.perf_counter()
        dataset[(1, index)]
        times.append(time.perf_counter() - start)
    return statistics.fmean(times)


def inference_seconds(repeats: int) -> float:
    """Median seconds of restoring a 512² RGB image with the compact model, load excluded."""
    import numpy as np

    from slerir_core.restore import Restorer

    restorer = Restorer.from_pretrained(device="cpu")
    image = np.random.default_rng(0).integers(0, 256, (512, 512, 3), dtype=np.uint8)
    restorer.restore(image)  # warm-up: allocator, oneDNN primitives
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        restorer.restore(image)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30, help="steps per training run")
    parser.add_argument("--skip", type=int, default=5, help="first steps left out of the median (warm-up)")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds of all rows")
    parser.add_argument("--repeats", type=int, default=5, help="inference calls timed")
    parser.add_argument(
        "--init",
        help="phase-1 weights every training row starts from (a phase-1 run's model.safetensors): routing as sure "
        "as in most of a run, where skipping unlikely experts saves more than at initialisation",
    )
    args = parser.parse_args(argv)

    rates: dict[str, list[float]] = {name: [] for name in ROWS}
    for _ in range(args.rounds):
        for name, overrides in ROWS.items():
            rates[name].append(train_rate(overrides, args.steps, args.skip, args.init))
    base = statistics.median(next(iter(rates.values())))  # the first row is the baseline
    cpu = torch.device("cpu")
    bf16 = "native bf16" if native_bf16(cpu) else "no native bf16: precision auto stays fp32, the bf16 rows repeat fp32"
    start = f"from {args.init}" if args.init else "from initialisation"
    print(
        f"slerir train, compact-synthetic-cpu phase 1 {start}, 8 crops of 64² per step ({hardware_name(cpu)}; {bf16})"
    )
    width = max(map(len, ROWS))
    print(f"{'':<{width}}  crops/s  ratio  (rounds: crops/s)")
    for name, values in rates.items():
        rate = statistics.median(values)
        print(f"{name:<{width}}  {rate:7.2f}  {rate / base:5.2f}  ({', '.join(f'{v:.2f}' for v in values)})")
    samples = 14 * args.repeats  # every task, both indices of its pair, several times
    print(
        f"\ndata: one 64² training sample, crop and degradation: {sample_seconds(samples) * 1000:.1f} ms "
        f"(mean of {samples}, one process)"
    )
    seconds = inference_seconds(args.repeats)
    what = "compact, 512² RGB uint8, plan + restore, load excluded"
    print(f"\ninference: {what}: {seconds:.2f} s (median of {args.repeats})")


if __name__ == "__main__":
    main()
