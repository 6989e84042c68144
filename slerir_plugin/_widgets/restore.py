"""The Restore widget: pick an image layer and a model, restore the current slice or the whole stack."""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from magicgui.widgets import ComboBox, FileEdit, Label, PushButton

from slerir_plugin._layers import LayerError, current_index, geometry, output_properties, take_plane
from slerir_plugin._state import STATE, ModelInfo, ModelSpec
from slerir_plugin._widgets._common import (
    JobWidget,
    OutputContext,
    seconds,
    untrained_note,
    write_restored,
)
from slerir_plugin._workers import RestoreJob, RestoreResult, restore_job

if TYPE_CHECKING:
    import napari

SHIPPED = "shipped default"
WEIGHTS_FILE = "weights file…"
DEVICES = ("auto", "cpu", "cuda", *(("mps",) if sys.platform == "darwin" else ()))
CURRENT_SLICE, WHOLE_STACK = "current slice", "whole stack"
PLAN_PER_SLICE, PLAN_ONCE = "per slice", "once for the stack"
SCALING_CHOICES = [("robust (1st-99.8th percentile)", "percentile"), ("minimum-maximum", "minmax")]
TILE_DEFAULT, TILE_WHOLE = 0, -1
TILE_CHOICES = [
    ("model default", TILE_DEFAULT),
    *((f"{t} px", t) for t in (64, 128, 256, 512, 1024, 2048)),
    ("whole image (no tiles)", TILE_WHOLE),
]


