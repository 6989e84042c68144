"""Peak memory and time of tiled restoration of large RGB images, one fresh process per size.

Each size runs in its own subprocess, which reports its peak resident set (``ru_maxrss``) after building
the model and warming it up (the baseline) and after restoring a uint8 RGB image of that size. The table
shows both, the bytes of the input and output arrays themselves, and what remains: the working memory
of restoration, which should not grow with the image once it is tiled. The last column is what
``slerir_core.batching.tile_bytes`` estimates for the tiles one pass runs (``--batch``, default one).

    python benchmarks/restore_memory.py                          # 1k, 2k, 4k; compact, tile 256, 2 threads
    python benchmarks/restore_memory.py --sizes 1024 2048 --threads 2 --weights path/to/weights.safetensors
    python benchmarks/restore_memory.py --sizes 1024 --batch 8                 # 8 tiles a pass
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
import warnings

import numpy as np

MIB = 2**20


def peak_rss_mib() -> float:
    """Peak resident set of this process so far, in MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / MIB


def synthetic_image(size: int, seed: int = 0) -> np.ndarray:
    """A size x size uint8 RGB image (smooth colours plus noise), built a strip at a time: no big float copy."""
    rng = np.random.default_rng(seed)
    image = np.empty((size, size, 3), np.uint8)
    x = np.linspace(0, 6 * np.pi, size, dtype=np.float32)
    for top in range(0, size, 256):
        y = np.linspace(top, min(top + 256, size) - 1, min(256, size - top), dtype=np.float32)[:, None] / size * 9
        strip = np.stack([np.sin(x + y), np.cos(0.7 * x - y), np.sin(0.3 * x * (1 + y / 9))], axis=-1)
        strip = 127.5 + 90 * strip + rng.normal(0, 20, strip.shape).astype(np.float32)
        image[top : top + strip.shape[0]] = np.clip(strip, 0, 255).astype(np.uint8)
    return image


def child(args: argparse.Namespace) -> None:
    """Restore one image and print one JSON line with the figures."""
    import torch

    from slerir_core.batching import tile_bytes
    from slerir_core.restore import Restorer
    from slerir_core.tiling import TileGrid

    torch.set_num_threads(args.threads)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the untrained-model notice: irrelevant to memory and speed
        restorer = Restorer.from_pretrained(args.weights, device="cpu", config=None if args.weights else args.config)
    restorer.restore(synthetic_image(64), tile=args.tile, overlap=args.overlap)  # warm-up: allocator pools
    baseline = peak_rss_mib()
    image = synthetic_image(args.size)
    start = time.perf_counter()
    restored = restorer.restore(image, tile=args.tile, overlap=args.overlap, batch=args.batch)
    seconds = time.perf_counter() - start
    assert restored.shape == image.shape and restored.dtype == image.dtype
    grid = TileGrid.build(args.size, args.size, args.tile, args.overlap)
    side = min(args.tile, args.size)
    estimate = min(args.batch or 1, len(grid)) * tile_bytes(restorer.config, side, side)
    print(
        json.dumps(
            {
                "size": args.size,
                "tiles": len(grid),
                "seconds": round(seconds, 1),
                "baseline_mib": round(baseline, 1),
                "peak_mib": round(peak_rss_mib(), 1),
                "arrays_mib": round((image.nbytes + restored.nbytes) / MIB, 1),
                "estimate_mib": round(estimate / MIB, 1),
            }
        )
    )


def parent(args: argparse.Namespace) -> None:
    """Run one child per size and print the table."""
    header = (
        f"{'size':>6} {'tiles':>6} {'seconds':>8} {'baseline MiB':>13} {'peak MiB':>9} {'in+out MiB':>11} "
        f"{'peak - baseline - in/out':>25} {'estimate MiB':>13}"
    )
    print(
        f"config {args.config if not args.weights else args.weights}, tile {args.tile}, overlap {args.overlap}, "
        f"{args.batch or 1} tiles a pass, {args.threads} threads, CPU, uint8 RGB"
    )
    print(header)
    for size in args.sizes:
        command = [
            sys.executable,
            __file__,
            "--child",
            "--size",
            str(size),
            "--config",
            args.config,
            "--tile",
            str(args.tile),
            "--overlap",
            str(args.overlap),
            "--threads",
            str(args.threads),
        ]
        if args.batch:
            command += ["--batch", str(args.batch)]
        if args.weights:
            command += ["--weights", args.weights]
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            print(f"{size:>6} failed (exit {done.returncode}): {done.stderr.strip().splitlines()[-1:]}")
            continue
        r = json.loads(done.stdout.strip().splitlines()[-1])
        working = r["peak_mib"] - r["baseline_mib"] - r["arrays_mib"]
        print(
            f"{size:>6} {r['tiles']:>6} {r['seconds']:>8.1f} {r['baseline_mib']:>13.0f} {r['peak_mib']:>9.0f} "
            f"{r['arrays_mib']:>11.0f} {working:>25.0f} {r['estimate_mib']:>13.0f}",
            flush=True,
        )


def main(argv: list[str] | None = None) -> None:
    """Parse the options; run the table, or (``--child``) one measurement."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1024, 2048, 4096])
    parser.add_argument("--config", default="compact", help="untrained model of this config (default: compact)")
    parser.add_argument("--weights", help="a weights file instead of an untrained model")
    parser.add_argument("--tile", type=int, default=256)
    parser.add_argument("--overlap", type=int, default=32)
    parser.add_argument("--batch", type=int, help="tiles a network pass (default: one, the CPU's default)")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (default: 2)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--size", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    child(args) if args.child else parent(args)


if __name__ == "__main__":
    main()
