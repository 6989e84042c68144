"""State shared by the plugin's widgets: which model to use, the loaded Restorer, and recent plans.

The widgets (Restore, Routes, Degradation map, Adapt) work on the same model and show the same plan, so
both live here, once per process, rather than in any one widget. Nothing here holds a viewer, a layer
or a widget, so closing a viewer frees everything it owned.

Threading: :meth:`SharedState.restorer` and :meth:`SharedState.cached_plan` are called from worker
threads (they take a lock); the signals are emitted only by the ``announce_*`` methods, which widgets
call on the main thread from their workers' callbacks, so connected slots may touch Qt and layers.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np
from psygnal import Signal

from slerir_core.io.layout import is_dask

if TYPE_CHECKING:
    from slerir_core.plan import Plan
    from slerir_core.restore import Restorer

DEFAULT_EXPERTS = 3
"""Experts per stage shown before a model is loaded (every shipped config uses 3)."""


def channels_option(axes: str | None) -> str:
    """The Restorer's ``channels`` for a layer: a colour axis (napari's ``rgb`` layers, the only ones given a
    ``C``) holds colour whatever the dtype, so float and 16-bit RGB pictures are restored as colour."""
    return "rgb" if axes and axes.endswith("C") else "auto"


@dataclass(frozen=True)
class ModelSpec:
    """Which model the widgets use.

    Attributes:
        weights: a SLER-IR safetensors weights file; ``None`` uses the shipped weights (or ``config``).
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"``; ``None`` picks the best available.
        config: with no ``weights``, a named config (``"tiny"``) built untrained instead of the shipped
            weights. Not offered in the widgets: tests and developers set it with :func:`use_config`.
    """

    weights: str | None = None
    device: str | None = None
    config: str | None = None

    def describe(self) -> str:
        """A short human-readable name for the status line and the output layer's metadata."""
        if self.weights is not None:
            return self.weights
        return "shipped default" if self.config is None else f"untrained '{self.config}' config"


@dataclass(frozen=True)
class ModelInfo:
    """What the widgets need to know about the loaded model, without importing torch.

    Attributes:
        name: :meth:`ModelSpec.describe` of the spec it was loaded from.
        num_experts: C, experts per routed stage.
        tasks: degradation names the model's task prototypes refer to (empty when untrained).
        task_routes: per-task expert path (argmax of the router's centre cosine for each prototype).
        device: where it runs.
        tile: default tile size.
        untrained: freshly initialised (no weights): its output is not a restoration.
        description: the restorer's one-line description (config, device, precision, weights).
    """

    name: str
    num_experts: int
    tasks: tuple[str, ...]
    task_routes: dict[str, tuple[int, ...]]
    device: str
    tile: int
    untrained: bool = False
    description: str = ""


def image_fingerprint(image: Any) -> str:
    """A cheap identity for an image's content: shape, dtype and a strided sample of at most ~64k values.

    Good enough to reuse a plan when the same layer is analysed twice; an edit that misses every sampled
    pixel is not noticed, which costs only a stale degradation map, never a wrong restoration.
    """
    if is_dask(image):
        return f"dask:{image.name}"  # dask names are tokens of the content's graph: no compute needed
    arr = np.asarray(image)
    step = max(1, int(np.ceil((arr.size / 65536) ** (1 / max(arr.ndim, 1)))))
    sample = np.ascontiguousarray(arr[(slice(None, None, step),) * arr.ndim])
    digest = hashlib.blake2b(sample.tobytes(), digest_size=16)
    digest.update(f"{arr.shape}{arr.dtype}".encode())
    return digest.hexdigest()


