"""The Adapt widget: fine-tune the model on an image layer's own noise, then restore with the adapted weights."""

from __future__ import annotations

from typing import TYPE_CHECKING

from magicgui.widgets import FloatSpinBox, PushButton

from slerir_plugin._adaptation import AdaptDone, AdaptJob, adapt_job
from slerir_plugin._state import STATE
from slerir_plugin._widgets._common import JobWidget, seconds
from slerir_plugin._workers import ProgressUpdate

if TYPE_CHECKING:
    import napari

    from slerir_plugin._workers import Update


class AdaptWidget(JobWidget):
    """Adapt the model the widgets use to a layer's noisy data (self-supervised: no clean image needed).

    When it ends, the adapted weights (written to ``_adaptation.adapted_folder()``) become the model of every
    SLER-IR widget, and the Restore widget says so. Cancel leaves the model in use as it was and writes nothing.

    Attributes (for scripts and tests, set ``.value`` then call :meth:`run`):
        _image: the layer to adapt to (the whole layer: every slice and channel).
        _minutes: the time budget.
    """

    def __init__(self, napari_viewer: napari.viewer.Viewer) -> None:
        super().__init__(napari_viewer, labels=True)
        self._image = self._new_layer_picker()
        self._minutes = FloatSpinBox(label="Minutes", value=5.0, min=0.1, max=120.0, step=0.5)
        self._minutes.tooltip = "Time budget; it stops earlier once the loss on held-out crops stops improving."
        self._run_button = PushButton(text="Adapt to this layer")
        self._run_button.tooltip = (
            "Fine-tune the experts this layer routes to on its own noise (pixel-independent noise: photon, read, "
            "per-pixel gain), with no clean image. Restore then uses the adapted weights."
        )
        self.extend([self._image, self._model_line(), self._minutes])
        self._add_job_panel(self._run_button)
        self._cancel_button.tooltip = "Stop adapting; the model in use stays as it was."
        self._run_button.changed.connect(self.run)
        self._follow_layers()

    def run(self) -> None:
        """Start adapting to the chosen layer (returns at once; the work runs in a thread)."""
        picked = self._selected_geometry(self._image)
        if picked is None:
            return
        layer, geo = picked
        self._start(adapt_job, AdaptJob(layer.data, geo.axes, STATE.spec, float(self._minutes.value), layer.name))

    def _on_update(self, update: Update) -> None:
        if isinstance(update, ProgressUpdate):  # thousandths of the budget, not tiles
            self._progress.max, self._progress.value = update.total, min(update.done, update.total)
            return
        super()._on_update(update)

    def _handle_result(self, result: AdaptDone) -> None:
        STATE.use_adapted(str(result.weights), self._image.value.name)
        r = result.result
        start, best = r.curve[0][1], min(loss for _, loss in r.curve)
        self._status.value = (
            f"Adapted in {seconds(result.seconds)} ({r.loss}, {r.steps} steps, {r.stopped}): held-out loss "
            f"{start:.5f} → {best:.5f}. The SLER-IR widgets now use {result.weights.name}."
        )
