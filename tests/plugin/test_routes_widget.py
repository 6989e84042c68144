"""The Routes widget: the router's choice per stage, presets, manual override, preview."""

from __future__ import annotations

import numpy as np
import pytest

from slerir_core.config import STAGES, load_config
from slerir_plugin._state import STATE, ModelInfo
from slerir_plugin._widgets.routes import AUTO, PRESET_AUTO, PRESET_LAST, TASK_PREFIX, WHOLE_STACK

pytestmark = pytest.mark.gui


@pytest.fixture
def routes_widget(docked, rgb_image):
    viewer, widget = docked("Routes")
    layer = viewer.add_image(rgb_image, name="photo", scale=(0.5, 0.5), translate=(1.0, 2.0))
    widget._image.value = layer
    return viewer, widget


def test_analyse_shows_the_router_choice(routes_widget, wait_job):
    _viewer, widget = routes_widget
    assert all(widget._stages[s].value == AUTO for s in STAGES)
    widget.analyse()
    wait_job(widget)
    plan = STATE.last_plan
    assert plan is not None and STATE.last_plan_layer == "photo"
    for i, stage in enumerate(STAGES):
        expert = plan.routes[i]
        assert widget._choices[stage].value == f"router: expert {expert + 1} ({plan.probs[i, expert]:.2f})"
    # The untrained tiny model has no task prototypes: no per-task presets.
    assert not any(c.startswith(TASK_PREFIX) for c in widget._preset.choices)


def test_presets(routes_widget, wait_job):
    _viewer, widget = routes_widget
    widget._preset.value = PRESET_LAST
    widget.apply_preset()
    assert widget.status.startswith("Error: No plan yet")
    widget.analyse()
    wait_job(widget)
    widget.apply_preset()
    assert list(widget.routes) == list(STATE.last_plan.routes)
    widget._preset.value = PRESET_AUTO
    widget.apply_preset()
    assert widget.routes == (None,) * len(STAGES)


def test_route_override_changes_the_output(routes_widget, wait_job):
    viewer, widget = routes_widget
    widget.apply()  # all auto: the router's path
    wait_job(widget)
    auto_out = viewer.layers["photo (restored)"]
    auto_routes = auto_out.metadata["slerir"]["routes"]
    auto_data = auto_out.data.copy()
    assert auto_routes == list(STATE.last_plan.routes)
    assert auto_out.metadata["slerir"]["verdict"] == "none (the model has no task labels)"

    manual = [(r + 1) % 3 for r in auto_routes]  # a different expert at every stage
    widget.routes = manual
    widget.apply()
    wait_job(widget)
    out = viewer.layers["photo (restored)"]
    assert out.metadata["slerir"]["routes"] == manual and out.metadata["slerir"]["manual"] == manual
    assert out.metadata["slerir"]["verdict"] == "manual"  # the router decided nothing: no label of its own
    assert out.data.shape == auto_data.shape and not np.array_equal(out.data, auto_data)

    # One manual stage, the rest auto: auto stages take the router's choice.
    widget.routes = [manual[0]] + [None] * 7
    widget.apply()
    wait_job(widget)
    assert viewer.layers["photo (restored)"].metadata["slerir"]["routes"] == [manual[0], *auto_routes[1:]]


def test_apply_to_a_whole_stack(make_napari_viewer, stack, wait_job):
    viewer = make_napari_viewer()
    _dock, widget = viewer.window.add_plugin_dock_widget("slerir", "Routes")
    widget._image.value = viewer.add_image(stack, name="cells")
    widget._scope.value = WHOLE_STACK
    widget.routes = [1] * 8
    widget.apply()
    wait_job(widget)
    out = viewer.layers["cells (restored)"]
    assert out.data.shape == stack.shape and out.metadata["slerir"]["routes"] == [1] * 8


def test_preview_restores_the_visible_region(routes_widget, wait_job):
    viewer, widget = routes_widget
    viewer.scene.camera.center = (0.0, 1.0 + 0.5 * 24, 2.0 + 0.5 * 28)  # the middle of the image (world)
    viewer.scene.camera.zoom = viewer.canvas.size[0] / (0.5 * 20)  # ~20 image rows fill the canvas height
    widget.routes = [0] * 8
    widget.preview()
    wait_job(widget)
    preview = viewer.layers["photo (route preview)"]
    meta = preview.metadata["slerir"]
    rows, cols = meta["preview"]["rows"], meta["preview"]["cols"]
    assert 0 < rows[1] - rows[0] < 48, rows  # only part of the image was on screen
    assert preview.data.shape[:2] == (rows[1] - rows[0], cols[1] - cols[0])
    assert tuple(preview.translate) == (1.0 + 0.5 * rows[0], 2.0 + 0.5 * cols[0])
    assert meta["routes"] == [0] * 8


def test_task_presets_for_models_with_task_prototypes(routes_widget):
    """A model with task prototypes gets one preset per task: the argmax of its router's centre cosine."""
    import torch

    from slerir_core.model import SLERIR
    from slerir_core.restore import Restorer

    _viewer, widget = routes_widget
    config = load_config({**load_config("tiny").to_dict(), "tasks": ["noise", "rain"]})
    torch.manual_seed(0)
    model = SLERIR(config).eval()
    with torch.no_grad():
        model.task_prototypes.copy_(torch.randn_like(model.task_prototypes))

    paths = {name: tuple(path) for name, path in Restorer(model, "cpu").task_routes().items()}
    assert set(paths) == {"noise", "rain"} and all(len(p) == 8 for p in paths.values())
    expected = model.router.probabilities(torch.nn.functional.normalize(model.task_prototypes, dim=-1))
    assert list(paths["rain"]) == expected.argmax(-1)[1].tolist()

    widget._on_model_loaded(ModelInfo("x", 3, ("noise", "rain"), paths, "cpu", 64))
    assert TASK_PREFIX + "rain" in widget._preset.choices
    widget._preset.value = TASK_PREFIX + "rain"
    widget.apply_preset()
    assert list(widget.routes) == list(paths["rain"])


def test_model_line_follows_the_restore_widget(make_napari_viewer, tmp_path):
    from slerir_plugin._widgets.restore import WEIGHTS_FILE

    viewer = make_napari_viewer()
    _dock, restore = viewer.window.add_plugin_dock_widget("slerir", "Restore")
    _dock, routes = viewer.window.add_plugin_dock_widget("slerir", "Routes")
    _dock, maps = viewer.window.add_plugin_dock_widget("slerir", "Degradation map")
    path = tmp_path / "mine.safetensors"
    path.write_bytes(b"")
    restore._model.value = WEIGHTS_FILE
    restore._weights.value = path
    assert routes._model_label.value.startswith(str(path))
    assert maps._model_label.value.startswith(str(path))
