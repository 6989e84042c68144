"""Parameter counts of a SLER-IR network by part, for ``slerir info`` and ``python -m slerir_core.model``."""

from __future__ import annotations

from torch import nn

from slerir_core.config import STAGES
from slerir_core.model.slerir import SLERIR


def _count(module: nn.Module | None) -> int:
    return 0 if module is None else sum(p.numel() for p in module.parameters())


def parameter_counts(model: SLERIR) -> dict[str, int]:
    """Parameters of each part of ``model``, and of what one routing path runs.

    Returns:
        ``total``; ``one_path`` (everything outside the routed stages plus one expert per stage);
        ``experts_on_path`` (those eight experts); ``backbone_on_path`` (one path less the extractors,
        router, GLGF and injections: what a Restormer-style network of one path holds);
        ``degradation_extractor``, ``content_extractor``, ``router``, ``prior`` (GLGF and injections);
        and ``expert_<stage>`` for one expert of each routed stage.
    """
    experts = {stage: _count(model.stages[stage]) // model.config.num_experts for stage in STAGES}
    total = _count(model)
    outside_stages = total - sum(_count(stage) for stage in model.stages.values())
    parts = {
        "degradation_extractor": _count(model.degradation_extractor),
        "content_extractor": _count(model.content_extractor),
        "router": _count(model.router),
        "prior": _count(model.glgf) + _count(model.injections),
    }
    one_path = outside_stages + sum(experts.values())
    return {
        "total": total,
        "one_path": one_path,
        "experts_on_path": sum(experts.values()),
        "backbone_on_path": one_path - sum(parts.values()),
        **parts,
        **{f"expert_{stage}": n for stage, n in experts.items()},
    }
