"""``slerir info``: the model, its weights, the device, the config and the routing paths."""

from __future__ import annotations

import argparse
import sys

import torch
import yaml

from slerir_core import __version__
from slerir_core.commands._model_args import add_model_arguments, build_restorer
from slerir_core.config import STAGES
from slerir_core.errors import ConfigError, WeightsError
from slerir_core.model import parameter_counts
from slerir_core.restore import Restorer


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``slerir info``."""
    parser.add_argument("--yaml", action="store_true", help="also print the whole config as YAML")
    add_model_arguments(parser)


def run(args: argparse.Namespace) -> int:
    """Print the description; 2 when the model cannot be built."""
    try:
        restorer = build_restorer(args)
    except (WeightsError, ConfigError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for label, value in describe(restorer):
        print(f"{label:<12} {value}")
    if args.yaml:
        print(yaml.safe_dump(restorer.config.to_dict(), sort_keys=False), end="")
    return 0


def describe(restorer: Restorer) -> list[tuple[str, str]]:
    """(label, value) lines describing a restorer's model, device, config and paths."""
    model, c = restorer.model, restorer.config
    n = parameter_counts(model)
    weights = (
        "UNTRAINED (freshly initialised: output is not a restoration)"
        if restorer.untrained
        else (restorer.weights or "model object")
    )
    cuda = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    tasks = ", ".join(c.tasks) if c.tasks and bool(model.task_prototypes.any()) else "none (no degradation label)"
    task_paths = "; ".join(f"{task} {','.join(map(str, path))}" for task, path in restorer.task_routes().items())
    return [
        ("slerir", __version__),
        ("model", f"config {c.name!r}"),
        ("weights", weights),
        ("device", f"{restorer.device} ({'bf16 autocast' if restorer.bf16 else 'fp32'}); CUDA: {cuda}"),
        (
            "backbone",
            f"dim {c.dim}, blocks {list(c.blocks)} / decoder {list(c.decoder_blocks)} / refine "
            f"{c.refine_blocks}, heads {list(c.heads)}, FFN x{c.ffn_factor}",
        ),
        (
            "extractors",
            f"degradation {c.degradation_extractor.model_name}, content "
            f"{c.content_extractor.model_name}; GLGF prior {'on' if c.glgf else 'off'}",
        ),
        (
            "routing",
            f"{len(STAGES)} routed stages x {c.num_experts} experts = {c.num_experts}^{len(STAGES)} = "
            f"{c.num_experts ** len(STAGES):,} paths; routing dim {c.routing_dim}, tau {c.router_temperature}",
        ),
        (
            "parameters",
            f"{n['total'] / 1e6:.2f} M in all, {n['one_path'] / 1e6:.2f} M on one path "
            f"({n['experts_on_path'] / 1e6:.2f} M of them in its 8 experts)",
        ),
        ("tasks", tasks),
        ("task paths", task_paths or "none (no task prototypes)"),
        ("tiling", f"tile {c.tile} px, overlap {c.overlap} px"),
    ]
