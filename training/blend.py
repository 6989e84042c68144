"""Weight-space blends of a model and a continuation of its training (WiSE-FT, Wortsman et al., 2022).

A continuation from shipped weights can gain on some tasks and lose on others (rain against haze, say). Two
weights of one lineage sit in one basin, so the straight line between them passes through models that keep
much of both; the blend at ``alpha`` is ``(1 - alpha) * base + alpha * tuned``. Evaluate a few alphas and
ship the best by the usual rule.

    python -m training.blend BASE TUNED --alpha 0.5 --out blend.safetensors

Rules per tensor: floating tensors are blended; unit vectors on the routing sphere (the router's centres,
the task prototypes) are blended and put back on the sphere; the router's memory bank and its counters are
training state of the continuation and are taken from ``tuned``. The blend carries ``tuned``'s training
record with a ``blend`` entry naming ``alpha`` and the base's steps.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
import torch.nn.functional as F

from slerir_core.checkpoint import load_model, read_metadata, save_weights
from slerir_core.errors import WeightsError

SPHERICAL = ("router.centres", "task_prototypes")
FROM_TUNED = ("router.bank", "router.bank_filled", "router.bank_pos")


def blend_state(base: dict[str, torch.Tensor], tuned: dict[str, torch.Tensor], alpha: float) -> dict[str, torch.Tensor]:
    """The state dict ``(1 - alpha) * base + alpha * tuned`` under the module's rules (spherical tensors
    renormalised, the router's bank from ``tuned``).

    Raises:
        ValueError: ``alpha`` outside [0, 1], or states with different keys or shapes.
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    if base.keys() != tuned.keys():
        raise ValueError(f"the two states hold different tensors: {sorted(base.keys() ^ tuned.keys())[:5]}")
    out = {}
    for name, b in base.items():
        t = tuned[name]
        if b.shape != t.shape:
            raise ValueError(f"tensor {name} has shapes {list(b.shape)} and {list(t.shape)}")
        if name in FROM_TUNED or not t.is_floating_point():
            out[name] = t.clone()
            continue
        mixed = torch.lerp(b.float(), t.float(), alpha)
        out[name] = (F.normalize(mixed, dim=-1) if name in SPHERICAL else mixed).to(t.dtype)
    return out


def blend_weights(base: str | Path, tuned: str | Path, alpha: float, dest: str | Path) -> Path:
    """Write the blend of two weights files of one model config to ``dest`` (fp32), atomically.

    Raises:
        WeightsError: an unusable file, or two files of different model configs.
        ValueError: ``alpha`` outside [0, 1].
    """
    a, b = load_model(base), load_model(tuned)
    if a.config.to_dict() != b.config.to_dict():
        raise WeightsError(f"{base} and {tuned} hold different model configs; only one model's weights blend")
    b.load_state_dict(blend_state(a.state_dict(), b.state_dict(), alpha))
    meta = read_metadata(tuned)
    history = json.loads(meta.get("history", "{}"))
    history["blend"] = {"alpha": alpha, "base_steps": json.loads(read_metadata(base).get("history", "{}")).get("steps")}
    extra = {k: v for k, v in meta.items() if k not in ("format", "config")}
    return save_weights(b, dest, **{**extra, "history": json.dumps(history)})


def main(argv: list[str] | None = None) -> None:
    """Write one blend."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("base", type=Path, help="the weights the continuation started from")
    parser.add_argument("tuned", type=Path, help="the continuation's weights")
    parser.add_argument("--alpha", type=float, required=True, help="share of tuned, in [0, 1]")
    parser.add_argument("--out", type=Path, required=True, help="the blended weights file")
    args = parser.parse_args(argv)
    try:
        print(blend_weights(args.base, args.tuned, args.alpha, args.out))
    except (WeightsError, ValueError) as err:
        raise SystemExit(f"error: {err}") from None


if __name__ == "__main__":
    main()
