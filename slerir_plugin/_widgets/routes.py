"""The Routes widget: see the router's expert per stage, override it, preview and apply the manual path."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from magicgui.widgets import ComboBox, Container, Label, PushButton

from slerir_core.config import STAGES
from slerir_plugin._layers import LayerError, current_index, geometry, output_properties, take_plane, visible_region
from slerir_plugin._state import DEFAULT_EXPERTS, STATE, ModelInfo
from slerir_plugin._widgets._common import (
    JobWidget,
    OutputContext,
    seconds,
    untrained_note,
    write_restored,
)
from slerir_plugin._workers import PlanResult, RestoreJob, RestoreResult, plan_job, restore_job

if TYPE_CHECKING:
    import napari

AUTO = -1
PRESET_AUTO = "all auto"
PRESET_LAST = "copy from last plan"
TASK_PREFIX = "task: "
CURRENT_SLICE, WHOLE_STACK = "current slice", "whole stack"
PREVIEW_SIDE = 256
PREVIEW_SUFFIX = " (route preview)"


class RoutesWidget(JobWidget):
    """Show and override the expert chosen at each of the eight routed stages.

    Args:
        napari_viewer: the viewer.

    Attributes (for scripts and tests):
        _image: the input layer.
        _stages: stage name -> ComboBox whose value is ``-1`` (auto) or an expert index.
        _choices: stage name -> Label with the router's choice and probability for the current image.
        _preset: a preset name; :meth:`apply_preset` sets the stage dropdowns from it.
        _scope: ``current slice`` or ``whole stack`` for :meth:`apply`.
    """

    def __init__(self, napari_viewer: napari.viewer.Viewer) -> None:
        super().__init__(napari_viewer, labels=True)
        self._num_experts = STATE.info.num_experts if STATE.info else DEFAULT_EXPERTS
        self._task_routes: dict[str, tuple[int, ...]] = dict(STATE.info.task_routes) if STATE.info else {}
        self._plan: Any = None
        self._context: OutputContext | None = None
        self._mode = ""
        self._analysed = ""

        self._image = self._new_layer_picker()
        self._analyse_button = PushButton(text="Analyse current slice")
        self._analyse_button.tooltip = "Show the router's expert and probability per stage for this image."
        self._stages: dict[str, ComboBox] = {}
        self._choices: dict[str, Label] = {}
        rows = []
        for stage in STAGES:
            combo = ComboBox(choices=self._expert_choices, value=AUTO)
            combo.tooltip = f"Expert used at stage {stage}; auto follows the router."
            info = Label(value="router: –")
            info.min_width = 150
            self._stages[stage], self._choices[stage] = combo, info
            row = Container(widgets=[combo, info], layout="horizontal", labels=False, label=stage)
            row.margins = (0, 0, 0, 0)
            rows.append(row)
        self._preset = ComboBox(choices=self._preset_choices, value=PRESET_AUTO)
        self._preset.tooltip = "Task paths appear for models trained with task labels."
        self._preset_button = PushButton(text="Set")
        preset_row = Container(
            widgets=[self._preset, self._preset_button], layout="horizontal", labels=False, label="Preset"
        )
        preset_row.margins = (0, 0, 0, 0)
        self._scope = ComboBox(label="Apply to", choices=[CURRENT_SLICE, WHOLE_STACK], value=CURRENT_SLICE)
        self._preview_button = PushButton(text="Preview view")
        self._preview_button.tooltip = (
            f"Restore only the part of the current slice on screen (at most "
            f"{PREVIEW_SIDE} px a side, subsampled if larger) with these routes."
        )
        self._apply_button = PushButton(text="Apply")
        self._apply_button.tooltip = "Restore into '<name> (restored)' with these routes."
        self.extend([self._image, self._model_line(), self._analyse_button, *rows, preset_row, self._scope])
        self._add_job_panel(self._preview_button, self._apply_button)
        self._run_buttons.append(self._analyse_button)

        self._analyse_button.changed.connect(self.analyse)
        self._preset_button.changed.connect(self.apply_preset)
        self._preview_button.changed.connect(self.preview)
        self._apply_button.changed.connect(self.apply)
        self._image.changed.connect(self._on_image)
        self._listen(STATE.model_changed, self._on_model_loaded)
        self._listen(STATE.plan_changed, self._on_plan_changed)
        self._follow_layers()
        self._on_image()

    # -- choices ----------------------------------------------------------------------------------------

    def _expert_choices(self, _widget: Any = None) -> list[tuple[str, int]]:
        return [("auto", AUTO)] + [(f"expert {j + 1}", j) for j in range(self._num_experts)]

    def _preset_choices(self, _widget: Any = None) -> list[str]:
        # Per-task paths exist only for trained models with task prototypes; untrained ones get none.
        return [PRESET_AUTO, PRESET_LAST] + [TASK_PREFIX + task for task in self._task_routes]

    @property
    def routes(self) -> tuple[int | None, ...]:
        """The manual routes: an expert index per stage, ``None`` where the router decides."""
        return tuple(None if self._stages[s].value == AUTO else int(self._stages[s].value) for s in STAGES)

    @routes.setter
    def routes(self, value: Any) -> None:
        for stage, expert in zip(STAGES, value, strict=True):
            self._stages[stage].value = AUTO if expert is None else int(expert)

    def apply_preset(self) -> None:
        """Set the stage dropdowns from the chosen preset."""
        preset = self._preset.value
        if preset == PRESET_AUTO:
            self.routes = [None] * len(STAGES)
        elif preset == PRESET_LAST:
            plan = STATE.last_plan
            if plan is None:
                self._fail("No plan yet: run Analyse or Restore first.")
                return
            self.routes = [int(r) for r in plan.routes]
        elif preset.startswith(TASK_PREFIX):
            self.routes = self._task_routes[preset[len(TASK_PREFIX) :]]
        self._status.value = f"Preset '{preset}' set."

    # -- events -----------------------------------------------------------------------------------------

    def _on_image(self) -> None:
        layer = self._image.value
        try:
            self._scope.enabled = layer is not None and geometry(layer).is_stack
        except LayerError:
            self._scope.enabled = False
        plan = STATE.last_plan if layer is not None and STATE.last_plan_layer == layer.name else None
        self._show_plan(plan)

    def _on_model_loaded(self, info: ModelInfo) -> None:
        changed = info.num_experts != self._num_experts or dict(info.task_routes) != self._task_routes
        self._num_experts, self._task_routes = info.num_experts, dict(info.task_routes)
        if changed:
            self.reset_choices()

    def _on_plan_changed(self, layer_name: str, plan: Any) -> None:
        layer = self._image.value
        if layer is not None and layer.name == layer_name:
            self._show_plan(plan)

    def _show_plan(self, plan: Any) -> None:
        self._plan = plan
        for i, stage in enumerate(STAGES):
            if plan is None:
                self._choices[stage].value = "router: –"
            else:
                expert = int(plan.routes[i])
                prob = float(np.asarray(plan.probs)[i, expert])
                self._choices[stage].value = f"router: expert {expert + 1} ({prob:.2f})"

    # -- jobs -------------------------------------------------------------------------------------------

    def _plane(self) -> tuple[Any, Any, tuple[int, ...], np.ndarray, str] | None:
        picked = self._selected_geometry(self._image)
        if picked is None:
            return None
        layer, geo = picked
        index = current_index(layer, self._viewer)
        return layer, geo, index, take_plane(layer.data, index), geo.axes[geo.leading :]

    def analyse(self) -> None:
        """Compute the router's choice for the current slice (in a thread) and show it next to each stage."""
        got = self._plane()
        if got is None:
            return
        layer, _geo, _index, plane, axes = got
        self._mode, self._analysed = "analyse", layer.name
        self._start(plan_job, plane, axes, STATE.spec)

    def preview(self) -> None:
        """Restore the visible part of the current slice with the chosen routes, as '<name> (route preview)'."""
        got = self._plane()
        if got is None:
            return
        layer, geo, index, plane, axes = got
        (rows, cols), stride = visible_region(layer, self._viewer, PREVIEW_SIDE)
        crop = np.ascontiguousarray(plane[rows.start : rows.stop : stride, cols.start : cols.stop : stride])
        props = output_properties(layer, index or None)
        scale = np.asarray(props["scale"], dtype=float)
        translate = np.asarray(props["translate"], dtype=float)
        y, x = geo.leading, geo.leading + 1
        translate[y] += rows.start * scale[y]
        translate[x] += cols.start * scale[x]
        scale[[y, x]] *= stride
        props.update(scale=tuple(scale), translate=tuple(translate))
        self._mode = "preview"
        self._context = OutputContext(
            layer.name,
            geo,
            index,
            props,
            suffix=PREVIEW_SUFFIX,
            extra_metadata={
                "preview": {"rows": [rows.start, rows.stop], "cols": [cols.start, cols.stop], "stride": stride},
                "manual": list(self.routes),
            },
        )
        job = RestoreJob(crop, axes, STATE.spec, routes=self.routes, route_image=plane)
        self._start(restore_job, job)

    def apply(self) -> None:
        """Restore the current slice or the whole stack with the chosen routes into '<name> (restored)'."""
        picked = self._selected_geometry(self._image)
        if picked is None:
            return
        layer, geo = picked
        index = current_index(layer, self._viewer)
        plane, plane_axes = take_plane(layer.data, index), geo.axes[geo.leading :]
        whole = not geo.is_stack or self._scope.value == WHOLE_STACK
        data, axes = (layer.data, geo.axes) if whole else (plane, plane_axes)
        self._mode = "apply"
        self._context = OutputContext(
            layer.name,
            geo,
            None if whole else index,
            output_properties(layer, None if whole else index),
            extra_metadata={"manual": list(self.routes), "scope": WHOLE_STACK if whole else CURRENT_SLICE},
        )
        # "auto" stages take the router's choice on the current slice: the one shown beside each stage.
        job = RestoreJob(data, axes, STATE.spec, routes=self.routes, route_image=plane)
        self._start(restore_job, job)

    def _handle_plan(self, plan: Any) -> None:
        layer = self._image.value
        if layer is not None:
            STATE.announce_plan(layer.name, plan)

    def _handle_result(self, result: PlanResult | RestoreResult) -> None:
        if isinstance(result, PlanResult):
            STATE.announce_plan(self._analysed, result.plan)
            self._status.value = f"Router's choice shown. Label: {result.plan.verdict()}."
            return
        layer = write_restored(self._viewer, self._context, result)
        experts = " ".join(str(r + 1) for r in result.routes or [])
        what = "Preview" if self._mode == "preview" else "Done"
        self._status.value = (
            f"{what} in {seconds(result.seconds)} → '{layer.name}', experts per stage: {experts}."
            f"{untrained_note(result.info)}"
        )
