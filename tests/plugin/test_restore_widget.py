"""The Restore widget on a real viewer: outputs, placement, replacement, stacks, cancelling, errors."""

from __future__ import annotations

import numpy as np
import pytest

from slerir_plugin._widgets.restore import CURRENT_SLICE, PLAN_ONCE, WEIGHTS_FILE, WHOLE_STACK
from slerir_plugin._workers import ProgressUpdate

pytestmark = pytest.mark.gui


@pytest.fixture
def restore_widget(docked):
    return docked("Restore")


def test_restore_rgb_image(restore_widget, rgb_image, wait_job):
    viewer, widget = restore_widget
    layer = viewer.add_image(
        rgb_image,
        name="photo",
        scale=(0.5, 0.5),
        translate=(3.0, 4.0),
        axis_labels=("y", "x"),
        contrast_limits=(10, 240),
    )
    widget._image.value = layer
    widget.run()
    assert widget.running
    wait_job(widget)
    out = viewer.layers["photo (restored)"]
    assert out.data.shape == rgb_image.shape and out.data.dtype == np.uint8 and out.rgb
    assert tuple(out.scale) == (0.5, 0.5) and tuple(out.translate) == (3.0, 4.0)
    assert tuple(out.axis_labels) == ("y", "x") and tuple(out.contrast_limits) == (10, 240)
    meta = out.metadata["slerir"]
    assert len(meta["routes"]) == 8 and meta["weights"] == "untrained 'tiny' config" and meta["source"] == "photo"
    assert meta["slice"] is None and "Done" in widget.status

    # A second run replaces the output instead of adding another layer.
    n_layers = len(viewer.layers)
    widget._tile.value = 64
    widget.run()
    wait_job(widget)
    assert len(viewer.layers) == n_layers
    assert viewer.layers["photo (restored)"].metadata["slerir"]["tile"] == 64


def test_restore_whole_stack_and_current_slice(restore_widget, stack, wait_job):
    viewer, widget = restore_widget
    layer = viewer.add_image(stack, name="cells", scale=(2.0, 1.0, 1.0), axis_labels=("z", "y", "x"))
    widget._image.value = layer
    assert widget._scope.enabled
    widget._scope.value = WHOLE_STACK
    widget._plan_per.value = PLAN_ONCE
    widget.run()
    wait_job(widget)
    out = viewer.layers["cells (restored)"]
    assert out.data.shape == stack.shape and out.data.dtype == np.float32
    assert tuple(out.scale) == (2.0, 1.0, 1.0) and tuple(out.axis_labels) == ("z", "y", "x")
    assert out.metadata["slerir"]["plan_per"] == "stack" and len(out.metadata["slerir"]["routes"]) == 8

    # Per slice (the default), each slice is routed by its own plan; all of them are recorded.
    widget._plan_per.value = "per slice"
    widget.run()
    wait_job(widget)
    meta = viewer.layers["cells (restored)"].metadata["slerir"]
    assert meta["routes"] is None and sorted(meta["routes_per_plan"]) == [f"Z={z}" for z in range(4)]

    viewer.dims.set_current_step(0, 2)
    widget._scope.value = CURRENT_SLICE
    widget.run()
    wait_job(widget)
    out = viewer.layers["cells (restored)"]
    assert out.data.shape == (1, 32, 40)
    assert tuple(out.translate) == (4.0, 0.0, 0.0)  # slice 2 at z-scale 2
    assert out.metadata["slerir"]["slice"] == [2]
    assert len([lyr for lyr in viewer.layers if lyr.name.endswith("(restored)")]) == 1


def test_cancel_stops_a_running_job(restore_widget, wait_job):
    viewer, widget = restore_widget
    big = np.random.default_rng(2).random((16, 64, 64), dtype=np.float32)
    widget._image.value = viewer.add_image(big, name="long")
    widget._scope.value = WHOLE_STACK
    widget._tile.value = 64  # 16 slices × 4 plans and tiles: plenty of chances to stop

    seen: list[int] = []

    def on_start(worker):
        def on_update(update):
            if isinstance(update, ProgressUpdate) and update.done >= 1 and not seen:
                seen.append(update.done)
                widget._cancel_button.clicked.emit()  # as a user's click

        worker.yielded.connect(on_update)

    widget.job_started.connect(on_start)
    widget.run()
    wait_job(widget)
    assert seen, "the job never reported progress"
    assert "long (restored)" not in viewer.layers
    assert widget.status == "Cancelled."
    assert widget._run_button.enabled and not widget._cancel_button.enabled


def test_no_layer_is_an_error_notification(restore_widget, notifications):
    _viewer, widget = restore_widget
    widget.run()
    assert not widget.running
    assert widget.status.startswith("Error: Choose an image layer")
    assert any("Choose an image layer" in str(n.message) for n in notifications)


def test_too_small_image_is_an_error(restore_widget, notifications):
    viewer, widget = restore_widget
    widget._image.value = viewer.add_image(np.zeros((4, 4), np.float32), name="tiny")
    widget.run()
    assert not widget.running and "at least 8×8" in widget.status


