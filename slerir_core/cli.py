"""The ``slerir`` command: one entry point, one module per subcommand.

Each subcommand is a module, or an object in one (``module:NAME``), with ``add_arguments(parser)`` and
``run(args) -> int`` (the exit code); its module is imported only when the subcommand runs, so
``slerir --help`` stays fast and ``slerir restore`` never imports the training code.
"""

from __future__ import annotations

import argparse
import importlib
import sys

SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("slerir_core.commands.demo", "restore the bundled sample and write a before/after picture"),
    "restore": ("slerir_core.commands.restore", "restore image files, folders and TIFF stacks"),
    "info": ("slerir_core.commands.info", "print the model, device, config and routing paths"),
    "adapt": ("slerir_core.commands.adapt", "adapt a model to your own noisy images (no clean targets needed)"),
    "train": ("training.commands:TRAIN", "train a model (phase 1 or 2) from a training config"),
    "evaluate": ("training.commands:EVALUATE", "PSNR/SSIM per task against the degraded input and classical baselines"),
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
    module_name, _, attribute = SUBCOMMANDS[name][0].partition(":")
    command = importlib.import_module(module_name)
    if attribute:
        command = getattr(command, attribute)
    sub_parser = argparse.ArgumentParser(prog=f"slerir {name}", description=SUBCOMMANDS[name][1])
    command.add_arguments(sub_parser)
    return int(command.run(sub_parser.parse_args(rest)) or 0)


if __name__ == "__main__":
    sys.exit(main())
