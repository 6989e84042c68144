"""``slerir adapt``: adapt a model to your own noisy images, with no clean targets, into a new weights file."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from slerir_core.adaptation import AdaptProgress, AdaptResult, AdaptSettings
from slerir_core.adaptation.adapt import LOSSES
from slerir_core.checkpoint import save_weights
from slerir_core.commands._model_args import add_model_arguments, build_restorer
from slerir_core.commands.restore import collect_inputs
from slerir_core.errors import ConfigError, ImageError, WeightsError
from slerir_core.io.files import read_image
from slerir_core.restore import DEFAULT_WEIGHTS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``slerir adapt``."""
    parser.add_argument("inputs", nargs="+", help="noisy image files, folders or glob patterns (TIFF stacks too)")
    parser.add_argument("-o", "--out", required=True, type=Path, help="the adapted weights file to write")
    parser.add_argument("--minutes", type=float, default=5.0, help="wall-clock budget (default 5)")
    parser.add_argument("--axes", help="axes of every input, e.g. ZYX (default: each file's own, or inferred)")
    parser.add_argument(
        "--loss",
        choices=LOSSES,
        default=AdaptSettings.loss,
        help="pseudo-clean (your noise drawn on the model's own restorations; photon and read noise), blind-spot "
        "(any pixel-independent noise), sure (Gaussian-like noise, no saturation), or auto (default: pseudo-clean, "
        "or blind-spot where the noise cannot be measured)",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    add_model_arguments(parser)


def check_destination(out: Path, overwrite: bool, source: str | None) -> None:
    """Refuse to write over the shipped weights or the weights adapted from, and over any file without
    ``overwrite``.

    Raises:
        ValueError: with the reason.
    """
    if out.suffix != ".safetensors":
        raise ValueError(f"{out}: a weights file is named *.safetensors")
    if not out.parent.is_dir():
        raise ValueError(f"{out.parent}: no such folder")
    protected = {DEFAULT_WEIGHTS.resolve(), *([Path(source).resolve()] if source else [])}
    if out.resolve() in protected:
        raise ValueError(f"{out} holds the weights adapted from: write the adapted ones elsewhere")
    if out.exists() and not overwrite:
        raise ValueError(f"{out} exists: pass --overwrite to replace it")


def run(args: argparse.Namespace) -> int:
    """Adapt and write the weights; 2 with the reason for unusable input, 130 when interrupted."""
    files, problems, _ = collect_inputs(args.inputs)
    for problem in problems:
        print(f"error: {problem}", file=sys.stderr)
    if problems or not files:
        return 2
    try:
        restorer = build_restorer(args)
        check_destination(args.out, args.overwrite, restorer.weights)
        images, axes = [], []
        for path in files:
            array, file_axes = read_image(path)
            images.append(array)
            axes.append(args.axes or file_axes)
        print(
            f"adapting {restorer.describe()} on {len(files)} file(s) for at most {args.minutes:g} min", file=sys.stderr
        )
        adapted, result = restorer.adapt(images, minutes=args.minutes, axes=axes, progress=_report, loss=args.loss)
    except (ImageError, WeightsError, ConfigError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: no weights file written", file=sys.stderr)
        return 130
    save_weights(adapted.model, args.out, **result.metadata(restorer.weights or "model object"))
    print(summary(result, args.out))
    return 0


def _report(update: AdaptProgress) -> None:
    if update.held_out_loss is None:
        return
    print(
        f"  step {update.step}: held-out loss {update.held_out_loss:.6f} (best {update.best_loss:.6f}), "
        f"{update.seconds / 60:.1f} of {update.budget_seconds / 60:.1f} min",
        file=sys.stderr,
    )


def summary(result: AdaptResult, out: Path) -> str:
    """What was adapted and where it went, in one line."""
    start, best = result.curve[0][1], min(loss for _, loss in result.curve)
    return (
        f"wrote {out}: path {'-'.join(map(str, result.path))} adapted with {result.loss} for {result.steps} steps "
        f"({result.seconds / 60:.1f} min, {result.stopped}); held-out loss {start:.6f} -> {best:.6f} "
        f"(kept step {result.best_step}). Use it with: slerir restore --weights {out} ..."
    )
