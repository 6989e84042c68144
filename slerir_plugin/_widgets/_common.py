"""Pieces the widgets share: the image-layer picker, the run/cancel/progress panel, the job lifecycle."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from magicgui.widgets import ComboBox, Container, Label, ProgressBar, PushButton
from napari.utils.notifications import show_error, show_info
from psygnal import Signal

from slerir_plugin import _workers
from slerir_plugin._layers import Geometry, LayerError, add_or_replace, expand_leading, geometry
from slerir_plugin._state import STATE
from slerir_plugin._workers import Failed, ModelReady, Planned, ProgressUpdate, RestoreResult, Status

if TYPE_CHECKING:
    import napari
    import napari.layers
    from napari.qt.threading import GeneratorWorker

    from slerir_plugin._workers import JobResult, Update

RESTORED_SUFFIX = " (restored)"


def image_layers(viewer: napari.Viewer) -> Callable[[Any], list[tuple[str, Any]]]:
    """Choices callable for a layer ComboBox: the viewer's image layers, by name, re-read on every refresh."""

    from napari.layers import Image

    def choices(_widget: Any) -> list[tuple[str, Any]]:
        return [(layer.name, layer) for layer in viewer.layers if isinstance(layer, Image)]

    return choices


def layer_picker(viewer: napari.Viewer, label: str = "Image") -> ComboBox:
    """An image-layer ComboBox whose choices follow the layer list (added, removed, renamed, reordered)."""
    picker = ComboBox(label=label, choices=image_layers(viewer), nullable=False)
    picker.tooltip = "The image layer to work on."
    return picker


def notify_error(message: str) -> None:
    """Show an error in napari's notification area (never raises into the event loop)."""
    show_error(message)


@dataclass
class OutputContext:
    """What the main thread captured when a restore job started, to build its output layer when it ends.

    Attributes:
        layer_name: the input layer's name (the output is ``<name> (restored)``).
        geo: the input's geometry.
        index: the slice restored, for a single-slice job on a stack; ``None`` for the whole layer.
        props: output layer properties (scale, translate, ...), see ``output_properties``.
        extra_metadata: more entries for ``metadata["slerir"]``.
    """

    layer_name: str
    geo: Geometry
    index: tuple[int, ...] | None
    props: dict[str, Any]
    extra_metadata: dict[str, Any] = field(default_factory=dict)
    suffix: str = RESTORED_SUFFIX


def seconds(value: float) -> str:
    """A duration for the status line: ``0.42 s``, ``3.1 s``."""
    return f"{value:.2f} s" if value < 10 else f"{value:.1f} s"


def untrained_note(info: Any) -> str:
    """A warning to append to a result's status when the model has no trained weights."""
    return " Untrained model (no weights): the output is not a restoration." if info.untrained else ""


def write_restored(viewer: napari.Viewer, ctx: OutputContext, result: RestoreResult) -> napari.layers.Image:
    """Show a restore job's result as ``<name> (restored)``, replacing an earlier one; record how it was made."""
    data = result.data
    if ctx.index is not None:
        data = expand_leading(data, ctx.geo.leading)
    plan = result.plan
    meta = {
        "routes": result.routes,
        "routes_per_plan": result.routes_per_plan,
        "label": None if plan is None else plan.label,
        "confidence": None if plan is None or plan.confidence is None else float(plan.confidence),
        "verdict": None if plan is None else plan.verdict().text,
        "weights": result.info.name,
        "model": result.info.description,
        "device": result.info.device,
        "slice": None if ctx.index is None else list(ctx.index),
        "source": ctx.layer_name,
        "seconds": round(result.seconds, 3),
        **ctx.extra_metadata,
    }
    return add_or_replace(viewer, ctx.layer_name + ctx.suffix, data, ctx.props, metadata={"slerir": meta})


