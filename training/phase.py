"""The two training phases of SLER-IR (§3.2, §4.1; the paper calls them stages): what trains in each, the
optimiser and its schedule, the per-task prototypes and the routing targets of phase 1.

Phase 1 (probabilistic routing) trains everything with soft routing and keeps each task's mean routing vector
as the model's task prototype; phase 2 (deterministic routing) routes hard with the extractors, the router
and the centres frozen.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from slerir_core.model import SLERIR
from training.config import PhaseConfig
from training.datasets import StreamSampler, TrainStream
from training.runtime import Runtime, all_gather_cat


def configure_phase(model: SLERIR, phase: int) -> None:
    """Soft routing and everything trainable (phase 1), or hard routing with the routing parts frozen (phase 2)."""
    model.routing = "soft" if phase == 1 else "hard"
    for module in model.routing_modules():
        module.requires_grad_(phase == 1)
    set_train_mode(model, phase)


def set_train_mode(model: SLERIR, phase: int) -> None:
    """Training mode, except the frozen routing modules in phase 2 (kept in eval mode)."""
    model.train()
    if phase == 2:
        for module in model.routing_modules():
            module.eval()


def build_optimizer(
    model: nn.Module,
    train_betas: tuple[float, ...],
    weight_decay: float,
    phase_cfg: PhaseConfig,
    capturable: bool = False,
) -> torch.optim.Optimizer:
    """Adam over the trainable parameters (§4.1: β = (0.9, 0.999)), fused: one kernel over all parameters
    instead of per-tensor ops (a step over the compact model on one CPU thread: 8 against 25 ms).

    ``capturable`` keeps the step count and the learning rate on the device, so that a step recorded as a CUDA
    graph reads the rate the scheduler sets at each replay rather than the one of the recording.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    device = params[0].device
    lr = torch.tensor(phase_cfg.lr, device=device) if capturable else phase_cfg.lr
    betas = tuple(train_betas)
    return torch.optim.Adam(params, lr=lr, betas=betas, weight_decay=weight_decay, fused=True, capturable=capturable)


def build_scheduler(
    optimizer: torch.optim.Optimizer, total_steps: int, phase_cfg: PhaseConfig
) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up, then cosine decay from ``lr`` to ``min_lr`` at ``total_steps``."""
    floor = phase_cfg.min_lr / phase_cfg.lr
    warmup = phase_cfg.warmup_steps

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


@torch.no_grad()
def update_prototypes(prototypes: torch.Tensor, f: torch.Tensor, labels: torch.Tensor, momentum: float) -> None:
    """EMA of each task's mean routing vector (per stage, on the unit sphere), in place.

    A task seen for the first time takes its batch mean; tasks absent from the batch keep theirs.

    Args:
        prototypes: (T, K, d) buffer.
        f: (N, K, d) routing vectors.
        labels: (N,) task indices.
        momentum: share of the old prototype kept.
    """
    f = f.detach().float()
    sums = torch.zeros_like(prototypes).index_add_(0, labels, f)
    # A count by index_add rather than bincount, which reads the largest label back to size its output.
    counts = f.new_zeros(prototypes.shape[0]).index_add_(0, labels, f.new_ones(labels.shape))
    present = counts > 0
    means = F.normalize(sums, dim=-1)
    fresh = prototypes.flatten(1).abs().sum(dim=1) == 0
    blended = F.normalize(momentum * prototypes + (1 - momentum) * means, dim=-1)
    new = torch.where(fresh[:, None, None], means, blended)
    prototypes.copy_(torch.where(present[:, None, None], new, prototypes))


@torch.no_grad()
def refit_prototypes(
    model: SLERIR, dataset: TrainStream, sampler: StreamSampler, first_step: int, batches: int, rt: Runtime
) -> None:
    """Set the task prototypes to the exact per-task mean routing vectors of fresh training batches.

    The batches come from stream positions after the run's last step, so they were not trained on; the
    embeddings are gathered from all ranks, so every rank computes the same prototypes.
    """
    if batches == 0:
        return
    model.eval()
    protos = model.task_prototypes
    sums, counts = torch.zeros_like(protos), torch.zeros(protos.shape[0], device=protos.device)
    for k in range(batches):
        items = [dataset[i] for i in sampler.batch(first_step + k)]
        x = torch.stack([d for d, _, _ in items]).to(rt.device)
        labels = torch.tensor([lab for _, _, lab in items], device=rt.device)
        f, _ = model.router(model.degradation_embedding(x))
        f, labels = all_gather_cat(f, rt), all_gather_cat(labels, rt)
        sums.index_add_(0, labels, f.float())
        counts += torch.bincount(labels, minlength=protos.shape[0]).float()
    seen = counts > 0
    protos.copy_(torch.where(seen[:, None, None], F.normalize(sums, dim=-1), protos))


def routing_targets(
    model: SLERIR, fixed: torch.Tensor | None, route_groups: Sequence[int]
) -> tuple[torch.Tensor, bool]:
    """Each task's expert per stage for the routing-consistency term, and whether they are now fixed for the
    rest of the phase.

    ``fixed`` targets are kept; otherwise they are assigned from the task prototypes (-1 for a task without
    one yet), and fixed as soon as every task has a prototype. Assigned anew at every step, they moved with
    the prototypes and the centres, the router chased them, and routes kept changing for the whole of phase 1
    (in one run haze took six paths in twelve validations).

    Args:
        model: the network, whose router assigns the targets.
        fixed: the targets fixed earlier in the phase, or ``None``.
        route_groups: each task's route group (``DataConfig.route_group_index``); tasks of one group share
            their targets.
    """
    if fixed is not None:
        return fixed, True
    targets = model.router.assign_tasks(model.task_prototypes, route_groups)
    return targets, bool((targets >= 0).all())


def route_paths(tasks: Sequence[str], targets: torch.Tensor | None) -> dict[str, str]:
    """Each task's routing-consistency target as a path (``0-2-1-...``), for the run summary."""
    if targets is None:
        return {}
    return {task: "-".join(map(str, path)) for task, path in zip(tasks, targets.tolist(), strict=True)}
