"""The measured sections of a weights file's model card, as Markdown: training record, evaluation, routing.

    slerir evaluate --weights W --json eval.json
    python -m training.model_card --weights W --eval eval.json > sections.md

The training record comes from the weights' metadata (``history``, written by ``slerir train``); the tables
from the ``--json`` output of ``slerir evaluate``. The prose of the card (data provenance, known limits) is
written by hand around these sections.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from slerir_core.checkpoint import read_metadata
from training.evaluate import column_title
from training.state import as_history, phase_of

MODEL_ROW = "SLER-IR"


def training_record(meta: dict[str, str]) -> list[str]:
    """Markdown lines: training phase, steps, crops, device-hours per kind of hardware, hardware, the dates of the
    training runs, and the weight blend if the file is one."""
    history = as_history(json.loads(meta.get("history", "{}")))
    config = json.loads(meta["config"])
    hours = history.get("hours", {})
    blend = history.get("blend")
    blended = (
        [
            f"| weight blend | {blend['alpha']:.2f} × these weights + {1 - blend['alpha']:.2f} × the weights of step "
            f"{blend['base_steps']} they continued (`training/blend.py`) |"
        ]
        if blend
        else []
    )
    return [
        "| | |",
        "|---|---|",
        f"| model config | `{config['name']}` |",
        f"| training run | `{meta.get('run', '?')}`, phase {phase_of(meta) or '?'} |",
        f"| optimiser steps | {history.get('steps', meta.get('steps', '?'))} |",
        f"| crops seen | {history.get('crops', '?')} |",
        "| training hours | " + (", ".join(f"{k.upper()} {v:.2f} h" for k, v in sorted(hours.items())) or "?") + " |",
        f"| hardware | {'; '.join(history.get('hardware', [])) or '?'} |",
        f"| training run dates (UTC) | {', '.join(history['run_dates']) or '?'} |",
        *blended,
    ]


def evaluation_table(result: dict[str, Any]) -> list[str]:
    """Markdown lines: per column, PSNR / SSIM of the input, the classical baseline, BM3D and the model, and
    the model's gain over the input and over the best non-model row."""
    rows = result["rows"]
    model = next(name for name in rows if name.startswith(MODEL_ROW))
    others = [name for name in rows if name not in ("Degraded input", model)]
    head = ["task", "degraded input", *others, "this model", "gain over input", "over best other"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]

    def cell(name: str, col: str) -> str:
        v = rows[name].get(col)
        return "—" if v is None else f"{v['psnr']:.2f} / {v['ssim']:.3f}"

    for col in result["columns"]:
        mine, given = rows[model][col]["psnr"], rows["Degraded input"][col]["psnr"]
        best = max((rows[n][col]["psnr"] for n in others if col in rows[n]), default=None)
        over = "—" if best is None else f"{mine - best:+.2f}"
        cells = [cell(n, col) for n in ("Degraded input", *others, model)]
        lines.append(f"| {column_title(col)} | " + " | ".join(cells) + f" | {mine - given:+.2f} | {over} |")
    return lines


def routing_table(result: dict[str, Any]) -> list[str]:
    """Markdown lines: per task, the most common path, its purity and (with task labels) the share of images
    labelled with the task's family; then the mixed and grey cases, if measured."""
    labels = result.get("labels") or {}
    lines = ["| task | path (enc1 … refine) | purity | label right |", "|---|---|---|---|"]
    for task, r in (result.get("routing") or {}).items():
        right = f"{labels[task]:.0%}" if task in labels else "—"
        lines.append(f"| {column_title(task)} | `{r['path']}` | {r['purity']:.2f} | {right} |")
    paths = {r["path"] for r in (result.get("routing") or {}).values()}
    lines.append(f"\nDistinct paths: {len(paths)}.")
    if result.get("mixed"):
        scores = ", ".join(f"{k} {v:.2f} dB" for k, v in result["mixed"].items())
        lines.append(f"\nMixed case (rain on the left half, noise σ = 25 on the right), PSNR: {scores}.")
    if result.get("grey"):
        scores = ", ".join(f"{k} {v:.2f} dB" for k, v in result["grey"].items())
        lines.append(f"\nGrey pictures (noise σ = 25 the same in every channel), PSNR: {scores}.")
    return lines


def main(argv: list[str] | None = None) -> None:
    """Print the sections."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", type=Path, required=True, help="the weights file")
    parser.add_argument("--eval", type=Path, required=True, help="its `slerir evaluate --json` output")
    args = parser.parse_args(argv)
    result = json.loads(args.eval.read_text())
    sections = [
        ("Training record", training_record(read_metadata(args.weights))),
        ("Evaluation", [f"PSNR (dB) / SSIM. Test set: {result['test_set']}", "", *evaluation_table(result)]),
        ("Routing", routing_table(result)),
    ]
    for title, lines in sections:
        print(f"## {title}\n")
        print("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
