"""Print parameter counts: ``python -m slerir_core.model --config paper``."""

from __future__ import annotations

import argparse

from slerir_core.config import STAGES, load_config
from slerir_core.model import SLERIR

PROMPTIR_PARAMS = 35.6e6


def count(module) -> int:
    """Number of parameters of a module (0 for None)."""
    return 0 if module is None else sum(p.numel() for p in module.parameters())


def main(argv: list[str] | None = None) -> None:
    """Build the network of a config and print its parameters by part, next to PromptIR's."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--config", default="paper", help="config name or YAML path")
    args = parser.parse_args(argv)
    model = SLERIR(load_config(args.config))
    c = model.config
    experts = {name: count(stage.experts[0]) for name, stage in model.stages.items()}
    shared = count(model) - sum(count(s) for s in model.stages.values())
    routing = sum(
        count(m)
        for m in (model.degradation_extractor, model.content_extractor, model.router, model.glgf, model.injections)
    )
    backbone = sum(experts.values()) + shared - routing
    rows = [
        ("total", count(model)),
        ("active on one path", shared + sum(experts.values())),
        ("  backbone on one path (what PromptIR's 35.6 M compares to)", backbone),
        ("    of which experts (one per stage)", sum(experts.values())),
    ]
    rows += [
        (f"  degradation extractor ({c.degradation_extractor.model_name})", count(model.degradation_extractor)),
        (f"  content extractor ({c.content_extractor.model_name})", count(model.content_extractor)),
        ("  router", count(model.router)),
        ("  GLGF + injections", count(model.glgf) + count(model.injections)),
    ]
    rows += [(f"one {name} expert (x{c.num_experts})", experts[name]) for name in STAGES]
    rows.append(("PromptIR, for comparison", PROMPTIR_PARAMS))
    print(
        f"SLER-IR config {c.name!r}: {c.num_experts} experts x {len(STAGES)} stages = "
        f"{c.num_experts ** len(STAGES)} paths"
    )
    for label, n in rows:
        print(f"{label:<62} {n / 1e6:9.2f} M")


if __name__ == "__main__":
    main()
