"""The Restorer: route once per image, then restore tile by tile, for any size, dtype and stack.

How an image is restored (DESIGN.md, "The data path"):

1. ``Restorer.plan`` analyses a whole 2-D image once: routes for the eight stages, routing probabilities,
   the degradation map of the 4x4 crops, the task label when the model has task prototypes, and the
   GLGF prior. Images larger than ``tiling.PLAN_SIDE`` are first block-averaged down to it, strip by strip
   (the extractors see 32-224 px views anyway), so planning a 4k image never holds a float copy of it.
2. ``Restorer.restore`` runs the backbone on overlapping tiles with those routes, each tile reading the
   matching crop of the prior (``box`` in whole-image fractions). Tiles are blended with separable
   raised-cosine ramps over their overlaps (``slerir_core.tiling``), normalised per axis by the ramps' sum,
   so the weights of any pixel add up to one and no seam shows. Rows of tiles are accumulated in a float32
   band a couple of tiles high and written out (rounded, clipped, cast) as soon as no later tile touches
   them: beyond the input and output arrays, memory does not grow with the image.
3. Stacks (any leading axes: T, Z, ...) are restored one 2-D image at a time; channels that are not RGB
   are restored one by one as grey (``slerir_core.io.Layout``). ``plan_per="slice"`` plans every 2-D
   image; ``plan_per="stack"`` plans once per channel group on the *middle slice* and shares that plan.
   The middle slice, not a max or mean projection, because a projection averages the noise away (or, for
   the max, biases it) and would misinform the router about the very degradation it must detect.
4. dask arrays are restored lazily, chunk by chunk, with ``dask.array.map_overlap``: each chunk runs the
   tiles of the whole image's grid that touch it, with the same blending weights, reading them from a
   margin as deep as those tiles reach past the chunk, so the result equals the in-memory one (planned
   with ``plan_per="stack"``) value for value. A tile that crosses a chunk border is computed by every
   chunk it touches: chunks several tiles wide keep that extra work small (chunks are merged, along Y and
   X, to at least one tile). Stacks larger than memory work, locally or on a ``dask.distributed`` cluster
   (the restorer, model included, travels with the task graph)::

       restored = restorer.restore(dask_stack, axes="ZYX")    # lazy, same shape and dtype
       restored.to_zarr("restored.zarr")                        # or .compute() / tifffile.imwrite(...)

   Computing the value range (one pass) and the plan (the middle slice) happen when ``restore`` is called.
"""

from __future__ import annotations

import contextlib
import math
import operator
import warnings
from collections.abc import Callable, Generator, Iterator, Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch

from slerir_core.checkpoint import load_model
from slerir_core.config import STAGES, ModelConfig, load_config
from slerir_core.device import native_bf16, resolve_device
from slerir_core.errors import ImageError
from slerir_core.heap import reuse_freed_memory
from slerir_core.io.layout import MIN_SIDE, Layout, is_dask, make_layout, to_array
from slerir_core.io.scaling import Scaling
from slerir_core.model import SLERIR
from slerir_core.model.slerir import routes_tensor
from slerir_core.tiling import (
    TileGrid,
    chunk_reach,
    meets,
    merge_chunks,
    middle_index,
    planning_view,
    routing_mosaic,
)

DEFAULT_WEIGHTS = Path(__file__).parent / "weights" / "slerir-compact.safetensors"
DEFAULT_CONFIG = "compact"
PLAN_PER = ("slice", "stack")
MIN_TILE = 64
"""The smallest tile (besides 0, no tiling). Every tile is a whole pass of the network, hundreds of small
operations with a fixed cost each: on one CPU thread a 16-px tile took 33 ms against 90 ms for a 64-px one
that brings 16 times as many new pixels, so a 200×300 image took 14 s in tile 16 (425 tiles) against 2 s in
tile 64 (24 tiles), and smaller tiles save no memory worth having. With two threads on a shared machine each
operation also waits for both threads, so the time swings from call to call: tile 16 took 26 to 153 s and
tile 17 48 to 104 s on that image, the erratic speed issue 12 reported as tile 16 against tile 17."""

