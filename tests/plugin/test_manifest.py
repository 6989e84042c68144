"""The npe2 manifest: valid, found through the entry point, widgets and menus show up in a real viewer."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from importlib.metadata import entry_points
from pathlib import Path

import pytest
from npe2 import PluginManifest

import slerir_plugin

ROOT = Path(__file__).resolve().parents[2]
MANIFEST = Path(slerir_plugin.__file__).parent / "napari.yaml"
WIDGETS = ("Restore", "Routes", "Degradation map", "Adapt to your data")
SAMPLES = ("noisy", "rainy", "hazy", "blurred", "dark", "cells")


def test_manifest_validates_and_imports():
    manifest = PluginManifest.from_file(MANIFEST)
    manifest.validate_imports()  # every python_name resolves
    assert manifest.name == "slerir" and manifest.display_name == "SLER-IR"
    assert [w.display_name for w in manifest.contributions.widgets] == list(WIDGETS)
    assert [s.key for s in manifest.contributions.sample_data] == list(SAMPLES)
    menus = manifest.contributions.menus
    assert [item.submenu for item in menus["napari/layers/filter"]] == ["slerir.layers_filter_restore"]
    assert len(menus["slerir.layers_filter_restore"]) == len(WIDGETS)


def test_top_level_manifest_is_the_package_one():
    top = ROOT / "napari.yaml"
    assert top.is_symlink() and top.resolve() == MANIFEST.resolve()


def test_entry_point_is_registered():
    (ep,) = [ep for ep in entry_points(group="napari.manifest") if ep.name == "slerir"]
    assert ep.value == "slerir_plugin:napari.yaml"
    assert PluginManifest.from_distribution("slerir").name == "slerir"


def menu_texts(menu) -> dict[str, object]:
    """Visible entries of a QMenu: text -> submenu (or None), after napari refreshes it."""
    menu.aboutToShow.emit()
    return {a.text().replace("&", ""): a.menu() for a in menu.actions() if a.isVisible() and a.text()}


@pytest.mark.gui
def test_widgets_load_from_the_manifest(make_napari_viewer):
    from slerir_plugin._widgets import AdaptWidget, DegradationMapWidget, RestoreWidget, RoutesWidget

    viewer = make_napari_viewer()
    for name, cls in zip(WIDGETS, (RestoreWidget, RoutesWidget, DegradationMapWidget, AdaptWidget), strict=True):
        _dock, widget = viewer.window.add_plugin_dock_widget("slerir", name)
        assert isinstance(widget, cls)


@pytest.mark.gui
def test_plugins_menu_lists_the_widgets(make_napari_viewer):
    viewer = make_napari_viewer()
    plugins = menu_texts(viewer.window.plugins_menu)
    entries = menu_texts(plugins["SLER-IR"])
    # napari adds " (SLER-IR)" to widget titles once a plugin also contributes to other menus.
    assert [e.split(" (")[0] for e in entries] == list(WIDGETS)


@pytest.mark.gui
def test_layers_filter_restore_submenu_shows(make_napari_viewer):
    viewer = make_napari_viewer()
    layers = menu_texts(viewer.window.layers_menu)
    filters = menu_texts(layers["Filter"])
    assert filters.get("Restore") is not None, f"Layers ▸ Filter holds {list(filters)}"
    entries = menu_texts(filters["Restore"])
    assert [e.split(" (")[0] for e in entries] == list(WIDGETS)
    # Triggering an entry opens the widget docked in the viewer.
    restore = next(a for a in filters["Restore"].actions() if a.text().startswith("Restore"))
    restore.trigger()
    assert any(name.startswith("Restore") for name in viewer.window.dock_widgets)


@pytest.mark.gui
def test_widgets_import_no_model_code_and_first_run_does_not_crash(tmp_path):
    """In a fresh process, as a user starts it: napari starts and shows the widgets without importing
    torch-heavy code; the first run then imports it in the worker, after the viewer's OpenGL is up (with
    Mesa's LLVM in the process, importing triton then used to crash napari; see ``_compat``)."""
    script = textwrap.dedent(
        """
        import sys
        import numpy as np
        import napari
        from slerir_plugin._compat import foreign_llvm_loaded
        from slerir_plugin._state import use_config

        viewer = napari.Viewer(show=False)
        widgets = [viewer.window.add_plugin_dock_widget("slerir", name)[1]
                   for name in ("Restore", "Routes", "Degradation map", "Adapt to your data")]
        heavy = [m for m in ("torch", "slerir_core.restore", "slerir_core.model", "open_clip", "triton")
                 if m in sys.modules]
        print("HEAVY", heavy, "MESA_LLVM", foreign_llvm_loaded())
        use_config("tiny")
        restore = widgets[0]
        restore._image.value = viewer.add_image(np.random.default_rng(0).random((32, 32), dtype=np.float32),
                                                name="x")
        restore.run()
        restore.wait(120_000)
        print("RESTORED", viewer.layers["x (restored)"].data.shape)
        viewer.close()
        """
    )
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "SLERIR_TORCH_THREADS": "1"}
    run = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=240, env=env, cwd=tmp_path
    )
    assert run.returncode == 0, f"exit {run.returncode}: {run.stderr[-3000:]}"
    assert "HEAVY []" in run.stdout, run.stdout[-2000:]
    assert "RESTORED (32, 32)" in run.stdout, run.stdout[-2000:]
