"""What ``slerir restore --save-maps`` writes beside a restored file: the degradation map and the routes as
pictures a person can read, and a JSON report of the plans.

The degradation map shows the 2-D image a plan was made on, in grey and at its own size (``MAP_SIDE`` pixels a
side at most), under its g x g crops, each tinted in the colour of its most likely task (of the model's task
prototypes; of the experts for a model without them) with that probability written in the cell. A title line
lies above the image, a legend below it names the colours with each one's probability over the whole image.

The routes picture is a table of the eight stages (rows) by the experts (columns): each cell writes the routing
probability and draws it as a bar in the expert's colour; the expert a stage uses is framed, on a tint of its
colour. Its title says whether the router chose the routes or they were given by hand.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from slerir_core.commands._drawing import draw_label, font, line_height, text_size, to_uint8
from slerir_core.config import STAGES
from slerir_core.io.files import write_image, write_text
from slerir_core.io.layout import Layout
from slerir_core.plan import Plan, middle_index
from slerir_core.restore import Restorer

COLOURS = np.array(
    [
        (230, 25, 75),
        (60, 180, 75),
        (0, 130, 200),
        (245, 130, 48),
        (145, 30, 180),
        (70, 240, 240),
        (240, 50, 230),
        (210, 245, 60),
        (128, 128, 0),
        (0, 0, 128),
    ],
    dtype=np.float32,
)
"""One colour per task or expert, in order (Trubetskoy's distinct colours)."""

MAP_SIDE = 1024
"""Longest side of the degradation map's image; larger images are shown subsampled."""

TINT = 0.5
"""Opacity of a crop's colour over the grey image."""

ROUTES_FONT = 14
"""Text size of the routes picture, in pixels."""

WHITE = (255, 255, 255)
BLACK = (0, 0, 0)


def colours(count: int) -> np.ndarray:
    """(count, 3) float32 RGB colours of the first ``count`` tasks or experts."""
    return COLOURS[np.arange(count) % len(COLOURS)]


def shows_tasks(plan: Plan) -> bool:
    """Whether the degradation map shows the model's tasks (it has task prototypes), not its experts."""
    return plan.task_map is not None and len(plan.task_probs) == len(plan.task_map)


def map_layers(plan: Plan) -> tuple[np.ndarray, list[str], list[float]]:
    """What the degradation map shows: the task map when the model has task prototypes, else the experts'.

    Returns:
        (N, g, g) probabilities of each crop, their names and each one's probability over the whole image.
    """
    if shows_tasks(plan):
        return plan.task_map, list(plan.task_probs), list(plan.task_probs.values())
    experts = plan.degradation_map
    return experts, [f"expert {i}" for i in range(len(experts))], experts.mean(axis=(1, 2)).tolist()


def grey_backgrounds(image: Any, layout: Layout, plans: list[Plan]) -> list[np.ndarray]:
    """For each plan, the 2-D image it was made on (``Plan.source``; the middle one for a plan made elsewhere)
    as a grey uint8 picture with at most ``MAP_SIDE`` pixels a side.

    Args:
        image: the restored input, in ``layout``'s axes (numpy or dask).
        layout: its layout.
        plans: the plans, in any order.
    """
    canon = layout.canonical(image)
    where = {
        layout.describe(index, group): (index, group)
        for index in np.ndindex(*layout.stack_shape)
        for group in range(len(layout.groups))
    }
    step = math.ceil(max(layout.height, layout.width) / MAP_SIDE)
    pictures = []
    for plan in plans:
        index, group = where.get(plan.source, (middle_index(layout.stack_shape), 0))
        start, stop = layout.groups[group]
        plane = np.asarray(canon[index][::step, ::step, start:stop])
        grey = plane[..., :3].mean(axis=-1) if plane.shape[-1] >= 3 else plane[..., 0]
        pictures.append(grey.round().astype(np.uint8) if plane.dtype == np.uint8 else to_uint8(grey))
    return pictures


def map_font_size(width: int) -> int:
    """Text size of a degradation map ``width`` pixels wide: legible on a small image, not shouting on a large."""
    return int(np.clip(width / 28, 13, 32))


def render_degradation_map(plan: Plan, background: np.ndarray) -> np.ndarray:
    """The crops' most likely tasks over the grey image, with a title and a legend (see the module's docstring).

    Args:
        plan: the plan.
        background: (H, W) uint8 grey picture of the image the plan was made on.

    Returns:
        An RGB uint8 picture: a title line, then the image at ``(title height, 0)`` with its own size ``(H, W)``,
        then the legend; at least as wide as the image.
    """
    maps, names, overall = map_layers(plan)
    palette = colours(len(names))
    height, width = background.shape
    cells_y, cells_x = maps.shape[1:]
    rows, cols = np.arange(height) * cells_y // height, np.arange(width) * cells_x // width
    tinted = (1 - TINT) * background[..., None] + TINT * palette[maps.argmax(axis=0)][rows][:, cols]

    face = font(map_font_size(width))
    step = line_height(face)
    subject = "degradation" if shows_tasks(plan) else "expert"
    title = f"most likely {subject} per crop ({plan.source})"
    entries = [f"{name} {p:.0%}" for name, p in zip(names, overall, strict=True)]
    swatch = text_size("Ag", face)[1]
    column = swatch + 6 + max(text_size(e, face)[0] for e in entries) + 14
    canvas_width = max(width, text_size(title, face)[0] + 8, column + 4)
    per_line = max(1, (canvas_width - 4) // column)
    top = step + 4
    legend_top = top + height + 6 + step  # a caption line, then the entries
    canvas = np.full((legend_top + math.ceil(len(entries) / per_line) * step + 4, canvas_width, 3), 255, np.uint8)
    canvas[top : top + height, :width] = tinted.round().clip(0, 255).astype(np.uint8)

    picture = Image.fromarray(canvas)
    draw = ImageDraw.Draw(picture)
    draw.text((4, 2), title, fill=BLACK, font=face)
    for i in range(1, cells_y):
        y = top + round(i * height / cells_y)
        draw.line((0, y, width - 1, y), fill=WHITE)
    for j in range(1, cells_x):
        x = round(j * width / cells_x)
        draw.line((x, top, x, top + height - 1), fill=WHITE)
    label_width, label_height = text_size("100%", face)
    if width / cells_x >= label_width + 8 and height / cells_y >= label_height + 8:
        for (i, j), p in np.ndenumerate(maps.max(axis=0)):
            draw_label(draw, (round(j * width / cells_x) + 3, top + round(i * height / cells_y) + 3), f"{p:.0%}", face)
    draw.text((4, top + height + 6), "over the whole image:", fill=BLACK, font=face)
    for k, entry in enumerate(entries):
        x, y = 4 + (k % per_line) * column, legend_top + (k // per_line) * step
        draw.rectangle((x, y, x + swatch, y + swatch), fill=tuple(int(c) for c in palette[k]))
        draw.text((x + swatch + 6, y), entry, fill=BLACK, font=face)
    return np.asarray(picture)


def render_routes(plan: Plan) -> np.ndarray:
    """The stages by experts table of routing probabilities (see the module's docstring) as an RGB uint8 picture."""
    face, bold = font(ROUTES_FONT), font(ROUTES_FONT, bold=True)
    step = line_height(face)
    experts = plan.num_experts
    palette = colours(experts)
    stage_width = max(text_size(s, face)[0] for s in STAGES) + 14
    cell_width = max(text_size(f"expert {experts - 1}", face)[0], text_size("0.00", bold)[0]) + 20
    cell_height = step + 14
    title = f"routes ({'manual' if plan.manual_routes else 'router'}): {plan.source}"
    caption = "framed: the expert each stage uses"
    grid_top = 2 * step + 8
    grid_width = stage_width + experts * cell_width + 6
    canvas_width = max(grid_width, text_size(title, bold)[0] + 8, text_size(caption, face)[0] + 8)
    picture = Image.new("RGB", (canvas_width, grid_top + len(STAGES) * cell_height + step + 8), WHITE)
    draw = ImageDraw.Draw(picture)
    draw.text((4, 2), title, fill=BLACK, font=bold)
    for c in range(experts):
        draw.text((stage_width + c * cell_width + 6, step + 6), f"expert {c}", fill=BLACK, font=face)
    for r, stage in enumerate(STAGES):
        y = grid_top + r * cell_height
        draw.text((4, y + 4), stage, fill=BLACK, font=face)
        for c in range(experts):
            x = stage_width + c * cell_width
            colour = tuple(int(v) for v in palette[c])
            chosen = plan.routes[r] == c
            box = (x + 2, y + 2, x + cell_width - 3, y + cell_height - 3)
            draw.rectangle(box, fill=tint(palette[c]) if chosen else (238, 238, 238))
            p = float(plan.probs[r, c])
            bar = round(p * (cell_width - 13))
            if bar:
                draw.rectangle((x + 6, y + cell_height - 9, x + 5 + bar, y + cell_height - 6), fill=colour)
            draw.text((x + 6, y + 3), f"{p:.2f}", fill=BLACK, font=bold if chosen else face)
            if chosen:
                draw.rectangle(box, outline=BLACK, width=2)
    draw.text((4, grid_top + len(STAGES) * cell_height + 4), caption, fill=BLACK, font=face)
    return np.asarray(picture)


def tint(colour: np.ndarray) -> tuple[int, int, int]:
    """A light version of ``colour``, the background of a chosen expert's cell."""
    return tuple(round(0.3 * float(v) + 0.7 * 255) for v in colour)


def same_size(frames: list[np.ndarray]) -> np.ndarray:
    """Pictures of one kind (titles of different lengths) padded with white to one size and stacked."""
    height, width = max(f.shape[0] for f in frames), max(f.shape[1] for f in frames)
    out = np.full((len(frames), height, width, 3), 255, np.uint8)
    for page, frame in zip(out, frames, strict=True):
        page[: frame.shape[0], : frame.shape[1]] = frame
    return out


def save_maps(
    out_dir: Path,
    source: Path,
    image: Any,
    layout: Layout,
    plans: list[tuple[str, Plan]],
    restorer: Restorer,
    extra: dict,
) -> None:
    """Write the degradation map and routes pictures (PNG for one plan, a TIFF page per plan otherwise) and
    a JSON report for one input.

    Args:
        out_dir: the output folder.
        source: the input file.
        image: the input's array as restored, in ``layout``'s axes.
        layout: its layout.
        plans: what each plan applies to, and the plan.
        restorer: the restorer that made the plans.
        extra: more entries for the report.
    """
    stem = source.stem
    backgrounds = grey_backgrounds(image, layout, [p for _, p in plans])
    pictures = {
        "degradation_map": [render_degradation_map(p, b) for (_, p), b in zip(plans, backgrounds, strict=True)],
        "routes": [render_routes(p) for _, p in plans],
    }
    for name, frames in pictures.items():
        if len(frames) == 1:
            write_image(out_dir / f"{stem}_{name}.png", frames[0])
        else:
            write_image(out_dir / f"{stem}_{name}.tif", same_size(frames), "ZYXC")
    report = {
        "input": str(source),
        **extra,
        "model": restorer.config.name,
        "weights": restorer.weights,
        "untrained": restorer.untrained,
        "device": str(restorer.device),
        "plans": [{"applies_to": what, **plan.summary()} for what, plan in plans],
    }
    write_text(out_dir / f"{stem}_report.json", compact_json(rounded(report)))


def rounded(data: Any, digits: int = 4) -> Any:
    """``data`` with every float rounded to ``digits`` significant digits: float32 probabilities print as
    ``0.0392``, not ``0.03920000046491623``."""
    if isinstance(data, float):
        return float(f"{data:.{digits}g}")
    if isinstance(data, dict):
        return {key: rounded(value, digits) for key, value in data.items()}
    if isinstance(data, (list, tuple)):
        return [rounded(value, digits) for value in data]
    return data


def compact_json(data: dict) -> str:
    """Indented JSON with each innermost list of numbers on one line (a 4x4 map stays readable)."""
    text = json.dumps(data, indent=1)
    return re.sub(r"\[\s+([^\[\]{}\"]*?)\s+\]", lambda m: "[" + " ".join(m.group(1).split()) + "]", text) + "\n"