Progress = Callable[[int, int], None]
OnPlan = Callable[[str, "Plan"], None]
Box = tuple[float, float, float, float]


def check_routes(routes: Sequence[int], num_experts: int) -> list[int]:
    """Validate manual routes for one image: one expert index in ``[0, num_experts)`` per routed stage.

    Raises:
        TypeError: not a sequence, or an entry that is not an integer (``1.5``, ``True``).
        ValueError: wrong length or an index out of range.
    """
    if isinstance(routes, (str, bytes)) or not hasattr(routes, "__len__"):
        raise TypeError(f"routes must be a sequence of {len(STAGES)} integers, not {type(routes).__name__}")
    routes = [_integer("each route", r) for r in routes]
    if len(routes) != len(STAGES):
        raise ValueError(f"routes need {len(STAGES)} expert indices ({', '.join(STAGES)}), got {len(routes)}: {routes}")
    return routes_tensor(routes, 1, num_experts)[0].tolist()


def _integer(what: str, value: Any) -> int:
    """``value`` as an int; floats (even 2.0), bools and strings are refused rather than truncated or cast."""
    if isinstance(value, (bool, np.bool_)) or (isinstance(value, torch.Tensor) and value.dtype == torch.bool):
        raise TypeError(f"{what} must be an integer, not a bool ({value!r})")
    try:
        return operator.index(value)
    except TypeError:
        raise TypeError(f"{what} must be an integer, not {type(value).__name__} {value!r}") from None


# -- the plan -----------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Plan:
    """What the analysis of one image decided, reused for each of its tiles.

    Attributes:
        routes: expert index for each of the eight routed stages.
        probs: (8, C) routing probabilities.
        degradation_map: (C, g, g) soft assignment of each of the g x g crops to the experts' centres.
        prior: (1, P, h, w) GLGF prior over the whole image; ``None`` when the model has no GLGF.
        label: most likely training task (``config.tasks``) when the model has task prototypes, else None.
        confidence: that task's probability.
        task_probs: every task's probability.
        task_map: (T, g, g) task probabilities of each crop, when the model has task prototypes.
        source: what the plan was computed on (``"image"``, ``"Z=12"``, ...).
        manual_routes: the routes were set by hand, not by the router.
    """

    routes: list[int]
    probs: np.ndarray
    degradation_map: np.ndarray
    prior: torch.Tensor | None = None
    label: str | None = None
    confidence: float | None = None
    task_probs: dict[str, float] = field(default_factory=dict)
    task_map: np.ndarray | None = None
    source: str = "image"
    manual_routes: bool = False

    @property
    def num_experts(self) -> int:
        """C, the experts per stage of the model that made the plan."""
        return int(self.probs.shape[-1])

    @property
    def expert_map(self) -> np.ndarray:
        """(g, g) the most likely expert of each crop."""
        return self.degradation_map.argmax(axis=0)

    def with_routes(self, routes: Sequence[int]) -> Plan:
        """The same plan with manual routes (validated); prior and maps are kept.

        Raises:
            ValueError: wrong length or an expert index out of range.
        """
        return replace(self, routes=check_routes(routes, self.num_experts), manual_routes=True)

    def summary(self) -> dict[str, Any]:
        """JSON-ready description (everything but the prior)."""
        return {
            "source": self.source,
            "routes": list(self.routes),
            "manual_routes": self.manual_routes,
            "stages": list(STAGES),
            "probs": np.round(self.probs, 4).tolist(),
            "label": self.label,
            "confidence": None if self.confidence is None else round(self.confidence, 4),
            "task_probs": {k: round(v, 4) for k, v in self.task_probs.items()},
            "degradation_map": np.round(self.degradation_map, 4).tolist(),
            "expert_map": self.expert_map.tolist(),
            "task_map": None if self.task_map is None else np.round(self.task_map, 4).tolist(),
        }


