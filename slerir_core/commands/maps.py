"""What ``slerir restore --save-maps`` writes beside a restored file: the degradation map and the routes as
pictures, and a JSON report of the plans."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

from slerir_core.io.files import write_image, write_text
from slerir_core.plan import Plan
from slerir_core.restore import Restorer

EXPERT_COLOURS = np.array(
    [
        (230, 25, 75),
        (60, 180, 75),
        (0, 130, 200),
        (245, 130, 48),
        (145, 30, 180),
        (70, 240, 240),
        (240, 50, 230),
        (210, 245, 60),
    ],
    dtype=np.float32,
)


def render_degradation_map(plan: Plan, cell: int = 32) -> np.ndarray:
    """The g x g crop assignment as an RGB uint8 picture: each cell mixes its experts' colours by probability."""
    probs = plan.degradation_map  # (C, g, g)
    colours = EXPERT_COLOURS[np.arange(probs.shape[0]) % len(EXPERT_COLOURS)]
    picture = np.einsum("cij,ck->ijk", probs, colours)
    return np.repeat(np.repeat(picture, cell, axis=0), cell, axis=1).round().clip(0, 255).astype(np.uint8)


def render_routes(plan: Plan, cell: int = 24) -> np.ndarray:
    """Stages (rows) x experts (columns): grey level = probability, the chosen expert in its colour."""
    picture = np.repeat(plan.probs[..., None] * 255, 3, axis=2)
    for stage, expert in enumerate(plan.routes):
        picture[stage, expert] = EXPERT_COLOURS[expert % len(EXPERT_COLOURS)]
    picture = np.repeat(np.repeat(picture, cell, axis=0), cell, axis=1)
    picture[::cell] = picture[:, ::cell] = 64  # grid lines between cells
    return picture.round().clip(0, 255).astype(np.uint8)


def save_maps(out_dir: Path, source: Path, plans: list[tuple[str, Plan]], restorer: Restorer, extra: dict) -> None:
    """Write the degradation map and routes pictures (PNG for one plan, a TIFF page per plan otherwise) and
    a JSON report for one input."""
    stem = source.stem
    pictures = {
        "degradation_map": [render_degradation_map(p) for _, p in plans],
        "routes": [render_routes(p) for _, p in plans],
    }
    for name, frames in pictures.items():
        if len(frames) == 1:
            write_image(out_dir / f"{stem}_{name}.png", frames[0])
        else:
            write_image(out_dir / f"{stem}_{name}.tif", np.stack(frames), "ZYXC")
    report = {
        "input": str(source),
        **extra,
        "model": restorer.config.name,
        "weights": restorer.weights,
        "untrained": restorer.untrained,
        "device": str(restorer.device),
        "plans": [{"applies_to": what, **plan.summary()} for what, plan in plans],
    }
    write_text(out_dir / f"{stem}_report.json", compact_json(report))


def compact_json(data: dict) -> str:
    """Indented JSON with each innermost list of numbers on one line (a 4x4 map stays readable)."""
    text = json.dumps(data, indent=1)
    return re.sub(r"\[\s+([^\[\]{}\"]*?)\s+\]", lambda m: "[" + " ".join(m.group(1).split()) + "]", text) + "\n"
