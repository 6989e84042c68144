"""The Adapt widget on a real viewer: adapting to a layer switches every widget to the adapted weights; Cancel
leaves the model in use and writes nothing."""

from __future__ import annotations

import numpy as np
import pytest

from slerir_core.checkpoint import read_metadata
from slerir_plugin._adaptation import adapted_folder
from slerir_plugin._state import STATE
from slerir_plugin._widgets.restore import WEIGHTS_FILE

pytestmark = pytest.mark.gui


@pytest.fixture
def noisy_layer_image() -> np.ndarray:
    """A 128² uint16 grey image with independent noise: four crops of 64², one held out."""
    rng = np.random.default_rng(0)
    y, x = np.mgrid[:128, :128]
    clean = 20000 + 15000 * np.sin(x / 9.0) * np.cos(y / 13.0)
    return np.clip(clean + rng.normal(0, 3000, clean.shape), 0, 65535).astype(np.uint16)


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    yield adapted_folder()
    STATE.adapted.clear()


def test_adapting_switches_the_widgets_to_the_adapted_weights(docked, noisy_layer_image, cache, wait_job, tmp_path):
    viewer, widget = docked("Adapt to your data")
    _, restore = viewer.window.add_plugin_dock_widget("slerir", "Restore")
    layer = viewer.add_image(noisy_layer_image, name="camera frame")
    widget._image.value = layer
    widget._minutes.value = 0.1
    losses = []
    widget.job_started.connect(
        lambda worker: worker.yielded.connect(lambda u: losses.append(getattr(u, "message", "")))
    )
    widget.run()
    wait_job(widget)
    (written,) = cache.iterdir()
    assert STATE.spec.weights == str(written) and STATE.adapted[str(written)] == "camera frame"
    assert read_metadata(written)["adapted_path"].count("-") == 7
    assert any("held-out loss" in m for m in losses) and "now use" in widget.status
    assert restore._model.value == WEIGHTS_FILE and str(restore._weights.value) == str(written)
    assert not restore._adapted.native.isHidden() and "Adapted to 'camera frame'" in restore._adapted.value
    viewer.window._qt_window.resize(1400, 900)
    shot = viewer.screenshot(canvas_only=False)
    assert shot.ndim == 3
    np.save(tmp_path / "shot.npy", shot)
    # Restoring now runs the adapted weights.
    restore._image.value = layer
    restore.run()
    wait_job(restore)
    assert viewer.layers["camera frame (restored)"].metadata["slerir"]["weights"] == str(written)


def test_cancelling_keeps_the_model_and_writes_nothing(docked, noisy_layer_image, cache, qtbot):
    viewer, widget = docked("Adapt to your data")
    widget._image.value = viewer.add_image(noisy_layer_image, name="frame")
    widget._minutes.value = 10.0
    before = STATE.spec
    steps = []

    def cancel_after_two(update):
        steps.append(update)
        if sum(type(u).__name__ == "ProgressUpdate" for u in steps) == 2:
            widget._cancel_button.clicked.emit()

    widget.job_started.connect(lambda worker: worker.yielded.connect(cancel_after_two))
    widget.run()
    qtbot.waitUntil(lambda: not widget.running, timeout=60_000)
    assert STATE.spec == before and not (cache.exists() and any(cache.iterdir()))
    assert widget.status == "Cancelled." and widget._run_button.enabled