class SharedState:
    """The plugin's process-wide model, plan cache and last plan.

    Signals (emitted on the main thread only):
        model_changed(ModelInfo): a (different) model was loaded.
        plan_changed(str, Plan): a widget computed a plan for the named layer.
        spec_changed(ModelSpec): the model the widgets should use changed (loaded on next use).
    """

    model_changed = Signal(object)
    plan_changed = Signal(str, object)
    spec_changed = Signal(object)

    def __init__(self, max_plans: int = 8) -> None:
        self._lock = threading.RLock()
        self._spec = ModelSpec()
        self._restorer: Restorer | None = None
        self._restorer_spec: ModelSpec | None = None
        self._info: ModelInfo | None = None
        self._plans: OrderedDict[tuple, Plan] = OrderedDict()
        self._max_plans = max_plans
        self.last_plan: Plan | None = None
        self.last_plan_layer: str | None = None
        self.adapted: dict[str, str] = {}
        """Weights files adapted while this process runs -> the layer each was adapted to."""

    # -- the model -------------------------------------------------------------------------------------

    @property
    def spec(self) -> ModelSpec:
        """The model the widgets use next."""
        return self._spec

    def set_spec(self, spec: ModelSpec) -> None:
        """Choose the model for the next job (main thread). Loading happens lazily, in a worker."""
        if spec != self._spec:
            self._spec = spec
            self.spec_changed.emit(spec)

    def use_adapted(self, weights: str, layer_name: str) -> None:
        """Make weights adapted to a layer the model the widgets use (main thread)."""
        self.adapted[weights] = layer_name
        self.set_spec(replace(self._spec, weights=weights, config=None))

    @property
    def info(self) -> ModelInfo | None:
        """The loaded model's description, or ``None`` before the first job."""
        return self._info

    def is_loaded(self, spec: ModelSpec | None = None) -> bool:
        """Whether the model for ``spec`` (default: the current spec) is already in memory."""
        return self._restorer is not None and self._restorer_spec == (spec or self._spec)

    def restorer(self, spec: ModelSpec | None = None) -> Restorer:
        """The Restorer for ``spec`` (default: the current spec), loading it on first use.

        Call from a worker thread: the first call imports torch and builds the network.

        Raises:
            slerir_core.errors.WeightsError: the weights file is missing or unreadable.
            slerir_core.errors.ConfigError: an unknown config name.
        """
        spec = spec or self._spec
        with self._lock:
            if self._restorer is None or self._restorer_spec != spec:
                from slerir_plugin._compat import preload_triton

                preload_triton()  # before torch pulls in triton: Mesa's LLVM in the viewer would crash it
                from slerir_core.restore import Restorer

                if spec.weights is None and spec.config is not None:
                    from slerir_core.config import load_config

                    restorer = Restorer.from_pretrained(config=load_config(spec.config), device=spec.device)
                else:
                    restorer = Restorer.from_pretrained(path=spec.weights, device=spec.device)
                self._restorer, self._restorer_spec = restorer, spec
                self._info = _describe(restorer, spec)
                self._plans.clear()
            return self._restorer

    def announce_model(self) -> None:
        """Tell the widgets about the loaded model (main thread, after a worker loaded it)."""
        if self._info is not None:
            self.model_changed.emit(self._info)

    # -- plans -----------------------------------------------------------------------------------------

    def cached_plan(
        self, image: Any, axes: str | None, spec: ModelSpec | None = None, scaling: str = "percentile"
    ) -> Plan:
        """The plan of ``image``, computed once per model, image content and value scaling (worker thread)."""
        spec = spec or self._spec
        restorer = self.restorer(spec)
        key = (spec, image_fingerprint(image), axes, scaling)
        with self._lock:
            if key in self._plans:
                self._plans.move_to_end(key)
                return self._plans[key]
        plan = restorer.plan(image, axes=axes, channels=channels_option(axes), scaling=scaling)
        with self._lock:
            self._plans[key] = plan
            while len(self._plans) > self._max_plans:
                self._plans.popitem(last=False)
        return plan

    def announce_plan(self, layer_name: str, plan: Plan) -> None:
        """Record and broadcast the latest plan (main thread)."""
        self.last_plan, self.last_plan_layer = plan, layer_name
        self.plan_changed.emit(layer_name, plan)

    def reset(self) -> None:
        """Forget the model, the plans and the spec (tests; frees the model's memory)."""
        with self._lock:
            self._spec = ModelSpec()
            self._restorer = self._restorer_spec = self._info = None
            self._plans.clear()
            self.last_plan = self.last_plan_layer = None
            self.adapted.clear()


def _describe(restorer: Restorer, spec: ModelSpec) -> ModelInfo:
    config = restorer.config
    return ModelInfo(
        name=spec.describe(),
        num_experts=int(config.num_experts),
        tasks=tuple(config.tasks),
        task_routes={name: tuple(path) for name, path in restorer.task_routes().items()},
        device=str(restorer.device),
        tile=int(config.tile),
        untrained=restorer.untrained,
        description=restorer.describe(),
    )


STATE = SharedState()
"""The plugin's single shared state."""


def use_config(name: str | None, device: str | None = "cpu") -> None:
    """Make the widgets build an untrained model of a named config (``"tiny"``) instead of loading weights.

    For tests and development; ``None`` goes back to the shipped weights.
    """
    STATE.set_spec(ModelSpec(config=name, device=device if name else None))