@dataclass(frozen=True)
class RestoreOptions:
    """How ``Restorer.restore`` runs: one object for a whole batch, validated by ``Restorer.resolve_options``.

    Attributes:
        plan: use this plan for every 2-D image instead of planning.
        routes: 8 integer expert indices overriding the plan's routes.
        tile: tile size in pixels, at least ``MIN_TILE``; ``None`` uses the config's, ``0`` restores each
            image in one piece.
        overlap: overlap of neighbouring tiles; ``None`` uses the config's (at most a quarter tile).
        axes: one letter per dimension, e.g. ``"TZYX"``, ``"ZYXC"``, ``"CYX"``; inferred for up to 4-D
            (``slerir_core.io.infer_axes``: a (3, H, W) array is three slices, with a warning).
        plan_per: ``"slice"`` plans every 2-D image, ``"stack"`` plans each channel group once, on the
            middle slice, and shares it. A dask array is always planned as ``"stack"`` (its chunks are
            restored independently, so they must share their plans).
        channels: ``"auto"`` (uint8 with 3 or 4 channels on the last axis is RGB or RGBA, every other
            multichannel image is restored one channel at a time), ``"rgb"`` (3 channels RGB, 4 RGBA)
            or ``"grey"`` (one channel at a time). Pass ``"rgb"`` for a float or 16-bit colour picture.
        progress: called with ``(done, total)`` tiles.
        on_plan: called with ``(what it applies to, plan)`` for each plan used, e.g. for reports.
    """

    plan: Plan | None = None
    routes: Sequence[int] | None = None
    tile: int | None = None
    overlap: int | None = None
    axes: str | None = None
    plan_per: str = "slice"
    channels: str = "auto"
    progress: Progress | None = None
    on_plan: OnPlan | None = None

    def report(self, done: int, total: int) -> tuple[int, int]:
        """Tell ``progress`` (if any) how far the job is; returns ``(done, total)`` for a generator to yield."""
        if self.progress is not None:
            self.progress(done, total)
        return done, total


# -- the restorer -------------------------------------------------------------------------------------