class RestoreWidget(JobWidget):
    """Restore an image layer into a new layer ``<name> (restored)``.

    Args:
        napari_viewer: the viewer (napari passes it when the widget opens from the menu).

    Attributes (for scripts and tests, set ``.value`` then call :meth:`run`):
        _image: the input layer.
        _model: ``"shipped default"`` or ``"weights file…"``.
        _weights: the weights file, when ``_model`` asks for one.
        _device: ``auto``, ``cpu``, ``cuda`` (``mps`` on macOS).
        _tile: tile size in pixels, ``TILE_DEFAULT`` (the model's) or ``TILE_WHOLE`` (no tiling).
        _scope: ``current slice`` or ``whole stack`` (stacks only).
        _plan_per: ``per slice`` or ``once for the stack`` (whole stacks only).
        _scaling: ``percentile`` or ``minmax``, how data other than 8-bit or float in [0, 1] is scaled.
    """

    def __init__(self, napari_viewer: napari.viewer.Viewer) -> None:
        super().__init__(napari_viewer, labels=True)
        self._image = self._new_layer_picker()
        self._model = ComboBox(label="Model", choices=[SHIPPED, WEIGHTS_FILE], value=SHIPPED)
        self._model.tooltip = "The network's weights: the ones shipped with SLER-IR, or a .safetensors file."
        self._weights = FileEdit(label="Weights file", mode="r", filter="*.safetensors", visible=False)
        self._device = ComboBox(label="Device", choices=list(DEVICES), value="auto")
        self._device.tooltip = "auto: the GPU when there is one, else the CPU."
        self._tile = ComboBox(label="Tile size", choices=TILE_CHOICES, value=TILE_DEFAULT)
        self._tile.tooltip = "Images are restored tile by tile; smaller tiles need less (GPU) memory."
        self._scope = ComboBox(label="Restore", choices=[CURRENT_SLICE, WHOLE_STACK], value=WHOLE_STACK)
        self._plan_per = ComboBox(label="Plan", choices=[PLAN_PER_SLICE, PLAN_ONCE], value=PLAN_PER_SLICE)
        self._plan_per.tooltip = (
            "per slice: every slice is routed by its own analysis. once: one analysis "
            "routes the whole stack, so all slices take the same expert path."
        )
        self._scaling = ComboBox(label="Scaling", choices=SCALING_CHOICES, value="percentile")
        self._scaling.tooltip = (
            "How 16-bit and other data (not 8-bit, not float in [0, 1]) is scaled for the network. robust: its "
            "1st to 99.8th percentile, so hot and dead pixels keep their values and do not squeeze the signal. "
            "minimum-maximum: the data's whole range."
        )
        self._adapted = Label(value="", label="")
        self._adapted.tooltip = "Weights adapted to a layer's own noise (Adapt widget): the model every job now uses."
        self._context: OutputContext | None = None
        self._run_button = PushButton(text="Run")
        self._run_button.tooltip = "Restore into a layer '<name> (restored)'; a later run replaces it."
        self.extend([self._image, self._model, self._weights, self._adapted, self._device, self._tile, self._scaling])
        self.extend([self._scope, self._plan_per])
        self._add_job_panel(self._run_button)

        self._run_button.changed.connect(self.run)
        self._model.changed.connect(self._on_model_choice)
        self._weights.changed.connect(self._push_spec)
        self._device.changed.connect(self._push_spec)
        self._image.changed.connect(self._on_image)
        self._scope.changed.connect(self._on_image)
        self._listen(STATE.model_changed, self._on_model_loaded)
        self._listen(STATE.spec_changed, self._follow_spec)
        self._follow_layers()
        self._on_image()
        self._follow_spec(STATE.spec)

    # -- controls ---------------------------------------------------------------------------------------

    def _on_model_choice(self) -> None:
        self._weights.visible = self._model.value == WEIGHTS_FILE
        self._push_spec()

    def _spec(self) -> ModelSpec:
        weights = None
        if self._model.value == WEIGHTS_FILE:
            value = self._weights.value
            weights = str(value) if value and str(value) not in ("", ".") else None
        device = None if self._device.value == "auto" else self._device.value
        # `config` is not a control: tests and developers set it through `_state.use_config`.
        return replace(STATE.spec, weights=weights, device=device)

    def _push_spec(self) -> None:
        STATE.set_spec(self._spec())

    def _follow_spec(self, spec: ModelSpec) -> None:
        """Show weights chosen elsewhere (adapted weights) in the model controls, and say when they are adapted."""
        if spec.weights is not None and (self._model.value != WEIGHTS_FILE or str(self._weights.value) != spec.weights):
            with self._model.changed.blocked(), self._weights.changed.blocked():
                self._model.value, self._weights.value = WEIGHTS_FILE, spec.weights
            self._weights.visible = True
        layer = STATE.adapted.get(spec.weights or "")
        self._adapted.value = "" if layer is None else f"Adapted to '{layer}' ({Path(spec.weights).name})"
        self._adapted.visible = layer is not None

    def _on_image(self) -> None:
        layer = self._image.value
        stack = False
        if layer is not None:
            try:
                stack = geometry(layer).is_stack
            except LayerError:
                stack = False
        self._scope.enabled = stack
        self._plan_per.enabled = stack and self._scope.value == WHOLE_STACK

    def _on_model_loaded(self, info: ModelInfo) -> None:
        self._tile.tooltip = (
            f"Images are restored tile by tile; smaller tiles need less (GPU) memory. Model default: {info.tile} px."
        )

    @property
    def tile(self) -> int | None:
        """The tile size for ``Restorer.restore``: ``None`` for the model's default, ``0`` for no tiling."""
        value = int(self._tile.value)
        return None if value == TILE_DEFAULT else 0 if value == TILE_WHOLE else value

    # -- run --------------------------------------------------------------------------------------------

    def run(self) -> None:
        """Start restoring the chosen layer (returns at once; the work runs in a thread)."""
        picked = self._selected_geometry(self._image)
        if picked is None:
            return
        layer, geo = picked
        if self._model.value == WEIGHTS_FILE and self._spec().weights is None:
            self._fail("Choose a weights file, or pick the shipped default model.")
            return
        if self._model.value == WEIGHTS_FILE and not Path(self._spec().weights or "").is_file():
            self._fail(f"Weights file {self._spec().weights} does not exist.")
            return
        self._push_spec()
        whole = not geo.is_stack or self._scope.value == WHOLE_STACK
        if whole:
            index, data, axes = None, layer.data, geo.axes
        else:
            index = current_index(layer, self._viewer)
            data, axes = take_plane(layer.data, index), geo.axes[geo.leading :]
        plan_per = "stack" if (whole and self._plan_per.value == PLAN_ONCE) else "slice"
        self._context = OutputContext(
            layer.name,
            geo,
            index,
            output_properties(layer, index),
            extra_metadata={
                "tile": self.tile,
                "plan_per": plan_per,
                "scaling": self._scaling.value,
                "scope": WHOLE_STACK if whole else CURRENT_SLICE,
            },
        )
        job = RestoreJob(data, axes, STATE.spec, tile=self.tile, plan_per=plan_per, scaling=self._scaling.value)
        self._start(restore_job, job)

    def _handle_plan(self, plan: object) -> None:
        STATE.announce_plan(self._context.layer_name, plan)

    def _handle_result(self, result: RestoreResult) -> None:
        layer = write_restored(self._viewer, self._context, result)
        verdict = None if result.plan is None else result.plan.verdict()
        what = f" — label: {verdict}" if verdict is not None and verdict.kind != "none" else ""
        self._status.value = f"Done in {seconds(result.seconds)} → '{layer.name}'{what}.{untrained_note(result.info)}"
