"""The ``slerir train`` and ``slerir evaluate`` command lines: their options, how they are read, and the exit
codes (0 done, 2 with a one-line reason for an unusable request).

``slerir_core.cli`` imports this module only when one of the two runs. Under torchrun every rank runs the
same command::

    torchrun --nproc_per_node 4 -m slerir_core.cli train --config compact-synthetic
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import yaml

from slerir_core.checkpoint import load_model
from slerir_core.config import load_config
from slerir_core.degradations import TASKS
from slerir_core.errors import ConfigError, WeightsError
from slerir_core.model import SLERIR
from training.baselines import bm3d_known_sigma, non_local_means
from training.config import ExperimentConfig, load_experiment, with_overrides
from training.datasets import TEST_FOLDERS, DataError, build_train_dataset
from training.evaluate import (
    DEFAULT_IMAGES,
    DEFAULT_SIGMAS,
    GREY,
    MIXED,
    PROTOCOL,
    TITLES,
    ModelMethod,
    evaluate_baselines,
    evaluate_grey,
    evaluate_known_sigma,
    evaluate_method,
    evaluate_mixed,
    folder_test_set,
    format_table,
    generated_test_set,
    grey_test_set,
    label_accuracy,
    mixed_test_set,
    order_columns,
    routing_summary,
    with_average,
)
from training.runtime import cpu_process_count, init_runtime, spawn_cpu_ranks, world_size
from training.state import TrainError, recorded_phase
from training.train import build_job, train


@dataclass(frozen=True)
class Command:
    """A subcommand of ``slerir``: its options and its entry point, which returns the exit code."""

    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


# -- slerir train --------------------------------------------------------------------------------------------


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``slerir train``."""
    parser.add_argument("--config", required=True, help="training config: a name in training/configs or a YAML path")
    parser.add_argument(
        "--phase",
        type=int,
        choices=(1, 2),
        help="training phase (default: the phase --init's weights record, else train.phase)",
    )
    parser.add_argument("--steps", type=int, help="optimiser steps of the phase (overrides its epochs)")
    parser.add_argument("--out", type=Path, help="run folder (default: runs/<name>-phase<k>)")
    parser.add_argument("--resume", action="store_true", help="continue from <out>/checkpoint.pt if it exists")
    parser.add_argument("--init", help="weights to start from (.safetensors or checkpoint.pt); phase 2 needs them")
    parser.add_argument(
        "--stop-at",
        type=int,
        help="stop after this step and checkpoint, keeping the schedule of "
        "the full run (to split a run into jobs; continue with --resume)",
    )
    parser.add_argument(
        "--time-budget",
        type=parse_duration,
        metavar="DURATION",
        help="wall-clock budget of this command (90s, 20m, 2.5h): stop in time to checkpoint, export the weights "
        "and print a validation table (timed by a validation at the start); continue with --resume",
    )
    parser.add_argument("--device", help="torch device (default: train.device; 'auto' is cuda:LOCAL_RANK or cpu)")
    parser.add_argument(
        "--set",
        nargs="+",
        action="extend",
        default=[],
        metavar="KEY=VALUE",
        help="override config values, e.g. train.phase1.lr=1.0e-3 data.crop=64 (may be repeated)",
    )


def parse_duration(text: str) -> float:
    """``90s``, ``20m``, ``2.5h`` or plain seconds -> seconds (> 0).

    Raises:
        argparse.ArgumentTypeError: anything else.
    """
    units = {"s": 1.0, "m": 60.0, "h": 3600.0}
    number, unit = (text[:-1], units[text[-1]]) if text[-1:] in units else (text, 1.0)
    try:
        seconds = float(number) * unit
    except ValueError:
        seconds = math.nan
    if not (seconds > 0 and math.isfinite(seconds)):
        raise argparse.ArgumentTypeError(f"expected a duration such as 90s, 20m or 2.5h, got {text!r}")
    return seconds


def _parse_value(text: str) -> Any:
    value = yaml.safe_load(text)
    if isinstance(value, str):
        try:
            return float(value)  # YAML 1.1 reads '1e-3' as a string
        except ValueError:
            return value
    return value


