"""Fixtures for the napari plugin tests: the untrained ``tiny`` model, small images, notification capture.

GUI tests (marked ``gui``) need a display: CI runs them under ``xvfb-run``. Without one (no ``DISPLAY`` or
``WAYLAND_DISPLAY`` on Linux) they are skipped here, instead of Qt aborting the whole test run.
"""

from __future__ import annotations

import os
import sys

import numpy as np
import pytest

from slerir_plugin._state import STATE, use_config

HAS_DISPLAY = (
    not sys.platform.startswith("linux")
    or bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
    or os.environ.get("QT_QPA_PLATFORM") == "offscreen"
)
JOB_TIMEOUT_MS = 60_000


def pytest_collection_modifyitems(config, items):
    if HAS_DISPLAY:
        return
    skip = pytest.mark.skip(reason="GUI test: needs a display (run under xvfb-run)")
    for item in items:
        if "gui" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def tiny_restorer(monkeypatch):
    """Every plugin test uses the untrained ``tiny`` config on the CPU (built once, kept between tests).

    One torch thread: the test images are tiny, and on a busy CI runner more threads only spin.
    """
    monkeypatch.setenv("SLERIR_TORCH_THREADS", "1")
    use_config("tiny", device="cpu")
    yield
    STATE.last_plan = STATE.last_plan_layer = None


@pytest.fixture
def rgb_image() -> np.ndarray:
    """A 48×56 uint8 RGB image with structure and noise."""
    rng = np.random.default_rng(0)
    y, x = np.mgrid[:48, :56]
    base = np.stack([np.sin(x / 5.0), np.cos(y / 7.0), np.sin((x + y) / 9.0)], axis=-1) * 0.4 + 0.5
    return np.clip((base + rng.normal(0, 0.1, base.shape)) * 255, 0, 255).astype(np.uint8)


@pytest.fixture
def stack() -> np.ndarray:
    """A (4, 32, 40) float32 grey z-stack."""
    return np.random.default_rng(1).random((4, 32, 40), dtype=np.float32)


@pytest.fixture
def notifications():
    """Messages napari shows as notifications during the test (errors, warnings, infos)."""
    from napari.utils.notifications import notification_manager

    seen: list = []

    def collect(event):
        notification = getattr(event, "value", event)
        seen.append(notification)

    notification_manager.notification_ready.connect(collect)
    yield seen
    notification_manager.notification_ready.disconnect(collect)


@pytest.fixture
def wait_job(qtbot):
    """Wait until a widget's job has ended (the worker's callbacks have run on the main thread)."""

    def wait(widget, timeout: int = JOB_TIMEOUT_MS) -> None:
        qtbot.waitUntil(lambda: not widget.running, timeout=timeout)

    return wait


@pytest.fixture
def docked(make_napari_viewer):
    """A new viewer with one of the plugin's widgets docked: ``viewer, widget = docked("Restore")``."""

    def dock(name: str):
        viewer = make_napari_viewer()
        _dock, widget = viewer.window.add_plugin_dock_widget("slerir", name)
        return viewer, widget

    return dock