def test_weights_file(restore_widget, rgb_image, tmp_path, wait_job):
    import torch

    from slerir_core.checkpoint import save_weights
    from slerir_core.config import load_config
    from slerir_core.model import SLERIR

    torch.manual_seed(0)
    path = save_weights(SLERIR(load_config("tiny")), tmp_path / "tiny.safetensors")
    viewer, widget = restore_widget
    widget._image.value = viewer.add_image(rgb_image, name="photo")
    widget._model.value = WEIGHTS_FILE
    assert not widget._weights.native.isHidden()  # shown once a file is asked for (the viewer itself is hidden)
    widget.run()  # no file chosen yet
    assert not widget.running and "Choose a weights file" in widget.status
    widget._weights.value = path
    widget.run()
    wait_job(widget)
    meta = viewer.layers["photo (restored)"].metadata["slerir"]
    assert meta["weights"] == str(path) and "UNTRAINED" not in meta["model"], widget.status


def test_unavailable_device_is_an_error(restore_widget, rgb_image, notifications, wait_job, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # the same path on machines with a GPU
    viewer, widget = restore_widget
    widget._image.value = viewer.add_image(rgb_image, name="photo")
    widget._device.value = "cuda"
    widget.run()
    wait_job(widget)
    assert "no CUDA device" in widget.status and "photo (restored)" not in viewer.layers
    assert any("no CUDA device" in str(n.message) for n in notifications)


def test_unreadable_weights_file_is_an_error(restore_widget, rgb_image, tmp_path, notifications, wait_job):
    viewer, widget = restore_widget
    bad = tmp_path / "broken.safetensors"
    bad.write_bytes(b"not a weights file")
    widget._image.value = viewer.add_image(rgb_image, name="photo")
    widget._model.value = WEIGHTS_FILE
    widget._weights.value = bad
    widget.run()
    wait_job(widget)
    assert "Could not load the weights file" in widget.status
    assert any("Could not load the weights file" in str(n.message) for n in notifications)
    assert "photo (restored)" not in viewer.layers


def test_layer_picker_follows_the_layer_list(restore_widget, rgb_image):
    viewer, widget = restore_widget
    a = viewer.add_image(rgb_image, name="a")
    viewer.add_points(np.zeros((1, 2)), name="points")
    assert [c for c in widget._image.choices] == [a]
    b = viewer.add_image(rgb_image, name="b")
    assert set(widget._image.choices) == {a, b}
    b.name = "renamed"
    assert "renamed" in [widget._image.native.itemText(i) for i in range(widget._image.native.count())]
    viewer.layers.remove(a)
    assert list(widget._image.choices) == [b]


def test_renaming_the_chosen_layer_keeps_it_chosen(restore_widget, rgb_image):
    """magicgui matches items by text; a rename must not switch the picker to another layer."""
    viewer, widget = restore_widget
    viewer.add_image(rgb_image, name="first")
    second = viewer.add_image(rgb_image, name="second")
    widget._image.value = second
    changes: list = []
    widget._image.changed.connect(changes.append)
    second.name = "second, renamed"
    assert widget._image.value is second and widget._image.current_choice == "second, renamed"
    assert changes == []  # same layer: not a new selection
    viewer.layers.remove(second)
    assert widget._image.value is viewer.layers["first"] and len(changes) == 1


def test_out_of_memory_is_an_error_notification(restore_widget, rgb_image, monkeypatch, notifications, wait_job):
    from slerir_core.restore import Restorer

    def out_of_memory(*_args, **_kwargs):
        raise RuntimeError("CUDA out of memory. Tried to allocate 20.00 GiB")
        yield  # a generator, like the real one

    monkeypatch.setattr(Restorer, "restore_steps", out_of_memory)
    viewer, widget = restore_widget
    widget._image.value = viewer.add_image(rgb_image, name="photo")
    widget.run()
    wait_job(widget)
    assert widget.status.startswith("Error: Out of GPU memory") and "photo (restored)" not in viewer.layers
    assert any("Out of GPU memory" in str(n.message) for n in notifications)
    assert widget._run_button.enabled


def test_the_scaling_option_reaches_the_restoration_and_is_recorded(restore_widget, wait_job):
    viewer, widget = restore_widget
    counts = (100 + np.random.default_rng(0).poisson(500, (48, 48))).astype(np.uint16)
    counts[5, 5] = 65535  # a hot pixel: it decides the minimum-maximum range, not the percentiles
    layer = viewer.add_image(counts, name="camera")
    widget._image.value = layer
    results = {}
    for scaling in ("percentile", "minmax"):
        widget._scaling.value = scaling
        widget.run()
        wait_job(widget)
        out = viewer.layers["camera (restored)"]
        assert out.metadata["slerir"]["scaling"] == scaling
        results[scaling] = np.array(out.data)
    assert not np.array_equal(results["percentile"], results["minmax"])