class Restorer:
    """Restores images of any size, dtype and stack shape with a SLER-IR model.

    Args:
        model: the network (put in eval mode with hard routing).
        device: ``None``/``"auto"`` picks CUDA when present, else the CPU.
        autocast: bf16 autocast; ``None`` turns it on on CUDA and on CPUs with native bf16 arithmetic (AVX-512
            BF16 or AMX), where it restores about 1.7x as fast as fp32 and changes results by at most about
            0.01 of the range (measured on the shipped weights: PSNR within 0.1 dB).
        weights: where the weights came from, for reports.
        untrained: the model is freshly initialised (its output is not a restoration).

    Example::

        restorer = Restorer.from_pretrained()                  # shipped weights
        plan = restorer.plan(image)                            # routes, maps, prior
        restored = restorer.restore(image, plan=plan, tile=256)
    """

    def __init__(
        self,
        model: SLERIR,
        device: str | torch.device | None = None,
        *,
        autocast: bool | None = None,
        weights: str | None = None,
        untrained: bool = False,
    ) -> None:
        self.device = resolve_device(device)
        self.model = model.to(self.device).eval()
        self.model.routing = "hard"
        self.autocast = native_bf16(self.device) if autocast is None else autocast
        self.weights = weights
        self.untrained = untrained

    @classmethod
    def from_pretrained(
        cls,
        path: str | Path | None = None,
        device: str | torch.device | None = None,
        config: str | Path | ModelConfig | None = None,
        autocast: bool | None = None,
    ) -> Restorer:
        """A restorer from a weights file, the shipped weights, or an untrained model of a config.

        Args:
            path: a SLER-IR weights file; ``None`` uses the shipped ``DEFAULT_WEIGHTS`` when present.
            device, autocast: as for ``Restorer``.
            config: with no ``path``, build a freshly initialised (untrained) model of this config (a name
                such as ``"tiny"``, a YAML path or a ``ModelConfig``) instead of loading the shipped weights.

        Raises:
            slerir_core.errors.WeightsError: a missing, corrupt or mismatched weights file.
            ValueError: both a weights file and a config (the file holds its own config).
        """
        if path is not None and config is not None:
            raise ValueError(
                "give a weights file or a config for an untrained model, not both (a weights file holds its own config)"
            )
        device = resolve_device(device)
        if path is None and config is None and DEFAULT_WEIGHTS.is_file():
            path = DEFAULT_WEIGHTS
        if path is not None:
            return cls(load_model(path, device), device, autocast=autocast, weights=str(path))
        config_given = config is not None
        if not isinstance(config, ModelConfig):
            config = load_config(config or DEFAULT_CONFIG)
        why = "a config was given without weights" if config_given else f"no weights file at {DEFAULT_WEIGHTS}"
        warnings.warn(
            f"SLER-IR: using a freshly initialised, UNTRAINED {config.name!r} model ({why}). Its output is the "
            "input plus a random residual (colour casts, noise), not a restoration: pass a trained weights file.",
            UserWarning,
            stacklevel=2,
        )
        return cls(SLERIR(config), device, autocast=autocast, untrained=True)

    @property
    def config(self) -> ModelConfig:
        """The model's configuration."""
        return self.model.config

    def describe(self) -> str:
        """One line saying which model runs where, and whether it is trained."""
        source = "UNTRAINED (freshly initialised)" if self.untrained else (self.weights or "model object")
        precision = "bf16 autocast" if self.autocast else "fp32"
        return f"SLER-IR {self.config.name!r} on {self.device} ({precision}), weights: {source}"

    def task_routes(self) -> dict[str, list[int]]:
        """The expert path of each training task: the router's choice for the task's prototype vectors.

        Empty when the model has no task prototypes (no ``config.tasks``, or untrained all-zero ones).
        """
        protos = self.model.task_prototypes
        if not self.config.tasks or not bool(protos.any()):
            return {}
        with torch.inference_mode():
            probs = self.model.router.probabilities(torch.nn.functional.normalize(protos.float(), dim=-1))
        return {name: path for name, path in zip(self.config.tasks, probs.argmax(dim=-1).tolist(), strict=True)}

    # -- planning -------------------------------------------------------------------------------------

    def plan(self, image: Any, axes: str | None = None, channels: str = "auto") -> Plan:
        """Analyse an image once: routes, routing probabilities, degradation label and maps, prior.

        A 2-D image (grey, RGB, RGBA) is planned whole. A stack is planned on its middle slice and data
        whose channels are restored one by one on the middle channel (what ``plan_per="stack"`` shares);
        pass a single slice or channel to plan another.

        Args:
            image: numpy (or dask) array, any dtype ``restore`` takes.
            axes, channels: as for ``restore``.
        """
        layout, canon, scaling = self._prepare(image, axes, channels)
        index, group = middle_index(layout.stack_shape), len(layout.groups) // 2
        return self.plan_plane(canon[index], scaling, layout.groups[group], layout.describe(index, group))

    @torch.inference_mode()
    def plan_plane(self, plane: Any, scaling: Scaling, group: tuple[int, int], source: str) -> Plan:
        """Plan one 2-D image ``plane`` (canonical ``(Y, X, C)``, numpy or dask) from channels ``group``."""
        x = planning_view(plane, scaling, group)
        routing = None
        if x.shape[:2] != plane.shape[:2]:
            routing = routing_mosaic(plane, scaling, group, self.model.degradation_extractor.image_size)
        with self._autocast():
            info = self.model.analyse(self._tensor(x), routing_view=None if routing is None else self._tensor(routing))
        return self._plan_from(info, source)

    def _tensor(self, image: np.ndarray) -> torch.Tensor:
        """(H, W, 1 or 3) float32 -> (1, 3, H, W) on the device, grey repeated over the three channels."""
        return (
            torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))[None].to(self.device).expand(-1, 3, -1, -1)
        )

    def _plan_from(self, info: dict[str, torch.Tensor], source: str) -> Plan:
        """Turn ``SLERIR.analyse`` output for one image into a Plan."""

        def numpy(key: str) -> np.ndarray:
            return info[key][0].float().cpu().numpy()

        label, confidence, task_probs, task_map = None, None, {}, None
        tasks = self.config.tasks
        if "task_probs" in info and tasks and bool(self.model.task_prototypes.any()):
            probs = numpy("task_probs")
            task_probs = {name: float(p) for name, p in zip(tasks, probs, strict=True)}
            label, confidence = tasks[int(probs.argmax())], float(probs.max())
            task_map = numpy("task_map") if "task_map" in info else None
        prior = info.get("prior")
        return Plan(
            routes=[int(r) for r in info["routes"][0].tolist()],
            probs=numpy("probs"),
            degradation_map=numpy("degradation_map"),
            prior=None if prior is None else prior.float(),
            label=label,
            confidence=confidence,
            task_probs=task_probs,
            task_map=task_map,
            source=source,
        )

    # -- restoration ----------------------------------------------------------------------------------

    def restore(self, image: Any, options: RestoreOptions | None = None, **fields: Any) -> Any:
        """Restore an image or a stack; returns an array of the same shape and dtype.

        Args:
            image: numpy array, nested list or CPU torch tensor (2-D grey, (H, W, 3) RGB, (H, W, 4) RGBA with
                alpha untouched, multi-channel, stacks with any leading axes), uint8, uint16 (or other
                integers) or float; a dask array gives a lazy dask array back (restored chunk by chunk with
                one shared plan, value for value as ``plan_per="stack"`` restores it in memory).
            options: how to restore (``RestoreOptions``); reuse one for a batch of images.
            **fields: ``RestoreOptions`` fields that replace those of ``options``, e.g. ``tile=256``,
                ``axes="ZYX"``, ``routes=[...]``, ``plan=plan``.

        Raises:
            TypeError: routes, tile or overlap that are not integers; an unknown option.
            ValueError: bad routes, tile, axes, channels or plan_per; empty, ragged or non-finite images,
                tensors that require grad, and a network whose output is not finite (``ImageError``).
        """
        steps = self.restore_steps(image, options, **fields)
        while True:
            try:
                next(steps)
            except StopIteration as stop:
                return stop.value

    def restore_steps(
        self, image: Any, options: RestoreOptions | None = None, **fields: Any
    ) -> Generator[tuple[int, int], None, Any]:
        """``restore`` as a generator: yields ``(done, total)`` tiles and returns the restored array.

        Stop iterating to cancel between tiles (e.g. in a napari ``thread_worker``). The first yield is
        ``(0, total)``, before any work. A dask input yields nothing and returns the lazy result.
        """
        opts = self.resolve_options(options, **fields)
        if is_dask(image):
            return self._restore_lazy(image, opts)
        with reuse_freed_memory():
            return (yield from self._restore_array(image, opts))

    def _restore_array(self, image: Any, opts: RestoreOptions) -> Generator[tuple[int, int], None, Any]:
        array = to_array(image)
        layout, canon, scaling = self._prepare(array, opts.axes, opts.channels)
        out = np.empty(array.shape, array.dtype)
        out_canon = layout.canonical(out)
        grid = TileGrid.build(layout.height, layout.width, opts.tile, opts.overlap)
        total = math.prod(layout.stack_shape) * len(layout.groups) * len(grid)
        done = 0
        yield opts.report(done, total)
        plans = _PlanChooser(self, layout, canon, scaling, opts)
        whole = (0, 0, layout.height, layout.width)
        for index in np.ndindex(layout.stack_shape):
            for g, group in enumerate(layout.groups):
                unit_plan = plans.get(index, g)
                for _ in self.restore_region_steps(
                    canon[index], (0, 0), out_canon[index], whole, scaling, group, unit_plan, grid
                ):
                    done += 1
                    yield opts.report(done, total)
            for c in layout.passthrough:
                out_canon[index][..., c] = canon[index][..., c]
        return out

    def resolve_options(self, options: RestoreOptions | None = None, **fields: Any) -> RestoreOptions:
        """Validate options for this model, filling in the config's tile and overlap.

        Args:
            options, fields: as for ``restore``.

        Returns:
            The options ``restore`` will use: routes a list (or None), tile and overlap integers.

        Raises:
            TypeError: routes, tile or overlap that are not integers; an unknown option.
            ValueError: naming the bad option.
        """
        opts = replace(options or RestoreOptions(), **fields)
        if opts.plan_per not in PLAN_PER:
            raise ValueError(f"plan_per must be one of {PLAN_PER}, not {opts.plan_per!r}")
        routes = None if opts.routes is None else check_routes(opts.routes, self.config.num_experts)
        tile = self.config.tile if opts.tile is None else _integer("tile", opts.tile)
        if tile != 0 and tile < MIN_TILE:
            raise ValueError(
                f"tile must be 0 (no tiling) or at least {MIN_TILE} pixels, got {tile}: smaller tiles save no "
                "memory worth having and multiply the time, since every tile is a whole pass of the network"
            )
        if tile == 0:
            return replace(opts, routes=routes, tile=0, overlap=0)  # one piece: nothing overlaps
        overlap = min(self.config.overlap, tile // 4) if opts.overlap is None else _integer("overlap", opts.overlap)
        if not 0 <= overlap < tile / 2:
            raise ValueError(f"overlap must be in [0, tile / 2) = [0, {tile / 2:g}), got {overlap}")
        return replace(opts, routes=routes, tile=tile, overlap=overlap)

    def _prepare(self, image: Any, axes: str | None, channels: str) -> tuple[Layout, Any, Scaling]:
        """Layout, canonical ``(stack..., Y, X, C)`` view and value scaling of an input (validated)."""
        if not is_dask(image):
            image = to_array(image)
        layout = make_layout(image.shape, axes, channels, image.dtype)
        if min(layout.height, layout.width) < MIN_SIDE:
            raise ImageError(
                f"the image is {layout.height}×{layout.width} pixels; at least {MIN_SIDE}×{MIN_SIDE} is needed "
                "(the network works at 1/8 of the resolution)"
            )
        canon = layout.canonical(image)
        return layout, canon, Scaling.fit(canon, layout)

    def restore_region_steps(
        self,
        source: np.ndarray,
        origin: tuple[int, int],
        out: np.ndarray,
        region: tuple[int, int, int, int],
        scaling: Scaling,
        group: tuple[int, int],
        plan: Plan,
        grid: TileGrid,
    ) -> Iterator[None]:
        """Restore channels ``group`` of one region of a 2-D image into ``out``, yielding after each tile.

        Every tile of ``grid`` (the whole image's) that touches the region is run and its share, weighted
        as in the whole image, added; so a region restored on its own (a dask chunk) gets the very values
        the whole image would.

        Args:
            source: canonical ``(Y, X, C)`` input pixels, holding every tile that touches the region.
            origin: (top, left) of ``source`` in the image.
            out: canonical ``(Y, X, C)`` output of the region.
            region: (top, left, bottom, right) of ``out`` in the image.
        """
        top, left, bottom, right = region
        start, stop = group
        routes = torch.tensor([plan.routes], dtype=torch.long, device=self.device)
        prior = None if plan.prior is None else plan.prior.to(self.device)
        rows = [(span, w) for span, w in zip(grid.rows, grid.row_weights, strict=True) if meets(span, top, bottom)]
        cols = [(span, w) for span, w in zip(grid.cols, grid.col_weights, strict=True) if meets(span, left, right)]
        band = np.zeros((0, right - left, stop - start), np.float32)  # rows [band_top, band_top + len(band))
        band_top = top
        for i, ((y0, y1), wy) in enumerate(rows):
            a0, a1 = max(y0, top), min(y1, bottom)
            grow = a1 - band_top - band.shape[0]
            if grow > 0:
                band = np.concatenate([band, np.zeros((grow, right - left, stop - start), np.float32)])
            for (x0, x1), wx in cols:
                b0, b1 = max(x0, left), min(x1, right)
                box = (y0 / grid.height, x0 / grid.width, y1 / grid.height, x1 / grid.width)
                pixels = source[y0 - origin[0] : y1 - origin[0], x0 - origin[1] : x1 - origin[1]]
                restored = self._run_tile(scaling.to_unit(pixels, group), routes, prior, box)
                restored = restored[a0 - y0 : a1 - y0, b0 - x0 : b1 - x0]
                restored *= wy[a0 - y0 : a1 - y0, None, None]
                restored *= wx[None, b0 - x0 : b1 - x0, None]
                band[a0 - band_top : a1 - band_top, b0 - left : b1 - left] += restored
                yield
            # Rows above the next tile row are final: no later tile touches them.
            next_top = rows[i + 1][0][0] if i + 1 < len(rows) else bottom
            final = max(next_top, band_top) - band_top
            out[band_top - top : band_top - top + final, :, start:stop] = scaling.from_unit(band[:final], group)
            band, band_top = band[final:], band_top + final

    @torch.inference_mode()
    def _run_tile(self, x: np.ndarray, routes: torch.Tensor, prior: torch.Tensor | None, box: Box) -> np.ndarray:
        """Backbone on one tile: (h, w, k) float32 in [0, 1], k = 1 (grey, fed as 3 equal channels) or 3."""
        tensor = torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)))[None].to(self.device)
        with self._autocast():
            y = self.model.restore_features(tensor.expand(-1, 3, -1, -1), routes, prior, box)
        y = y[0].float().permute(1, 2, 0).cpu().numpy()
        if x.shape[2] == 3:
            return y
        with np.errstate(over="ignore", invalid="ignore"):  # a diverged network: Scaling.from_unit refuses it
            return y.mean(axis=2, keepdims=True)

    def _autocast(self) -> contextlib.AbstractContextManager:
        if not self.autocast:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)

    # -- dask -----------------------------------------------------------------------------------------

    def _restore_lazy(self, array: Any, opts: RestoreOptions) -> Any:
        """Lazy restoration of a dask array, chunk by chunk with overlap, one shared plan per channel group."""
        layout, canon, scaling = self._prepare(array, opts.axes, opts.channels)
        chooser = _PlanChooser(self, layout, canon, scaling, replace(opts, plan_per="stack"))
        plans = [chooser.get(middle_index(layout.stack_shape), g) for g in range(len(layout.groups))]
        tile = opts.tile
        grid = TileGrid.build(layout.height, layout.width, tile, opts.overlap)
        y_axis, x_axis = canon.ndim - 3, canon.ndim - 2
        # A chunk holds every channel of its pixels, and is at least a tile long so that the margin the
        # tiles touching it need (under a tile) fits in its neighbours, as map_overlap requires.
        canon = canon.rechunk(
            {
                canon.ndim - 1: -1,
                y_axis: merge_chunks(canon.chunks[y_axis], tile or layout.height),
                x_axis: merge_chunks(canon.chunks[x_axis], tile or layout.width),
            }
        )
        depth = {
            y_axis: chunk_reach(canon.chunks[y_axis], grid.rows),
            x_axis: chunk_reach(canon.chunks[x_axis], grid.cols),
        }
        block = partial(_restore_block, self, plans, scaling, layout, grid, canon.chunks, depth)
        restored = canon.map_overlap(
            block, depth=depth, boundary="none", dtype=canon.dtype, meta=np.empty((0,) * canon.ndim, canon.dtype)
        )
        return layout.original(restored)