def resolve_train_args(args: argparse.Namespace) -> tuple[ExperimentConfig, int, Path]:
    """The experiment config with command-line overrides, the training phase and the run folder of
    ``slerir train``.

    Raises:
        TrainError: a ``--set`` item that is not ``KEY=VALUE``.
        ConfigError: an override the config does not take.
    """
    exp = load_experiment(args.config)
    changes: dict[str, Any] = {}
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep:
            raise TrainError(f"--set expects KEY=VALUE, got {item!r}")
        changes[key] = _parse_value(value)
    # Weights to continue from train on in the phase they were trained in, unless the command says otherwise:
    # continuing a phase-2 file in phase 1 would unfreeze the routes it was trained for.
    phase = args.phase or int(
        changes.get("train.phase") or (args.init and recorded_phase(args.init)) or exp.train.phase
    )
    if args.steps is not None:
        changes[f"train.phase{phase}.steps"] = args.steps
    if args.device is not None:
        changes["train.device"] = args.device
    if changes:
        exp = with_overrides(exp, **changes)
    out = args.out or Path("runs") / f"{exp.name}-phase{phase}"
    return exp, phase, out


def run_train(args: argparse.Namespace) -> int:
    """Entry point of ``slerir train``: 0 when the phase ran, 2 (with the reason) for an unusable request."""
    try:
        return _train(args)
    except (ConfigError, DataError, TrainError) as err:
        print(f"slerir train: error: {err}", file=sys.stderr)
        return 2


def _train(args: argparse.Namespace) -> int:
    exp, phase, out = resolve_train_args(args)
    procs = cpu_process_count(exp)
    if procs > 1:
        return spawn_cpu_ranks(run_train, args, procs)
    # The job is checked before the ranks meet: a rank that stops at a usage error while another is still in
    # the rendezvous makes that one fail with a connection error instead of the usage error's exit code.
    dataset = build_train_dataset(exp.data, exp.train.seed)
    job = build_job(exp, phase, out, dataset, world_size(), args.stop_at, args.init, args.resume, args.time_budget)
    rt = init_runtime(exp.train.device)
    try:
        summary = train(job, rt, dataset)
    finally:
        if rt.distributed and dist.is_initialized():
            dist.destroy_process_group()
    if rt.primary:
        state = "finished" if summary["finished"] else f"stopped at step {summary['step']}"
        if summary["out_of_time"]:
            state += " (time budget)"
        print(f"{exp.name} phase {phase} {state}; run folder {out}", file=sys.stderr)
    return 0


# -- slerir evaluate -----------------------------------------------------------------------------------------


