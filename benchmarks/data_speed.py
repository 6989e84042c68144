"""Training data speed: crops of 128² per second from the CPU stream against the crop bank + batched degradations.

Both make ``compact-synthetic``'s data (seven tasks, 128² crops, half of them dead leaves):

* CPU stream: ``SyntheticDataset`` items as one DataLoader worker makes them (clean crop and degradation), in
  one process on one core; a machine's DataLoader gives at most about this times its cores;
* device stream on the CPU: ``DeviceStream.batch`` with one torch thread (bank crops, flips, batched
  degradations), for the per-core comparison;
* device stream on CUDA, when a GPU is present.

Rows are measured in interleaved rounds, so that load from other processes falls on every row alike: on a
busy machine compare the ratios, not the absolute figures. The bank's one-off cost (crops/s over all cores)
is printed when this run makes it; a cached bank costs only its loading.

    python benchmarks/data_speed.py                  # about 2 minutes on 2 cores, bank included
    python benchmarks/data_speed.py --batch 64 --steps 20 --rounds 3
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from slerir_core.device import hardware_name
from training.config import load_experiment
from training.crop_bank import bank_key, default_cache_dir, usable_cores
from training.datasets import StreamSampler, build_train_dataset
from training.device_stream import DeviceStream


def cpu_stream_rate(crops: int, first: int) -> float:
    """Crops per second of the CPU stream in this process, over ``crops`` items from index ``first``."""
    dataset = build_train_dataset(load_experiment("compact-synthetic").data, seed=0)
    dataset[(0, 0)]  # loads the scikit-image pictures
    start = time.perf_counter()
    for index in range(first, first + crops):
        dataset[(1, index)]
    return crops / (time.perf_counter() - start)


def device_stream_rate(stream: DeviceStream, steps: int, first: int) -> float:
    """Crops per second of ``steps`` batches of the device stream from step ``first``."""
    stream.batch(first)  # warm-up: kernel caches, allocator
    sync = torch.cuda.synchronize if stream.device.type == "cuda" else (lambda: None)
    sync()
    start = time.perf_counter()
    for step in range(first + 1, first + 1 + steps):
        stream.batch(step)
    sync()
    return steps * stream.sampler.batch_size / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=32, help="crops per device batch")
    parser.add_argument("--steps", type=int, default=10, help="device batches timed per round")
    parser.add_argument("--crops", type=int, default=56, help="CPU stream items timed per round (7 tasks × 8)")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds of all rows")
    parser.add_argument("--bank", type=int, default=2048, help="crops in the bank")
    args = parser.parse_args(argv)

    data = load_experiment("compact-synthetic").data
    sampler = StreamSampler(args.batch, steps_per_epoch=1000)
    cached = (default_cache_dir() / f"crops-{bank_key(data, args.bank, 0)}.npy").is_file()
    start = time.perf_counter()
    streams = {"cpu": DeviceStream(data, 0, "cpu", sampler, bank_size=args.bank)}
    made = time.perf_counter() - start
    if torch.cuda.is_available():
        streams["cuda"] = DeviceStream(data, 0, "cuda", sampler, bank_size=args.bank)

    torch.set_num_threads(1)
    rows = {"CPU stream, 1 process": []} | {f"bank + batched degradations, {d}": [] for d in streams}
    for r in range(args.rounds):
        rows["CPU stream, 1 process"].append(cpu_stream_rate(args.crops, r * args.crops))
        for device, stream in streams.items():
            rows[f"bank + batched degradations, {device}"].append(device_stream_rate(stream, args.steps, r * 100))

    cpu = torch.device("cpu")
    print(f"compact-synthetic data, 128² crops, 7 tasks ({hardware_name(cpu)}; one torch thread on the CPU)")
    width = max(map(len, rows))
    base = statistics.median(next(iter(rows.values())))
    print(f"{'':<{width}}  crops/s  ratio  (rounds: crops/s)")
    for name, values in rows.items():
        rate = statistics.median(values)
        print(f"{name:<{width}}  {rate:7.1f}  {rate / base:5.1f}  ({', '.join(f'{v:.1f}' for v in values)})")
    if cached:
        print(f"\nbank: {args.bank} crops, cached; loaded with the kernel banks in {made:.1f} s")
    else:
        rate = args.bank / made
        print(f"\nbank: {args.bank} crops made in {made:.1f} s on {usable_cores()} cores ({rate:.0f} crops/s)")


if __name__ == "__main__":
    main()
