"""Print parameter counts: ``python -m slerir_core.model --config paper``."""

from __future__ import annotations

import argparse

from slerir_core.config import STAGES, load_config
from slerir_core.model import SLERIR, parameter_counts

PROMPTIR_PARAMS = 35.6e6


def main(argv: list[str] | None = None) -> None:
    """Build the network of a config and print its parameters by part, next to PromptIR's."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--config", default="paper", help="config name or YAML path")
    args = parser.parse_args(argv)
    model = SLERIR(load_config(args.config))
    c, n = model.config, parameter_counts(model)
    rows = [
        ("total", n["total"]),
        ("active on one path", n["one_path"]),
        ("  backbone on one path (what PromptIR's 35.6 M compares to)", n["backbone_on_path"]),
        ("    of which experts (one per stage)", n["experts_on_path"]),
        (f"  degradation extractor ({c.degradation_extractor.model_name})", n["degradation_extractor"]),
        (f"  content extractor ({c.content_extractor.model_name})", n["content_extractor"]),
        ("  router", n["router"]),
        ("  GLGF + injections", n["prior"]),
    ]
    rows += [(f"one {name} expert (x{c.num_experts})", n[f"expert_{name}"]) for name in STAGES]
    rows.append(("PromptIR, for comparison", PROMPTIR_PARAMS))
    print(
        f"SLER-IR config {c.name!r}: {c.num_experts} experts x {len(STAGES)} stages = "
        f"{c.num_experts ** len(STAGES)} paths"
    )
    for label, value in rows:
        print(f"{label:<62} {value / 1e6:9.2f} M")


if __name__ == "__main__":
    main()