class _PlanChooser:
    """Hands out the plan of each 2-D image: the given one, one per channel group, or one per image."""

    def __init__(self, restorer: Restorer, layout: Layout, canon: Any, scaling: Scaling, opts: RestoreOptions) -> None:
        self.restorer, self.layout, self.canon, self.scaling = restorer, layout, canon, scaling
        plan, routes = opts.plan, opts.routes
        if plan is not None and routes is None:
            # A plan made by another model (more experts) would index past this model's experts.
            check_routes(plan.routes, restorer.config.num_experts)
        self.given = plan if routes is None or plan is None else plan.with_routes(routes)
        self.opts = opts
        self.cache: dict[Any, Plan] = {}

    def get(self, index: tuple[int, ...], group: int) -> Plan:
        if self.given is not None:
            key: Any = "given"
        elif self.opts.plan_per == "stack":
            key, index = group, middle_index(self.layout.stack_shape)
        else:
            key = (index, group)
            self.cache.clear()  # one image at a time: do not keep every slice's prior alive
        if key in self.cache:
            return self.cache[key]
        plan = self.given
        if plan is None:
            plane = self.canon[index]
            plan = self.restorer.plan_plane(
                plane, self.scaling, self.layout.groups[group], self.layout.describe(index, group)
            )
            plan = plan if self.opts.routes is None else plan.with_routes(self.opts.routes)
        self.cache[key] = plan
        if self.opts.on_plan is not None:
            self.opts.on_plan(self._applies_to(key, index, group), plan)
        return plan

    def _applies_to(self, key: Any, index: tuple[int, ...], group: int) -> str:
        if isinstance(key, tuple):
            return self.layout.describe(index, group)
        if key == "given" or len(self.layout.groups) == 1:
            return "all"
        return f"C={self.layout.groups[group][0]}"


