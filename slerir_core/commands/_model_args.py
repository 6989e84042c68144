"""Options that choose the model and device, shared by ``restore``, ``info`` and ``demo``."""

from __future__ import annotations

import argparse
import sys
import warnings

from slerir_core.device import PRECISIONS
from slerir_core.restore import Restorer


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """``--weights``, ``--config`` and ``--device``."""
    group = parser.add_argument_group("model")
    choice = group.add_mutually_exclusive_group()
    choice.add_argument("--weights", metavar="PATH", help="SLER-IR weights file (default: the shipped weights)")
    choice.add_argument(
        "--config",
        metavar="NAME",
        help="use a freshly initialised, UNTRAINED model of this config (tiny, compact, paper or a "
        "YAML path); for testing",
    )
    group.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda, cuda:1, ...")
    group.add_argument(
        "--precision",
        choices=PRECISIONS,
        default="auto",
        help="auto: bf16 autocast on GPUs and on CPUs with native bf16 (faster, within about 0.01 of fp32), else fp32",
    )


def build_restorer(args: argparse.Namespace) -> Restorer:
    """The restorer the options ask for; the untrained-model warning is printed as one plain line.

    Raises:
        slerir_core.errors.WeightsError, slerir_core.errors.ConfigError, ValueError: bad weights, config
            or device.
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        restorer = Restorer.from_pretrained(
            args.weights, device=args.device, config=args.config, precision=args.precision
        )
    for warning in caught:
        print(f"warning: {warning.message}", file=sys.stderr)
    return restorer
