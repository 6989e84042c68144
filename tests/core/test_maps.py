"""The pictures and the report ``slerir restore --save-maps`` writes, and the demo's before/after labels."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from slerir_core.cli import main
from slerir_core.commands._drawing import font, text_size, to_uint8
from slerir_core.commands.demo import before_after
from slerir_core.commands.maps import (
    TINT,
    colours,
    grey_backgrounds,
    render_degradation_map,
    render_routes,
    rounded,
    tint,
)
from slerir_core.io.files import read_image, write_image
from slerir_core.io.layout import make_layout
from slerir_core.plan import Plan

TINY = ["--config", "tiny", "--device", "cpu", "-q"]


def halves_map(tasks: int = 2) -> np.ndarray:
    """(tasks, 4, 4) crop probabilities: task 0 most likely on the left half, task 1 on the right."""
    left = np.zeros((tasks, 4, 4), np.float32)
    left[0, :, :2], left[1, :, 2:] = 0.7, 0.7
    rest = (1 - left.max(axis=0)) / (tasks - 1)
    return np.where(left > 0, left, rest).astype(np.float32)


def make_plan(task_map: np.ndarray | None = None, routes: list[int] | None = None, manual: bool = False) -> Plan:
    probs = np.full((8, 3), 0.2, np.float32)
    probs[np.arange(8), [0, 1, 2, 0, 1, 2, 0, 1]] = 0.6
    tasks = {} if task_map is None else {f"task{i}": 1 / len(task_map) for i in range(len(task_map))}
    return Plan(
        routes=routes or [0, 1, 2, 0, 1, 2, 0, 1],
        probs=probs,
        degradation_map=halves_map(3),
        task_map=task_map,
        task_probs=tasks,
        manual_routes=manual,
    )


def count(picture: np.ndarray, colour) -> int:
    """Pixels of exactly ``colour``."""
    return int(np.all(picture == np.asarray(colour, np.uint8), axis=-1).sum())


def tinted(colour: np.ndarray, grey: int) -> np.ndarray:
    return ((1 - TINT) * grey + TINT * colour).round().astype(np.uint8)


@pytest.mark.parametrize("tasks", [2, 5])
def test_the_degradation_map_shows_the_image_at_its_size_with_a_legend_of_its_tasks(tasks):
    background = np.full((40, 48), 100, np.uint8)
    picture = render_degradation_map(make_plan(task_map=halves_map(tasks)), background)
    palette = colours(tasks)
    left, right = (np.all(picture == tinted(palette[i], 100), axis=-1) for i in (0, 1))
    rows, cols = np.nonzero(left | right)
    assert rows.max() - rows.min() + 1 == 40 and cols.min() == 0 and cols.max() == 47  # the image's own size
    assert np.nonzero(left)[1].max() < 24 <= np.nonzero(right)[1].min()  # each crop in its top task's colour
    for colour in palette:  # a legend swatch for every task, none for a task the model does not have
        assert count(picture, colour) >= 49
    assert count(picture, colours(tasks + 1)[-1]) == 0


def test_without_task_prototypes_the_degradation_map_names_the_experts():
    picture = render_degradation_map(make_plan(), np.full((40, 48), 100, np.uint8))
    assert all(count(picture, colour) >= 49 for colour in colours(3))
    assert count(picture, colours(4)[-1]) == 0


def test_a_large_image_gets_its_probabilities_written_in_its_crops():
    background = np.full((256, 256), 100, np.uint8)
    plain = render_degradation_map(make_plan(task_map=halves_map()), background)
    # A cell of 64 px holds its label: black boxes with white text.
    assert count(plain, (0, 0, 0)) > 16 * 100 and count(plain, (255, 255, 255)) > 0


def test_the_routes_picture_frames_the_expert_each_stage_uses():
    router = render_routes(make_plan(routes=[0, 1, 2, 0, 1, 2, 0, 1]))
    manual = render_routes(make_plan(routes=[0] * 8, manual=True))
    for c, colour in enumerate(colours(3)):
        assert count(router, tint(colour)) > 0
        assert count(router, colour) > 0  # a probability bar in each expert's colour
        assert (count(manual, tint(colour)) > 0) == (c == 0)
    assert router.shape[0] > 8 * text_size("enc1", font(14))[1]  # a row per stage, with room for its name


def test_backgrounds_are_the_image_each_plan_was_made_on():
    ramp = np.tile(np.arange(48, dtype=np.uint16) * 50, (40, 1))
    stack = np.stack([ramp, ramp[:, ::-1], ramp])
    layout = make_layout(stack.shape, "ZYX", "auto", stack.dtype)
    first, last = (Plan([0] * 8, np.zeros((8, 3)), halves_map(3), source=f"Z={z}") for z in (0, 1))
    a, b = grey_backgrounds(stack, layout, [first, last])
    assert a.shape == (40, 48) and a[0, 0] < a[0, -1] and b[0, 0] > b[0, -1]


def test_hot_pixels_do_not_darken_the_background():
    image = np.random.default_rng(0).poisson(1500, (64, 64)).astype(np.uint16)
    image[3, 5], image[40, 9] = 65535, 60000
    grey = to_uint8(image)
    assert np.median(grey) > 80 and grey[3, 5] == 255


def test_report_floats_are_rounded_to_four_significant_digits():
    data = {"p": np.float32(0.0392).item(), "m": [[np.float32(0.6245999932).item(), 1.0]], "n": 3, "s": "x"}
    assert rounded(data) == {"p": 0.0392, "m": [[0.6246, 1.0]], "n": 3, "s": "x"}


def test_save_maps_writes_readable_pictures_and_a_rounded_report(tmp_path):
    photo = np.random.default_rng(0).integers(0, 256, (40, 48, 3), dtype=np.uint8)
    write_image(tmp_path / "photo.png", photo)
    assert main(["restore", str(tmp_path / "photo.png"), "-o", str(tmp_path / "out"), "--save-maps", *TINY]) == 0
    text = (tmp_path / "out" / "photo_report.json").read_text()
    numbers = [float(n) for n in re.findall(r"-?\d+\.\d+(?:e-?\d+)?", text)]
    assert numbers and all(n == float(f"{n:.4g}") for n in numbers)
    assert json.loads(text)["plans"][0]["routes"]
    dmap, _ = read_image(tmp_path / "out" / "photo_degradation_map.png")
    routes, _ = read_image(tmp_path / "out" / "photo_routes.png")
    assert dmap.shape[0] > 40 and dmap.shape[1] >= 48 and routes.shape[0] > 8 * 14


def test_the_demo_labels_are_drawn_legibly():
    pair = before_after(
        np.zeros((32, 200, 3), np.uint8), np.zeros((32, 200, 3), np.uint8), ["before", "after: SLER-IR compact"]
    )
    header = pair[: pair.shape[0] - 32, 208:]
    rows, cols = np.nonzero(header.min(axis=-1) < 128)
    # DejaVu at 15 px: ascenders to descenders span 12+ px; Pillow's default 10 px font spans less.
    assert rows.max() - rows.min() + 1 >= 12 and cols.max() - cols.min() > 150
