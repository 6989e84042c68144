"""Dispatched ops of a phase-2 training step: what a GPU's host has to launch, counted on the CPU.

A step of the compact model on a GPU is bound by the host issuing ops one by one, not by the GPU's
arithmetic, so the op count is the figure to keep down. This counts every aten op dispatched by the forward
(analysis, backbone and L1 loss) and by the backward of one phase-2 step: routing modules frozen, hard
routing, fp32, eager, on the CPU. Two rows: a random route per sample, and one route shared by the batch;
with every sample reading its expert's weights by index the two must cost the same. ``views`` counts the ops
among them that only alias their input (no kernel on a GPU, but host time all the same).

    python benchmarks/step_ops.py                     # compact, 32 crops of 64²
    python benchmarks/step_ops.py --config tiny --batch 4
"""

from __future__ import annotations

import argparse
from collections import Counter

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from slerir_core.config import STAGES, load_config
from slerir_core.losses import restoration_loss
from slerir_core.model import SLERIR


class OpCounter(TorchDispatchMode):
    """Counts the aten ops dispatched while active, by name, and apart those that only make a view (an alias
    of their input: ``view``, ``permute``, ``select``, ``detach``, ...), which launch nothing on a GPU."""

    def __init__(self) -> None:
        super().__init__()
        self.ops: Counter[str] = Counter()
        self.views = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops[str(func.overloadpacket)] += 1
        returns = func._schema.returns
        self.views += bool(returns) and all(r.alias_info is not None and not r.alias_info.is_write for r in returns)
        return func(*args, **(kwargs or {}))


def phase2_model(config: str) -> SLERIR:
    """A freshly initialised model set up as in phase 2: hard routing, routing modules frozen."""
    torch.manual_seed(0)
    model = SLERIR(load_config(config)).train()
    for module in model.routing_modules():
        module.requires_grad_(False)
    return model


def count_step(model: SLERIR, x: torch.Tensor, routes: torch.Tensor) -> tuple[OpCounter, OpCounter]:
    """Ops of the forward (with the loss) and of the backward of one step on ``x`` with ``routes``."""
    model.zero_grad(set_to_none=True)
    with OpCounter() as forward:
        restored, _ = model(x, routes=routes)
        loss = restoration_loss(restored, x)
    with OpCounter() as backward:
        loss.backward()
    return forward, backward


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="compact", help="model config")
    parser.add_argument("--batch", type=int, default=32, help="crops per step")
    parser.add_argument("--crop", type=int, default=64, help="crop side")
    parser.add_argument("--top", type=int, default=0, help="also list the most frequent ops of each row")
    args = parser.parse_args(argv)

    torch.set_num_threads(1)
    model = phase2_model(args.config)
    generator = torch.Generator().manual_seed(0)
    x = torch.rand(args.batch, 3, args.crop, args.crop, generator=generator)
    experts = model.config.num_experts
    mixed = torch.randint(0, experts, (args.batch, len(STAGES)), generator=generator)
    rows = {"random route per sample": mixed, "one route for the batch": mixed[:1].repeat(args.batch, 1)}
    count_step(model, x, rows["random route per sample"])  # warm-up: lazy initialisation dispatches ops once
    what = f"{args.config}, {args.batch} crops of {args.crop}², fp32 eager on the CPU"
    print(f"phase-2 step, {what}: dispatched aten ops")
    print(f"{'':<26}{'forward':>9}{'backward':>10}{'total':>8}{'views':>8}")
    for name, routes in rows.items():
        forward, backward = count_step(model, x, routes)
        fwd, bwd = sum(forward.ops.values()), sum(backward.ops.values())
        print(f"{name:<26}{fwd:>9,}{bwd:>10,}{fwd + bwd:>8,}{forward.views + backward.views:>8,}")
        if args.top:
            print("    " + ", ".join(f"{op} {n}" for op, n in (forward.ops + backward.ops).most_common(args.top)))


if __name__ == "__main__":
    main()
