"""The plugin's background jobs: generators that run in a napari ``thread_worker`` and yield typed updates.

The jobs call :mod:`slerir_core` and nothing else heavy: torch and the model are imported on the first
job, inside the worker thread, never when napari starts or a widget is built. They never touch layers or
widgets; the widgets read the updates and the returned result on the main thread.

Errors a user can act on (unreadable weights, wrong image, out of memory) end the job with a
:class:`Failed` result carrying a readable message. Anything else propagates, and napari's worker shows
it as a notification with its traceback.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeAlias

import numpy as np

from slerir_core.errors import ConfigError, WeightsError
from slerir_core.io.layout import is_dask
from slerir_plugin._state import STATE, ModelInfo, ModelSpec, channels_option

if TYPE_CHECKING:
    from napari.qt.threading import GeneratorWorker

    from slerir_core.plan import Plan


# -- updates a job yields ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Status:
    """A phase of the job began (shown in the widget's status line)."""

    message: str


@dataclass(frozen=True)
class ProgressUpdate:
    """``done`` of ``total`` units (tiles) are finished."""

    done: int
    total: int


@dataclass(frozen=True)
class ModelReady:
    """The model is loaded (first job, or after the spec changed)."""

    info: ModelInfo


@dataclass(frozen=True)
class Planned:
    """The image's plan (routes, probabilities, degradation maps) is known."""

    plan: Plan


Update: TypeAlias = Status | ProgressUpdate | ModelReady | Planned


# -- results a job returns -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Failed:
    """The job stopped on an error the user can act on."""

    message: str


@dataclass(frozen=True)
class RestoreResult:
    """A restored image and how it was made.

    Attributes:
        data: same shape and dtype as the input.
        routes: the expert per stage that was used, when one path served the whole input (``None`` when
            each slice was routed by its own plan).
        plan: the plan used, when there was one for the whole input.
        seconds: wall time of the restoration itself (model loading and planning excluded).
        info: the model that did it.
        routes_per_plan: the routes of every plan the restorer used, by what it applied to (``"all"``,
            ``"Z=3"``, ...): one entry per slice when each slice was routed by its own plan.
    """

    data: np.ndarray
    routes: list[int] | None
    plan: Plan | None
    seconds: float
    info: ModelInfo
    routes_per_plan: dict[str, list[int]] = field(default_factory=dict)


@dataclass(frozen=True)
class PlanResult:
    """The plan of an image, and per-degradation probability maps upsampled for display.

    Attributes:
        plan: the plan.
        maps: (N, h, w) float32 probability maps, one per name.
        names: the maps' names (task names, or ``expert 1 .. C`` when the model has no task labels).
        info: the model that made it.
    """

    plan: Plan
    maps: np.ndarray
    names: list[str]
    info: ModelInfo


JobResult: TypeAlias = RestoreResult | PlanResult | Failed


# -- job descriptions ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class RestoreJob:
    """Everything a restoration needs, captured on the main thread.

    Attributes:
        image: the array (numpy, dask, zarr...), read inside the worker.
        axes: its axes (``"YX"``, ``"ZYXC"``...), see :func:`slerir_plugin._layers.geometry`.
        spec: the model.
        routes: ``None`` routes by the router; otherwise one entry per stage, an expert index or ``None``
            for the router's choice on this image (resolved with the image's plan).
        tile: tile size; ``None`` uses the model's default.
        plan_per: ``"slice"`` routes every slice of a stack by its own plan, ``"stack"`` plans once.
        scaling: ``"percentile"`` or ``"minmax"``, as ``RestoreOptions.scaling``.
        route_image: the image whose plan fills in ``None`` ("auto") routes; default ``image``. A preview
            of a crop passes the whole slice here, so "auto" means what the router picks for the slice.
        torch_threads: torch threads in the worker; default all usable cores.
    """

    image: Any
    axes: str
    spec: ModelSpec
    routes: tuple[int | None, ...] | None = None
    tile: int | None = None
    plan_per: str = "slice"
    scaling: str = "percentile"
    route_image: Any = None
    torch_threads: int | None = None


def _is_oom(err: BaseException) -> bool:
    # torch's CPU allocator says "can't allocate memory" in a plain RuntimeError, not "out of memory".
    text = str(err).lower()
    return isinstance(err, MemoryError) or (
        isinstance(err, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text)
    )


def _failure(err: BaseException) -> Failed | None:
    """A readable message for errors the user can act on; ``None`` for bugs (those propagate)."""
    if _is_oom(err):
        from slerir_core.device import free_cuda_cache  # torch is loaded: the error came from it

        free_cuda_cache()
        text = str(err).lower()
        where = "GPU " if any(k in text for k in ("cuda", "gpu", "mps", "hip")) else ""
        return Failed(f"Out of {where}memory: choose a smaller tile size or restore the current slice only. ({err})")
    if isinstance(err, WeightsError):
        return Failed(f"Could not load the weights file: {err}")
    if isinstance(err, ConfigError):
        return Failed(f"Bad model configuration: {err}")
    if isinstance(err, (ValueError, OSError)):
        return Failed(str(err))
    return None


def _load(spec: ModelSpec) -> Generator[Update, None, None]:
    if not STATE.is_loaded(spec):
        yield Status(f"Loading model ({spec.describe()})…")
    STATE.restorer(spec)
    assert STATE.info is not None
    yield ModelReady(STATE.info)


def _drive(steps: Generator[tuple[int, int], None, np.ndarray]) -> Generator[Update, None, np.ndarray]:
    """Re-yield a core ``restore_steps`` generator's ``(done, total)`` pairs as :class:`ProgressUpdate`."""
    try:
        while True:
            try:
                done, total = next(steps)
            except StopIteration as stop:
                return stop.value
            yield ProgressUpdate(int(done), int(total))
    finally:
        steps.close()  # a cancelled job stops the core generator too


def resolve_routes(manual: Sequence[int | None], plan: Plan) -> list[int]:
    """Manual routes with ``None`` ("auto") entries replaced by the plan's choice for that stage."""
    return [int(plan.routes[i]) if m is None else int(m) for i, m in enumerate(manual)]


def restore_job(job: RestoreJob) -> Generator[Update, None, RestoreResult | Failed]:
    """Restore an image or stack: load the model, plan when one plan serves the whole input, restore tile by tile.

    A 2-D image is planned here (once per model and content, see ``SharedState.cached_plan``) and the
    plan handed to the restorer, so Analyse, Restore and a manual-route run share one analysis. A stack
    routed per slice is planned slice by slice inside ``restore_steps``.

    Yields:
        :class:`Status`, :class:`ModelReady`, :class:`Planned` and :class:`ProgressUpdate` updates.

    Returns:
        :class:`RestoreResult`, or :class:`Failed` for errors the user can act on.
    """
    try:
        yield from _load(job.spec)
        from slerir_core.device import set_torch_threads

        set_torch_threads(job.torch_threads)
        restorer = STATE.restorer(job.spec)
        info = STATE.info
        assert info is not None
        image = job.image if is_dask(job.image) else np.asarray(job.image)
        single = all(a in "YXC" for a in job.axes)
        manual, route_plan, plan = job.routes, None, None
        if manual is not None and None in manual:
            # "auto" stages follow the router on the route image (the whole slice, for a preview of a crop).
            yield Status("Analysing the image…")
            source = image if job.route_image is None else np.asarray(job.route_image)
            route_plan = STATE.cached_plan(source, job.axes[len(job.axes) - source.ndim :], job.spec, job.scaling)
            yield Planned(route_plan)
            manual = tuple(resolve_routes(manual, route_plan))
        if single or job.plan_per == "stack":
            if route_plan is not None and job.route_image is None:
                plan = route_plan
            else:
                yield Status("Analysing the image…")
                plan = STATE.cached_plan(image, job.axes, job.spec, job.scaling)
                if manual is None:
                    yield Planned(plan)
        routes = [int(m) for m in manual] if manual is not None else None
        yield Status("Restoring…")
        used_plans: dict[str, list[int]] = {}

        def on_plan(applies_to: str, unit_plan: Plan) -> None:  # runs here, in the worker
            used_plans[applies_to] = [int(r) for r in unit_plan.routes]

        start = time.perf_counter()
        steps = restorer.restore_steps(
            image,
            plan=plan,
            routes=routes,
            tile=job.tile,
            axes=job.axes,
            plan_per=job.plan_per,
            channels=channels_option(job.axes),
            scaling=job.scaling,
            on_plan=on_plan,
        )
        data = yield from _drive(steps)
        if is_dask(data):  # a dask layer: compute here, in the worker, not on the main thread
            data = data.compute()
        used = routes if routes is not None else (list(plan.routes) if plan is not None else None)
        shown = plan or route_plan
        if shown is not None and routes is not None and any(r is not None for r in job.routes or ()):
            shown = shown.with_routes(routes)  # a stage set by hand: the router's label no longer applies
        return RestoreResult(data, used, shown, time.perf_counter() - start, info, used_plans)
    except Exception as err:
        failed = _failure(err)
        if failed is None:
            raise
        return failed


def plan_job(
    image: Any, axes: str, spec: ModelSpec, map_side: int = 512
) -> Generator[Update, None, PlanResult | Failed]:
    """Plan one image and prepare its degradation maps for display.

    Args:
        image: a single (H, W) or (H, W, C) plane.
        axes: its axes.
        spec: the model.
        map_side: the maps are upsampled to the image's size, but to at most this many pixels a side
            (the layers are scaled up to cover the image), which bounds memory on big images.
    """
    try:
        yield from _load(spec)
        yield Status("Analysing the image…")
        plan = STATE.cached_plan(image, axes, spec)
        assert STATE.info is not None
        h, w = (int(s) for s in np.shape(image)[:2])
        maps, names = degradation_maps(plan, STATE.info)
        factor = max(1.0, max(h, w) / map_side)
        target = (max(1, round(h / factor)), max(1, round(w / factor)))
        return PlanResult(plan, upsample(maps, target), names, STATE.info)
    except Exception as err:
        failed = _failure(err)
        if failed is None:
            raise
        return failed


def degradation_maps(plan: Plan, info: ModelInfo) -> tuple[np.ndarray, list[str]]:
    """The plan's per-degradation maps (task map when the model knows its tasks, else the expert map).

    Returns:
        (N, g, g) probabilities and their names.
    """
    task_map = plan.task_map
    if task_map is not None and len(info.tasks) == np.shape(task_map)[0]:
        return np.asarray(task_map, dtype=np.float32), list(info.tasks)
    expert_map = np.asarray(plan.degradation_map, dtype=np.float32)
    return expert_map, [f"expert {i + 1}" for i in range(expert_map.shape[0])]


def upsample(maps: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Bilinear upsampling of (N, g, g) maps to (N, *shape), cell-centred, edges held (values stay in [0, 1])."""
    gh, gw = maps.shape[1:]

    def coords(size: int, cells: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        pos = np.clip((np.arange(size) + 0.5) * cells / size - 0.5, 0, cells - 1)
        lo = np.floor(pos).astype(int)
        hi = np.minimum(lo + 1, cells - 1)
        return lo, hi, (pos - lo).astype(np.float32)

    y0, y1, fy = coords(shape[0], gh)
    x0, x1, fx = coords(shape[1], gw)
    top = maps[:, y0][:, :, x0] * (1 - fx) + maps[:, y0][:, :, x1] * fx
    bottom = maps[:, y1][:, :, x0] * (1 - fx) + maps[:, y1][:, :, x1] * fx
    return (top * (1 - fy)[:, None] + bottom * fy[:, None]).astype(np.float32)


def start(
    job: Callable[..., Generator[Update, None, JobResult]],
    *args: Any,
    on_update: Callable[[Update], None],
    on_result: Callable[[JobResult], None],
    on_finished: Callable[[], None],
    on_aborted: Callable[[], None] | None = None,
) -> GeneratorWorker:
    """Run ``job(*args)`` in a napari thread worker; callbacks run on the main thread."""
    from napari.qt.threading import create_worker

    worker = create_worker(job, *args, _start_thread=False)
    worker.yielded.connect(on_update)
    worker.returned.connect(on_result)
    worker.finished.connect(on_finished)
    if on_aborted is not None:
        worker.aborted.connect(on_aborted)
    worker.start()
    return worker
