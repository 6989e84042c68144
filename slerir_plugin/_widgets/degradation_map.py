"""The Degradation map widget: where in the image which degradation is, as coloured overlays."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from magicgui.widgets import ComboBox, FloatSlider, Label, PushButton
from qtpy.QtCore import Qt

from slerir_plugin._layers import add_or_replace, current_index, expand_leading, map_properties, take_plane
from slerir_plugin._state import STATE
from slerir_plugin._widgets._common import JobWidget
from slerir_plugin._workers import PlanResult, plan_job

if TYPE_CHECKING:
    import napari

# Distinct hues that stay readable when added on top of each other and of a grey or colour image.
COLORMAPS = ("magenta", "green", "cyan", "yellow", "bop orange", "bop blue", "red", "bop purple")
MAP_SEPARATOR = " map: "
BLENDINGS = ("additive", "translucent")


class DegradationMapWidget(JobWidget):
    """Per-degradation probability maps of the current slice, from the router's 4×4 crop analysis.

    Each map becomes an image layer ``<name> map: <degradation>`` (colormapped, semi-transparent, on top
    of the input); the widget shows the whole image's verdict (``Plan.verdict``: a label and its confidence, or
    uncertain, or outside training). Models trained with task labels
    give one map per task; untrained ones one per expert (``expert 1 .. C``), the crops' soft assignment to
    the expert centres.

    Args:
        napari_viewer: the viewer.

    Attributes (for scripts and tests):
        _image: the input layer.
        _blending: ``additive`` or ``translucent`` for the map layers.
        _opacity: the map layers' opacity.
        _summary: whole-image label, confidence, and each map's mean.
    """

    def __init__(self, napari_viewer: napari.viewer.Viewer) -> None:
        super().__init__(napari_viewer, labels=True)
        self._image = self._new_layer_picker(label="Layer")
        self._blending = ComboBox(label="Blending", choices=list(BLENDINGS), value="additive")
        self._opacity = FloatSlider(label="Opacity", value=0.5, min=0.0, max=1.0, step=0.05)
        self._show_button = PushButton(text="Show maps")
        self._show_button.tooltip = "Analyse the current slice and add one probability map per degradation."
        self._label = Label(label="Verdict", value="–")
        self._label.tooltip = (
            "The whole image's degradation and the model's confidence in it; 'uncertain' when no task stands out, "
            "'outside training' for a grey image planned as it is (three equal channels, unlike the training data)."
        )
        self._label.native.setWordWrap(True)
        self._summary = Label(label="Maps", value="")
        self._summary.native.setWordWrap(True)
        self._summary.native.setTextFormat(Qt.TextFormat.RichText)  # a small table of the maps' means
        self.extend([self._image, self._model_line(), self._blending, self._opacity, self._label, self._summary])
        self._add_job_panel(self._show_button)
        self._source = ""
        self._geo: Any = None
        self._index: tuple[int, ...] = ()

        self._show_button.changed.connect(self.show_maps)
        self._blending.changed.connect(self._restyle)
        self._opacity.changed.connect(self._restyle)
        self._follow_layers()

    def show_maps(self) -> None:
        """Analyse the chosen layer's current slice (in a thread); the maps appear when done."""
        picked = self._selected_geometry(self._image)
        if picked is None:
            return
        layer, geo = picked
        index = current_index(layer, self._viewer)
        plane = take_plane(layer.data, index)
        self._source, self._geo, self._index = layer.name, geo, index
        self._start(plan_job, plane, geo.axes[geo.leading :], STATE.spec)

    def map_layers(self, source: str | None = None) -> list[Any]:
        """The map layers currently shown for ``source`` (default: the chosen layer)."""
        if source is None:
            layer = self._image.value
            source = layer.name if layer is not None else self._source
        return [lyr for lyr in self._viewer.layers if lyr.metadata.get("slerir", {}).get("map_of") == source]

    def _restyle(self) -> None:
        for layer in self.map_layers():
            layer.blending = self._blending.value
            layer.opacity = float(self._opacity.value)

    def _handle_result(self, result: PlanResult) -> None:
        plan, names = result.plan, result.names
        source = self._source
        if source not in self._viewer.layers:
            self._fail(f"Layer '{source}' was removed while it was being analysed.")
            return
        props = map_properties(self._viewer.layers[source], self._index, result.maps.shape[1:])
        wanted = {source + MAP_SEPARATOR + name for name in names}
        for stale in [lyr for lyr in self.map_layers(source) if lyr.name not in wanted]:
            self._viewer.layers.remove(stale)
        for k, (name, prob) in enumerate(zip(names, result.maps, strict=True)):
            meta = {
                "slerir": {
                    "map_of": source,
                    "degradation": name,
                    "slice": list(self._index),
                    "routes": [int(r) for r in plan.routes],
                    "weights": result.info.name,
                    "grid": list(np.shape(plan.degradation_map)[1:]),
                }
            }
            add_or_replace(
                self._viewer,
                source + MAP_SEPARATOR + name,
                expand_leading(prob, self._geo.leading),
                props,
                metadata=meta,
                colormap=COLORMAPS[k % len(COLORMAPS)],
                contrast_limits=(0.0, 1.0),
                opacity=float(self._opacity.value),
                blending=self._blending.value,
            )
        STATE.announce_plan(source, plan)
        # Keep the input selected, so the other widgets and the layer controls stay on it.
        self._viewer.layers.selection.active = self._viewer.layers[source]
        verdict = plan.verdict()
        if verdict.kind != "none":
            self._label.value = verdict.text
        else:
            # No task prototypes (untrained model): say how sure the router is instead, mean max probability.
            certainty = float(np.asarray(plan.probs).max(axis=-1).mean())
            self._label.value = f"no task labels in this model (routing certainty {certainty:.2f})"
        means = result.maps.reshape(len(names), -1).mean(axis=1)
        rows = "".join(
            f"<tr><td>{n}</td><td align='right'>&nbsp;{m:.2f}</td></tr>" for n, m in zip(names, means, strict=True)
        )
        self._summary.value = f"<table>{rows}</table>"
        self._status.value = f"{len(names)} maps of '{source}' added."
