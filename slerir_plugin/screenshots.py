"""Screenshots of the plugin's widgets in use, for the README and for checking what a user sees.

    xvfb-run -a -s "-screen 0 1280x1024x24" python -m slerir_plugin.screenshots docs/screenshots

Each scene opens a sample (File ▸ Open Sample ▸ SLER-IR), docks a widget from the plugin's manifest,
runs it as a user would (the same methods the buttons call), waits for the thread worker, and saves the
whole window. The model is the default one (shipped weights, or an untrained ``compact`` model while
none ship); ``--config tiny`` makes it quick.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

WINDOW = (1280, 860)


def _settle(rounds: int = 20) -> None:
    """Let Qt lay out and vispy draw before a screenshot."""
    from qtpy.QtCore import QCoreApplication, QThread

    for _ in range(rounds):
        QCoreApplication.processEvents()
        QThread.msleep(10)


def _viewer() -> Any:
    import napari

    viewer = napari.Viewer(title="SLER-IR", show=True)
    viewer.window._qt_window.resize(*WINDOW)
    return viewer


def _save(viewer: Any, out: Path, name: str) -> Path:
    _settle()
    path = out / f"{name}.png"
    viewer.screenshot(str(path), canvas_only=False, flash=False)
    return path


def scene_restore(out: Path) -> Path:
    """Restore on the noisy cat: input and result side by side (grid mode)."""
    viewer = _viewer()
    viewer.open_sample("slerir", "noisy")
    _dock, widget = viewer.window.add_plugin_dock_widget("slerir", "Restore")
    widget.run()
    widget.wait(600_000)
    viewer.grid.enabled = True
    viewer.reset_view()
    path = _save(viewer, out, "restore")
    viewer.close()
    return path


def _restore_stack_beside(viewer: Any, restore: Any) -> None:
    """Restore the whole stack with one plan, then show input and result side by side at slice 8."""
    from slerir_plugin._widgets.restore import PLAN_ONCE, WHOLE_STACK

    restore._scope.value = WHOLE_STACK
    restore._plan_per.value = PLAN_ONCE
    restore.run()
    restore.wait(600_000)
    viewer.grid.enabled = True
    viewer.dims.set_current_step(0, 8)
    viewer.reset_view()


def scene_stack(out: Path) -> Path:
    """Restore a noisy nuclei z-stack, the whole stack with one plan; input and result side by side."""

    viewer = _viewer()
    viewer.open_sample("slerir", "cells")
    _dock, widget = viewer.window.add_plugin_dock_widget("slerir", "Restore")
    _restore_stack_beside(viewer, widget)
    path = _save(viewer, out, "restore_stack")
    viewer.close()
    return path


def scene_adapt(out: Path) -> Path:
    """Adapt to the noisy nuclei stack for a minute, then restore it with the adapted weights."""

    viewer = _viewer()
    viewer.open_sample("slerir", "cells")
    _dock, restore = viewer.window.add_plugin_dock_widget("slerir", "Restore")
    _dock, adapt = viewer.window.add_plugin_dock_widget("slerir", "Adapt to your data")
    adapt._minutes.value = 1.0
    adapt.run()
    adapt.wait(600_000)
    _restore_stack_beside(viewer, restore)
    path = _save(viewer, out, "adapt")
    viewer.close()
    return path


def scene_routes(out: Path) -> Path:
    """Routes on the hazy photo: the router's choice per stage, two stages overridden, a preview of the view."""
    viewer = _viewer()
    viewer.open_sample("slerir", "hazy")
    _dock, widget = viewer.window.add_plugin_dock_widget("slerir", "Routes")
    widget.analyse()
    widget.wait(600_000)
    widget._stages["enc1"].value = 2
    widget._stages["refine"].value = 0
    viewer.reset_view()
    camera = viewer.scene.camera
    camera.zoom *= 2.5  # a close-up: the preview restores only what is on screen
    camera.center = (0.0, 60.0, 90.0)
    _settle()
    widget.preview()
    widget.wait(600_000)
    viewer.reset_view()  # zoomed out again: the preview patch sits over the part of the input it restored
    path = _save(viewer, out, "routes")
    viewer.close()
    return path


def scene_degradation_map(out: Path) -> Path:
    """Degradation maps on the rainy photo, added over the input."""
    viewer = _viewer()
    viewer.open_sample("slerir", "rainy")
    _dock, widget = viewer.window.add_plugin_dock_widget("slerir", "Degradation map")
    widget.show_maps()
    widget.wait(600_000)
    viewer.reset_view()
    path = _save(viewer, out, "degradation_map")
    viewer.close()
    return path


def scene_menu(out: Path) -> Path:
    """The Layers ▸ Filter ▸ Restore submenu, opened, grabbed from the screen (menus are their own windows)."""
    from qtpy.QtGui import QGuiApplication

    viewer = _viewer()
    viewer.open_sample("slerir", "dark")
    window = viewer.window._qt_window
    _settle()
    bar = window.menuBar()
    layers_menu = viewer.window.layers_menu
    layers_action = layers_menu.menuAction()
    bar.setActiveAction(layers_action)
    _settle()
    filter_action = next(a for a in layers_menu.actions() if a.text().replace("&", "") == "Filter")
    layers_menu.setActiveAction(filter_action)
    filter_menu = filter_action.menu()
    _settle()
    filter_menu.popup(layers_menu.mapToGlobal(layers_menu.actionGeometry(filter_action).topRight()))
    _settle()
    restore_action = next(a for a in filter_menu.actions() if a.text().replace("&", "") == "Restore")
    filter_menu.setActiveAction(restore_action)
    restore_menu = restore_action.menu()
    restore_menu.popup(filter_menu.mapToGlobal(filter_menu.actionGeometry(restore_action).topRight()))
    _settle(40)
    geometry = window.frameGeometry()
    shot = QGuiApplication.primaryScreen().grabWindow(0, geometry.x(), geometry.y(), 900, 420)
    path = out / "menu_layers_filter.png"
    shot.save(str(path))
    restore_menu.close()
    filter_menu.close()
    layers_menu.close()
    viewer.close()
    return path


SCENES: dict[str, Callable[[Path], Path]] = {
    "restore": scene_restore,
    "restore_stack": scene_stack,
    "routes": scene_routes,
    "degradation_map": scene_degradation_map,
    "menu": scene_menu,
    "adapt": scene_adapt,
}


def main(argv: list[str] | None = None) -> int:
    """Save the screenshots; returns the exit status."""
    parser = argparse.ArgumentParser(prog="python -m slerir_plugin.screenshots", description=__doc__.split("\n")[0])
    parser.add_argument("outdir", type=Path, help="folder for the PNG files (created)")
    parser.add_argument("--config", default=None, help="an untrained named config instead of the default model")
    parser.add_argument("--only", nargs="*", choices=sorted(SCENES), help="just these scenes")
    args = parser.parse_args(argv)

    from slerir_plugin._state import use_config

    args.outdir.mkdir(parents=True, exist_ok=True)
    if args.config:
        use_config(args.config, device=None)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    from slerir_plugin._compat import preload_triton

    preload_triton()
    import torch

    torch.manual_seed(0)  # an untrained model is initialised the same way every time: same pictures
    for name in args.only or SCENES:
        path = SCENES[name](args.outdir)
        print(f"saved {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
