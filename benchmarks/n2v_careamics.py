"""Noise2Void from CAREamics on a stack of noisy images, for a wall-clock budget: the comparison of
``benchmarks/adaptation.py``.

It runs in a virtual environment of its own (careamics 0.3.5 needs torch < 2.14 and brings Lightning), which
``benchmarks/adaptation.py --methods ... n2v`` creates and calls; it imports nothing of SLER-IR. The
configuration is CAREamics' ``create_advanced_n2v_config`` with its defaults (U-Net, 0.2 % of the pixels
masked, each replaced from an 11-pixel window, flips and rotations, Adam at 1e-3 with ReduceLROnPlateau on the
validation loss) on 64² patches in batches of ``--batch``, except for what a wall-clock comparison needs:
Lightning's ``max_time`` is the budget, the epoch limit is out of reach, data loading stays in the process (no
workers) and torch gets ``--threads`` threads.

    <careamics venv>/bin/python benchmarks/n2v_careamics.py noisy.npz restored.npz --minutes 5
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time

import numpy as np


def lightning_duration(minutes: float) -> str:
    """Lightning's ``DD:HH:MM:SS`` for a budget in minutes (whole seconds, at least one)."""
    seconds = max(1, round(minutes * 60))
    return f"{seconds // 86400:02d}:{seconds // 3600 % 24:02d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def main(argv: list[str] | None = None) -> None:
    """Train on the ``noisy`` stack (S, Y, X) of the input file, predict it, write ``restored`` and a summary."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("noisy", help=".npz with 'noisy': float32 (S, Y, X)")
    parser.add_argument("restored", help=".npz to write: 'restored' (S, Y, X) and 'summary' (JSON)")
    parser.add_argument("--minutes", type=float, required=True, help="training budget")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args = parser.parse_args(argv)

    import torch
    from careamics import CAREamist
    from careamics.config.factories.n2v_factory import create_advanced_n2v_config

    torch.set_num_threads(args.threads)
    noisy = np.load(args.noisy)["noisy"].astype(np.float32)
    config = create_advanced_n2v_config(
        experiment_name="n2v_benchmark",
        data_type="array",
        axes="SYX",
        patch_size=[64, 64],
        batch_size=args.batch,
        num_epochs=100_000,
        num_workers=0,
        trainer_params={"max_time": lightning_duration(args.minutes), "accelerator": "cpu"},
    )
    with tempfile.TemporaryDirectory() as work:
        careamist = CAREamist(config, work_dir=work)
        start = time.perf_counter()
        careamist.train(train_data=noisy)
        seconds = time.perf_counter() - start
        trainer = careamist.trainer
        prediction, _ = careamist.predict(noisy, axes="SYX")
    restored = np.concatenate([np.asarray(p, np.float32).reshape(-1, *noisy.shape[1:]) for p in prediction])
    summary = {"seconds": seconds, "epochs": int(trainer.current_epoch), "steps": int(trainer.global_step)}
    np.savez(args.restored, restored=restored, summary=json.dumps(summary))


if __name__ == "__main__":
    main()
