"""Copy a training run's weights to a file of bounded size: ``python scripts/pack_weights.py RUN DEST``.

``scripts/gpu_run.sh`` packs its run's weights with it (``--max-file-mib``, default 16). The run's
``model.safetensors`` is copied as it is when it fits, and rewritten in fp16 when it does not (the compact model
is about 17 MiB in fp32 and 9 MiB in fp16). When the run was cut off before its export, the weights come from the
last ``checkpoint.pt`` instead, so the steps trained before a late kill are kept. Prints one line saying what
was written; exits 1 when the run left no weights at all.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import torch

MIB = 2**20


def _save_small(model: torch.nn.Module, dest: Path, limit: int, metadata: dict[str, str]) -> str:
    from slerir_core.checkpoint import save_weights

    save_weights(model, dest, **metadata)
    if dest.stat().st_size <= limit:
        return "fp32"
    save_weights(model, dest, dtype=torch.float16, **metadata)
    return "fp16"


def pack(run: Path, dest: Path, limit: int) -> str:
    """Write the run's weights to ``dest`` (at most ``limit`` bytes when fp16 gets there); returns a report line.

    Raises:
        FileNotFoundError: the run holds neither ``model.safetensors`` nor ``checkpoint.pt``.
    """
    exported, checkpoint = run / "model.safetensors", run / "checkpoint.pt"
    if exported.is_file():
        if exported.stat().st_size <= limit:
            shutil.copyfile(exported, dest)
            return f"{dest.name}: the run's export, {dest.stat().st_size / MIB:.1f} MiB, as exported"
        from slerir_core.checkpoint import export_weights

        export_weights(exported, dest)  # fp32 is over the limit: fp16, metadata kept
        dtype, source = "fp16", "the run's export"
    elif checkpoint.is_file():
        from slerir_core.model import SLERIR
        from training.config import load_experiment
        from training.state import phase_of

        exp = load_experiment(run / "config.yaml")
        state = torch.load(checkpoint, map_location="cpu", weights_only=True)
        model = SLERIR(exp.model)
        model.load_state_dict(state["model"])
        meta = {
            "phase": str(phase_of(state)),
            "steps": str(state["step"]),
            "run": exp.name,
            "data": f"{exp.data.type}: {', '.join(exp.data.tasks)}",
            "note": "taken from checkpoint.pt: the run was stopped before its own export",
            "history": json.dumps(state.get("history", {})),
        }
        dtype = _save_small(model, dest, limit, meta)
        source = f"checkpoint.pt at step {state['step']}"
    else:
        raise FileNotFoundError(f"{run} holds neither model.safetensors nor checkpoint.pt")
    return f"{dest.name}: {source}, {dest.stat().st_size / MIB:.1f} MiB, {dtype}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="pack_weights.py", description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="the training run folder (slerir train --out)")
    parser.add_argument("dest", type=Path, help="the weights file to write")
    parser.add_argument(
        "--max-file-mib", type=float, default=16.0, help="largest file size in MiB: weights over it are saved in fp16"
    )
    args = parser.parse_args(argv)
    try:
        print(pack(args.run, args.dest, int(args.max_file_mib * MIB)))
    except FileNotFoundError as err:
        print(f"pack_weights.py: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