class JobWidget(Container):
    """A widget that runs one background job at a time, with Run, Cancel, a progress bar and a status line.

    Subclasses build their controls, then call :meth:`_add_job_panel`, start jobs with :meth:`_start`
    and handle results in :meth:`_handle_result`.

    Signals:
        job_started(GeneratorWorker): a job began (tests connect to it to cancel or wait).
        job_done(object): a job ended with this result (``None`` when cancelled or crashed).
    """

    job_started = Signal(object)
    job_done = Signal(object)

    def __init__(self, viewer: napari.Viewer, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._viewer = viewer
        self._worker: GeneratorWorker | None = None
        self._result: JobResult | None = None
        self._run_buttons: list[PushButton] = []
        self._cancel_button = PushButton(text="Cancel", enabled=False)
        self._cancel_button.tooltip = "Stop the running job after the current tile."
        self._progress = ProgressBar(value=0, min=0, max=1, label="Progress", visible=False)
        self._status = Label(value="", label="")
        self._cancel_button.changed.connect(self.cancel)
        self._state_slots: list[tuple[Any, Callable]] = []
        self._layer_pickers: list[ComboBox] = []
        # The Python object can outlive its Qt widget (a closed viewer): drop the shared-state connections
        # and stop the job when Qt deletes it, so no callback touches a deleted widget.
        self.native.destroyed.connect(self._teardown)

    def _listen(self, signal: Any, slot: Callable) -> None:
        """Connect ``slot`` to a shared-state or viewer signal for as long as this widget's Qt widget exists."""
        signal.connect(slot)
        self._state_slots.append((signal, slot))

    def _follow_layers(self) -> None:
        """Refresh the layer pickers when layers are added, removed, moved or renamed.

        napari does this for docked widgets; doing it here too covers widgets used outside a dock
        (scripts, tests). A rename changes the text shown for a layer, hence ``renamed``.
        """
        events = self._viewer.layers.events
        for name in ("inserted", "removed", "moved", "reordered", "renamed"):
            if hasattr(events, name):
                self._listen(getattr(events, name), self.reset_choices)

    def _new_layer_picker(self, label: str = "Image") -> ComboBox:
        """A :func:`layer_picker` that :meth:`reset_choices` keeps on its layer across renames."""
        picker = layer_picker(self._viewer, label=label)
        self._layer_pickers.append(picker)
        return picker

    def reset_choices(self, *args: Any) -> None:
        """Re-read every picker's choices, keeping each layer picker on the same layer object.

        magicgui's Qt ComboBox matches items by their text, so after a rename it no longer finds the
        selected item and jumps to the first layer. Put the picker back on the layer it was on, and
        report a change only when that layer is gone (so a rename does not look like a new selection).
        """
        kept = [(picker, picker.value) for picker in self._layer_pickers]
        with contextlib.ExitStack() as stack:
            for picker, _ in kept:
                stack.enter_context(picker.changed.blocked())
            super().reset_choices(*args)
            for picker, layer in kept:
                if layer is not None and picker.value is not layer and any(c is layer for c in picker.choices):
                    picker.value = layer
        for picker, layer in kept:
            if picker.value is not layer:
                picker.changed.emit(picker.value)

    def _teardown(self, *_: Any) -> None:
        for signal, slot in self._state_slots:
            with contextlib.suppress(Exception):  # psygnal and napari emitters; already gone is fine
                signal.disconnect(slot)
        self._state_slots.clear()
        worker = self._worker
        if worker is not None:
            for name in ("yielded", "returned", "finished", "aborted"):
                with contextlib.suppress(TypeError, RuntimeError):  # nothing connected / already gone
                    getattr(worker, name).disconnect()
            worker.quit()
            self._worker = None

    def _model_line(self) -> Label:
        """A read-only line naming the model the jobs use (chosen in the Restore widget), kept up to date."""
        line = Label(label="Model", value=STATE.spec.describe())
        line.tooltip = "Choose the model and device in the Restore widget; all SLER-IR widgets share them."

        def show(*_: Any) -> None:
            info = STATE.info
            loaded = info is not None and STATE.is_loaded()
            line.value = f"{STATE.spec.describe()}" + (f" on {info.device}" if loaded else "")

        self._listen(STATE.spec_changed, show)
        self._listen(STATE.model_changed, show)
        show()
        self._model_label = line
        return line

    def _add_job_panel(self, *run_buttons: PushButton) -> None:
        self._run_buttons = list(run_buttons)
        row = Container(widgets=[*run_buttons, self._cancel_button], layout="horizontal", labels=False)
        row.margins = (0, 0, 0, 0)
        self.extend([row, self._progress, self._status])
        self._status.native.setWordWrap(True)

    # -- state ----------------------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        """Whether a job is in progress."""
        return self._worker is not None

    @property
    def status(self) -> str:
        """The status line's text."""
        return self._status.value

    def _selected_geometry(self, picker: ComboBox) -> tuple[napari.layers.Image, Geometry] | None:
        """The picked layer and its geometry; shows an error and returns ``None`` when unusable."""
        layer = picker.value
        try:
            return layer, geometry(layer)
        except LayerError as err:
            self._fail(str(err))
            return None

    def _fail(self, message: str) -> None:
        self._status.value = f"Error: {message}"
        notify_error(message)

    # -- job lifecycle ----------------------------------------------------------------------------------

    def _start(self, job: Callable[..., Generator[Update, None, JobResult]], *args: Any) -> None:
        if self.running:
            show_info("A job is already running; cancel it first.")
            return
        self._result = None
        for button in self._run_buttons:
            button.enabled = False
        self._cancel_button.enabled = True
        self._progress.visible = True
        self._progress.max, self._progress.value = 1, 0
        self._worker = _workers.start(
            job,
            *args,
            on_update=self._on_update,
            on_result=self._on_result,
            on_finished=self._on_finished,
            on_aborted=self._on_aborted,
        )
        self.job_started.emit(self._worker)

    def cancel(self) -> None:
        """Ask the running job to stop (it stops between tiles)."""
        if self._worker is not None:
            self._status.value = "Cancelling…"
            self._worker.quit()

    def _on_update(self, update: Update) -> None:
        if isinstance(update, ProgressUpdate):
            self._progress.max = max(1, update.total)
            self._progress.value = min(update.done, update.total)
            self._status.value = f"Restoring… {update.done}/{update.total} tiles"
        elif isinstance(update, Status):
            self._status.value = update.message
        elif isinstance(update, ModelReady):
            STATE.announce_model()
        elif isinstance(update, Planned):
            self._handle_plan(update.plan)

    def _on_result(self, result: JobResult) -> None:
        self._result = result
        if isinstance(result, Failed):
            self._fail(result.message)
            return
        try:
            self._handle_result(result)
        except (LayerError, ValueError) as err:  # e.g. the input layer vanished while the job ran
            self._fail(str(err))

    def _on_aborted(self) -> None:
        self._status.value = "Cancelled."

    def _on_finished(self) -> None:
        self._worker = None
        for button in self._run_buttons:
            button.enabled = True
        self._cancel_button.enabled = False
        self._progress.visible = False
        if self._status.value.endswith("…"):  # crashed: napari already showed the traceback
            self._status.value = "Stopped."
        self.job_done.emit(self._result)

    def _handle_plan(self, plan: Any) -> None:
        """A job computed a plan (override to show it)."""

    def _handle_result(self, result: Any) -> None:
        """A job succeeded (override to show the result)."""

    def wait(self, timeout_ms: int = 60_000) -> None:
        """Run the Qt event loop until the running job ends; for scripts and benchmarks.

        Raises:
            TimeoutError: the job is still running after ``timeout_ms``.
        """
        from qtpy.QtCore import QEventLoop, QTimer

        if not self.running:
            return
        loop = QEventLoop()

        def quit_loop(*_: Any) -> None:
            loop.quit()

        self.job_done.connect(quit_loop)
        QTimer.singleShot(timeout_ms, loop.quit)
        try:
            loop.exec()
        finally:
            self.job_done.disconnect(quit_loop)
        if self.running:
            raise TimeoutError(f"job still running after {timeout_ms} ms")