def _restore_block(
    restorer: Restorer,
    plans: list[Plan],
    scaling: Scaling,
    layout: Layout,
    grid: TileGrid,
    chunks: tuple[tuple[int, ...], ...],
    depth: dict[int, int],
    block: np.ndarray,
    block_info: dict | None = None,
) -> np.ndarray:
    """Restore one dask chunk (canonical axes, with ``map_overlap``'s margin) in place of its function.

    Only the chunk itself is computed; the margin of the returned block, which ``map_overlap`` trims, is zero.
    """
    location = block_info[0]["chunk-location"]
    y_axis, x_axis = block.ndim - 3, block.ndim - 2
    top = sum(chunks[y_axis][: location[y_axis]])
    left = sum(chunks[x_axis][: location[x_axis]])
    region = (top, left, top + chunks[y_axis][location[y_axis]], left + chunks[x_axis][location[x_axis]])
    # With boundary="none" the first chunk along an axis has no margin before it.
    origin = (top - (depth[y_axis] if location[y_axis] else 0), left - (depth[x_axis] if location[x_axis] else 0))
    out = np.zeros(block.shape, block.dtype)
    core = (slice(top - origin[0], region[2] - origin[0]), slice(left - origin[1], region[3] - origin[1]))
    for index in np.ndindex(block.shape[:-3]):
        for plan, group in zip(plans, layout.groups, strict=True):
            steps = restorer.restore_region_steps(
                block[index], origin, out[index][core], region, scaling, group, plan, grid
            )
            for _ in steps:
                pass
        for c in layout.passthrough:
            out[index][..., c] = block[index][..., c]
    return out