def add_evaluate_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``slerir evaluate``."""
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--weights", type=Path, help="SLER-IR weights file (.safetensors) to evaluate")
    which.add_argument("--config", help="evaluate an untrained network of this model or training config")
    parser.add_argument(
        "--tasks",
        nargs="+",
        choices=TASKS,
        metavar="TASK",
        help=f"tasks to evaluate, of {', '.join(TASKS)} "
        "(default: the model's training tasks, "
        "else the five paper tasks, or those with test folders under --data)",
    )
    parser.add_argument(
        "--data", type=Path, help="data folder with Test/ in the PromptIR layout (default: a generated test set)"
    )
    parser.add_argument(
        "--images",
        type=int,
        help=f"images per task (and σ): default {DEFAULT_IMAGES} generated; with --data, at most this many "
        "(default all)",
    )
    parser.add_argument(
        "--size",
        type=int,
        help="side of generated images (default 128); with --data, centre crop to at most this (default whole images)",
    )
    parser.add_argument(
        "--sigmas",
        type=float,
        nargs="+",
        default=list(DEFAULT_SIGMAS),
        help="denoising levels σ (0-255 scale); the five-task table uses 25",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the test degradations")
    parser.add_argument("--no-baselines", action="store_true", help="skip the classical baselines")
    parser.add_argument("--device", default="auto", help="torch device for the model (default: cuda if present)")
    parser.add_argument("--json", type=Path, help="also write the numbers to this JSON file")


def _load_network(args: argparse.Namespace, device: Any) -> tuple[Any, str] | None:
    """The model to evaluate and its row name, or ``None`` for baselines only."""
    if args.weights is not None:
        return load_model(args.weights, device=device), f"SLER-IR ({args.weights.name})"
    if args.config is None:
        return None
    try:
        config = load_config(args.config)
    except ConfigError as model_err:
        try:
            config = load_experiment(args.config).model
        except ConfigError as train_err:
            # Report both lookups: the name may have been meant as either kind of config.
            raise ConfigError(f"not a model config ({model_err}) nor a training config ({train_err})") from None
    torch.manual_seed(0)
    return SLERIR(config).to(device).eval(), f"SLER-IR ({config.name}, untrained)"


def _default_tasks(args: argparse.Namespace, model: Any) -> list[str]:
    """``--tasks``; else the model's training tasks (with --data: those that have test folders), else the
    five paper tasks (with --data: every task with a test folder)."""
    if args.tasks:
        return list(args.tasks)
    tasks = list(model.config.tasks) if model is not None and model.config.tasks else list(TEST_FOLDERS)
    if args.data is not None:
        tasks = [t for t in tasks if t in TEST_FOLDERS and (args.data / "Test" / TEST_FOLDERS[t]).is_dir()]
        if not tasks:
            raise DataError(f"{args.data}/Test holds none of the folders {sorted(TEST_FOLDERS.values())}")
    return tasks


def _evaluate(args: argparse.Namespace) -> dict[str, Any]:
    """Run the evaluation ``args`` describe; returns the table's numbers (the ``--json`` content)."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    loaded = _load_network(args, device)
    model, model_row = loaded if loaded is not None else (None, None)
    tasks = _default_tasks(args, model)
    if args.data is not None:
        cases = folder_test_set(args.data, tasks, args.sigmas, args.images, args.size, args.seed)
        source = f"{args.data}/Test, " + (f"at most {args.images} images per task" if args.images else "all images")
        source += f", centre crop ≤{args.size}²" if args.size else ", whole images"
    else:
        images, size = args.images or DEFAULT_IMAGES, args.size or 128
        cases = generated_test_set(tasks, images, size, args.sigmas, args.seed)
        source = (
            f"generated: {images} held-out image{'s' * (images != 1)} of {size}² per task (scikit-image "
            "test split, then dead-leaves with seeds disjoint from training), fixed-seed degradations"
        )
    columns = order_columns([c.column for c in cases])
    rows: dict[str, Any] = {"Degraded input": evaluate_method(None, cases)}
    notes = [f"Test set: {source}."]
    if not args.no_baselines:
        scores, used = evaluate_baselines(cases)
        rows["Classical (scikit-image)"] = scores
        notes.append("Classical: " + "; ".join(f"{TITLES.get(t, t)}: {name}" for t, name in used.items()) + ".")
        references = {"NL-means (true σ)": non_local_means}
        if importlib.util.find_spec("bm3d") is not None:
            references["BM3D (true σ)"] = bm3d_known_sigma
        known = {name: found for name, denoise in references.items() if (found := evaluate_known_sigma(cases, denoise))}
        rows.update(known)
        if known:
            names = " and ".join(name.removesuffix(" (true σ)") for name in known)
            notes.append(f"{names}: given the true σ of the Gaussian noise, non-blind references for denoising.")
    routing, labels, mixed, grey = None, None, None, None
    if model is not None:
        method = ModelMethod(model, device)
        rows[model_row] = evaluate_method(method, cases)
        routing = routing_summary([c.task for c in cases], method.routes, model.config.num_experts)
        if method.labels:
            labels = label_accuracy([c.task for c in cases], method.labels)
        if model.glgf is not None and args.data is None:
            mixed = evaluate_mixed(model, device, mixed_test_set(images, size, args.seed))
        if args.data is None:
            grey = evaluate_grey(model, device, grey_test_set(images, size, args.seed))
    rows = {name: with_average(scores, columns) for name, scores in rows.items()}
    if any(v.get("average", {}).get("partial") for v in rows.values()):
        notes.append("* average over the columns the method has.")
    print(format_table(rows, columns, notes))
    if routing:
        print("\nRouting (most common path per task, purity = share of the task's images taking it):")
        for task in order_columns(list(routing)):
            r = routing[task]
            print(f"  {TITLES.get(task, task):<14} {r['path']}  purity {r['purity']:.2f}")
    if labels:
        print("\nLabel shown (share of each task's images labelled with its family; uncertain counts as wrong):")
        for task in order_columns(list(labels)):
            print(f"  {TITLES.get(task, task):<14} {labels[task]:.0%}")
    if mixed:
        print(_psnr_line(f"Mixed case ({MIXED.split(': ')[1]}, left | right halves)", mixed))
    if grey:
        print(_psnr_line(f"Grey pictures ({GREY.split(': ')[1]})", grey))
    return {
        "protocol": PROTOCOL,
        "test_set": source,
        "columns": columns,
        "rows": rows,
        "routing": routing,
        "labels": labels,
        "mixed": mixed,
        "grey": grey,
    }


def _psnr_line(title: str, scores: dict[str, float]) -> str:
    return f"\n{title}, PSNR: " + ", ".join(f"{k} {v:.2f} dB" for k, v in scores.items())


def run_evaluate(args: argparse.Namespace) -> int:
    """Entry point of ``slerir evaluate``: 0 after printing the table, 2 (with the reason) for unusable input."""
    try:
        result = _evaluate(args)
    except (ConfigError, DataError, WeightsError) as err:
        print(f"slerir evaluate: error: {err}", file=sys.stderr)
        return 2
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2))
        print(f"wrote {args.json}")
    return 0


TRAIN = Command(add_train_arguments, run_train)
EVALUATE = Command(add_evaluate_arguments, run_evaluate)
