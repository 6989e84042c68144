"""The ``slerir`` command: one entry point, one module per subcommand.

Each subcommand module defines ``add_arguments(parser)`` and ``run(args) -> int`` (the exit code) and is
imported only when its subcommand runs, so ``slerir --help`` stays fast and ``slerir restore`` never
imports the training code.
"""

from __future__ import annotations

import argparse
import importlib
import sys

SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("slerir_core.commands.demo", "restore the bundled sample and write a before/after picture"),
    "restore": ("slerir_core.commands.restore", "restore image files, folders and TIFF stacks"),
    "info": ("slerir_core.commands.info", "print the model, device, config and routing paths"),
    "train": ("training.train", "train a model (stage 1 or 2) from a training config"),
    "evaluate": ("training.evaluate", "PSNR/SSIM per task against the degraded input and classical baselines"),
}


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv`` and run the chosen subcommand; returns its exit code."""
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(prog="slerir", description="SLER-IR all-in-one image restoration")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (_module, help_text) in SUBCOMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    if not argv or argv[0] not in SUBCOMMANDS:
        parser.parse_args(argv)  # prints usage or the error, and exits
    name, rest = argv[0], argv[1:]
    module = importlib.import_module(SUBCOMMANDS[name][0])
    sub_parser = argparse.ArgumentParser(prog=f"slerir {name}", description=SUBCOMMANDS[name][1])
    module.add_arguments(sub_parser)
    return int(module.run(sub_parser.parse_args(rest)) or 0)


if __name__ == "__main__":
    sys.exit(main())
