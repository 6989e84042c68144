"""Tiles per network pass: one at a time against batches of tiles, on one device, timed interleaved.

Restores one uint8 RGB image with a fixed plan (planning is left out) for each number of tiles a pass
(``RestoreOptions.batch``), round after round in turn, and prints the median time of each and its ratio to
one tile a pass. On a machine busy with other work only the ratios mean much: the rounds interleave so that
the load weighs on every row alike. ``slerir_core.batching.CPU_TILES`` records what this measured on the CPU.

    python benchmarks/restore_batch.py                                   # compact, 1024², tile 512, CPU
    python benchmarks/restore_batch.py --size 768 --tile 256 --batches 1 4 16 --rounds 5
    python benchmarks/restore_batch.py --device cuda --size 4096 --batches 1 0   # 0: as many as memory holds
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings

from restore_memory import synthetic_image


def main(argv: list[str] | None = None) -> None:
    """Parse the options and print the table."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="compact", help="untrained model of this config (default: compact)")
    parser.add_argument("--weights", help="a weights file instead of an untrained model")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--tile", type=int, default=512)
    parser.add_argument("--overlap", type=int, default=32)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 3, 9], help="tiles a pass; 0: the default")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    args = parser.parse_args(argv)

    import torch

    from slerir_core.restore import Restorer
    from slerir_core.tiling import TileGrid

    if args.threads:
        torch.set_num_threads(args.threads)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the untrained-model notice: irrelevant to speed
        restorer = Restorer.from_pretrained(
            args.weights, device=args.device, config=None if args.weights else args.config, precision=args.precision
        )
    image = synthetic_image(args.size)
    plan = restorer.plan(image)
    options = restorer.resolve_options(plan=plan, tile=args.tile, overlap=args.overlap)

    def restore(batch: int) -> float:
        start = time.perf_counter()
        restorer.restore(image, options, batch=batch or None)
        if restorer.device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - start

    for batch in args.batches:
        restore(batch)  # warm-up: allocator pools, oneDNN primitives, cuDNN plans for this batch size
    times: dict[int, list[float]] = {batch: [] for batch in args.batches}
    for _ in range(args.rounds):
        for batch in args.batches:
            times[batch].append(restore(batch))
    tiles = len(TileGrid.build(args.size, args.size, args.tile, args.overlap))
    print(f"{restorer.describe()}, torch threads {torch.get_num_threads()}")
    print(f"{args.size}² RGB uint8, {tiles} tiles of {args.tile} px (overlap {args.overlap}), {args.rounds} rounds")
    print(f"{'tiles a pass':>12} {'median s':>9} {'ratio':>6}   all")
    base = statistics.median(times[args.batches[0]])
    for batch, seconds in times.items():
        median = statistics.median(seconds)
        print(
            f"{batch or 'default':>12} {median:>9.3f} {median / base:>6.2f}   {', '.join(f'{t:.3f}' for t in seconds)}"
        )


if __name__ == "__main__":
    main()
