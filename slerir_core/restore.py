"""The Restorer: route once per image, then restore it in batches of tiles, for any size, dtype and stack.

``Restorer.restore`` plans each 2-D image (``slerir_core.plan``), then runs the backbone on overlapping tiles
with the plan's routes, each tile reading the matching crop of the prior (its box in whole-image fractions).
A network pass runs as many tiles as ``slerir_core.batching`` allows (on a GPU, as many as free memory
holds). The outputs are blended with the weights of ``slerir_core.tiling`` on the device into a float32
band a couple of tile rows high, whose rows are copied back and written out (rounded, clipped, cast) as soon
as no later tile touches them: beyond the input and output arrays and the batch, memory does not grow with
the image.

Stacks (any leading axes: T, Z, ...) are restored one 2-D image at a time; channels that are not RGB are
restored one by one as grey (``slerir_core.io.layout.Layout``). dask arrays are restored lazily, chunk by chunk
(``slerir_core.lazy``).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Generator, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from slerir_core.adaptation import AdaptResult, AdaptSettings, adapt_model
from slerir_core.batching import batch_size
from slerir_core.blending import BlendBand, Span
from slerir_core.checkpoint import load_model
from slerir_core.config import ModelConfig, load_config
from slerir_core.device import autocast, free_cuda_cache, resolve_device, uses_bf16
from slerir_core.errors import ImageError
from slerir_core.grey_noise import grey_noise_sigma, spread_grey_noise
from slerir_core.heap import reuse_freed_memory
from slerir_core.io.layout import MIN_SIDE, Layout, is_dask, make_layout, to_array
from slerir_core.io.scaling import Scaling, check_scaling
from slerir_core.lazy import restore_lazy
from slerir_core.model import SLERIR
from slerir_core.plan import (
    Plan,
    PlanChooser,
    as_integer,
    check_routes,
    middle_index,
    planning_view,
    routing_mosaic,
)
from slerir_core.tiling import SmallTileWarning, TileGrid, meets, small_tile_note

DEFAULT_WEIGHTS = Path(__file__).parent / "weights" / "slerir-compact.safetensors"
DEFAULT_CONFIG = "compact"
PLAN_PER = ("slice", "stack")
MIN_TILE = 64
"""The smallest tile (besides 0, no tiling). Every tile is a whole pass of the network, hundreds of small
operations with a fixed cost each: on one CPU thread a 16-px tile took 33 ms against 90 ms for a 64-px one
that brings 16 times as many new pixels, so a 200×300 image took 14 s in tile 16 (425 tiles) against 2 s in
tile 64 (24 tiles), and smaller tiles save no memory worth having."""

ProgressCallback = Callable[[int, int], None]
OnPlan = Callable[[str, Plan], None]
OnScaling = Callable[[str], None]


@dataclass(frozen=True)
class RestoreOptions:
    """How ``Restorer.restore`` runs: one object for a whole batch, validated by ``Restorer.resolve_options``.

    Attributes:
        plan: use this plan for every 2-D image instead of planning.
        routes: 8 integer expert indices overriding the plan's routes.
        tile: tile size in pixels, at least ``MIN_TILE``; ``None`` uses the config's, ``0`` restores each
            image in one piece.
        overlap: overlap of neighbouring tiles; ``None`` uses the config's (at most a quarter tile).
        batch: most tiles one network pass runs; ``None``: as many tiles of an image as free memory holds, on
            the CPU at most ``slerir_core.batching.CPU_TILES``. Progress is reported, and a cancel takes
            effect, between passes.
        axes: one letter per dimension, e.g. ``"TZYX"``, ``"ZYXC"``, ``"CYX"``; inferred for up to 4-D
            (``slerir_core.io.layout.infer_axes``: a (3, H, W) array is three slices, with a warning).
        plan_per: ``"slice"`` plans every 2-D image, ``"stack"`` plans each channel group once, on the
            middle slice, and shares it. A dask array is always planned as ``"stack"`` (its chunks are
            restored independently, so they must share their plans).
        channels: ``"auto"`` (uint8 with 3 or 4 channels on the last axis is RGB or RGBA, every other
            multichannel image is restored one channel at a time), ``"rgb"`` (3 channels RGB, 4 RGBA)
            or ``"grey"`` (one channel at a time). Pass ``"rgb"`` for a float or 16-bit colour picture.
        scaling: how data that is neither uint8 nor float in [0, 1] is mapped to the network's [0, 1]:
            ``"percentile"`` (1st to 99.8th percentile of the whole array, robust to hot and dead pixels) or
            ``"minmax"`` (its minimum and maximum); see ``slerir_core.io.scaling`` for the values beyond.
        spread_grey_noise: plan a small noisy grey image (or channel) with its noise spread over the three
            channels, as the network was trained to see noise (``slerir_core.grey_noise``); ``False`` plans it on
            three equal channels, as it is restored.
        progress: called with ``(done, total)`` tiles.
        on_plan: called with ``(what it applies to, plan)`` for each plan used, e.g. for reports.
        on_scaling: called once per image with the scaling used, in words (``Scaling.describe``).
    """

    plan: Plan | None = None
    routes: Sequence[int] | None = None
    tile: int | None = None
    overlap: int | None = None
    batch: int | None = None
    axes: str | None = None
    plan_per: str = "slice"
    channels: str = "auto"
    scaling: str = "percentile"
    spread_grey_noise: bool = True
    progress: ProgressCallback | None = None
    on_plan: OnPlan | None = None
    on_scaling: OnScaling | None = None

    def report(self, done: int, total: int) -> tuple[int, int]:
        """Tell ``progress`` (if any) how far the job is; returns ``(done, total)`` for a generator to yield."""
        if self.progress is not None:
            self.progress(done, total)
        return done, total


def prepare_image(image: Any, axes: str | None, channels: str, scaling: str) -> tuple[Layout, Any, Scaling]:
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
    return layout, canon, Scaling.fit(canon, layout, scaling)


def _tell_scaling(opts: RestoreOptions, scaling: Scaling, layout: Layout) -> None:
    if opts.on_scaling is not None:
        opts.on_scaling(scaling.describe(layout.groups))


class Restorer:
    """Restores images of any size, dtype and stack shape with a SLER-IR model.

    Args:
        model: the network (put in eval mode with hard routing).
        device: ``None``/``"auto"`` picks CUDA when present, else the CPU.
        precision: one of ``slerir_core.device.PRECISIONS``: ``"auto"`` runs bf16 autocast on CUDA and on
            CPUs with native bf16 arithmetic (AVX-512 BF16 or AMX), where it restores about 1.7x as fast as
            fp32 and changes results by at most about 0.01 of the range (measured on the shipped weights:
            PSNR within 0.1 dB); ``"fp32"`` and ``"bf16"`` force one.
        weights: where the weights came from, for reports.
        untrained: the model is freshly initialised (its output is not a restoration).

    Raises:
        ValueError: an unknown or missing device, or a precision outside ``PRECISIONS``.

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
        precision: str = "auto",
        weights: str | None = None,
        untrained: bool = False,
    ) -> None:
        self.device = resolve_device(device)
        self._bf16 = uses_bf16(precision, self.device)
        self.precision = precision
        self.model = model.to(self.device).eval()
        self.model.routing = "hard"
        self.weights = weights
        self.untrained = untrained

    @classmethod
    def from_pretrained(
        cls,
        path: str | Path | None = None,
        device: str | torch.device | None = None,
        config: str | Path | ModelConfig | None = None,
        precision: str = "auto",
    ) -> Restorer:
        """A restorer from a weights file, the shipped weights, or an untrained model of a config.

        Args:
            path: a SLER-IR weights file; ``None`` uses the shipped ``DEFAULT_WEIGHTS`` when present.
            device, precision: as for ``Restorer``.
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
            return cls(load_model(path, device), device, precision=precision, weights=str(path))
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
        return cls(SLERIR(config), device, precision=precision, untrained=True)

    @property
    def config(self) -> ModelConfig:
        """The model's configuration."""
        return self.model.config

    @property
    def bf16(self) -> bool:
        """Whether the network runs under bf16 autocast (``precision`` on this device)."""
        return self._bf16

    def describe(self) -> str:
        """One line saying which model runs where, and whether it is trained."""
        source = "UNTRAINED (freshly initialised)" if self.untrained else (self.weights or "model object")
        precision = "bf16 autocast" if self.bf16 else "fp32"
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

    def adapt(
        self,
        images: Sequence[Any],
        minutes: float = 5.0,
        axes: str | Sequence[str | None] | None = None,
        channels: str = "auto",
        **options: Any,
    ) -> tuple[Restorer, AdaptResult]:
        """Adapt to a user's own noisy images with a self-supervised loss (``slerir_core.adaptation``).

        Args:
            images: arrays as ``restore`` takes them (2-D, stacks, multichannel; uint8, uint16, float).
            minutes: wall-clock budget.
            axes: as for ``restore``, for every image or one per image.
            channels: as for ``restore``.
            **options: further ``AdaptSettings`` fields, and ``progress`` and ``cancelled`` callbacks.

        Returns:
            A new restorer with the adapted model (this one is left as it was), and what was done.
        """
        callbacks = {key: options.pop(key) for key in ("progress", "cancelled") if key in options}
        settings = AdaptSettings(minutes=minutes, **options)
        model, result = adapt_model(self, images, settings, axes, channels, **callbacks)
        source = f"{self.weights or 'model object'}, adapted"
        return Restorer(model, self.device, precision=self.precision, weights=source), result

    # -- planning -------------------------------------------------------------------------------------

    def plan(self, image: Any, axes: str | None = None, channels: str = "auto", scaling: str = "percentile") -> Plan:
        """Analyse an image once: routes, routing probabilities, degradation label and maps, prior.

        A 2-D image (grey, RGB, RGBA) is planned whole. A stack is planned on its middle slice and data
        whose channels are restored one by one on the middle channel (what ``plan_per="stack"`` shares);
        pass a single slice or channel to plan another.

        Args:
            image: numpy (or dask) array, any dtype ``restore`` takes.
            axes, channels, scaling: as for ``restore``.
        """
        layout, canon, values = prepare_image(image, axes, channels, scaling)
        index, group = middle_index(layout.stack_shape), len(layout.groups) // 2
        return self.plan_plane(canon[index], values, layout.groups[group], layout.describe(index, group))

    @torch.inference_mode()
    def plan_plane(
        self, plane: Any, scaling: Scaling, group: tuple[int, int], source: str, spread: bool = True
    ) -> Plan:
        """Plan one 2-D image ``plane`` (canonical ``(Y, X, C)``, numpy or dask) from channels ``group``; a grey
        one with its noise spread over the channels unless ``spread`` is false (``RestoreOptions``)."""
        x = planning_view(plane, scaling, group)
        routing = None
        if x.shape[:2] != plane.shape[:2]:
            routing = routing_mosaic(plane, scaling, group, self.model.degradation_extractor.image_size)
        grey = group[1] - group[0] == 1
        sigma = None
        enlarged = min(x.shape[:2]) < self.config.crop_grid * min(self.model.degradation_extractor.image_size)
        if grey and spread and enlarged:  # the prior's crops are enlarged to the extractor's size: see grey_noise
            # Full-resolution pixels for the estimate: a reduced view's block averages hide most of the noise.
            sigma = grey_noise_sigma(x if routing is None else routing)
        if sigma is not None:
            # A reduced view's block averages of k pixels hold noise σ/√k.
            x = spread_grey_noise(x, sigma * math.sqrt(x.shape[0] * x.shape[1] / (plane.shape[0] * plane.shape[1])))
            routing = None if routing is None else spread_grey_noise(routing, sigma)
        with autocast(self.device, self.bf16):
            view = None if routing is None else self.network_input(routing)
            info = self.model.analyse(self.network_input(x), routing_view=view)
        tasks = self.config.tasks if bool(self.model.task_prototypes.any()) else ()
        return Plan.from_analysis(info, source, tasks, grey=grey, grey_sigma=sigma)

    def network_input(self, image: np.ndarray) -> torch.Tensor:
        """(H, W, 1 or 3) float32 -> (1, 3, H, W) on the device, grey repeated over the three channels."""
        return (
            torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))[None].to(self.device).expand(-1, 3, -1, -1)
        )

    # -- restoration ----------------------------------------------------------------------------------

    def restore(self, image: Any, options: RestoreOptions | None = None, **fields: Any) -> Any:
        """Restore an image or a stack; returns an array of the same shape, dtype and type.

        Float input in [0, 1] gives results in [0, 1]; other data keeps the rule of ``slerir_core.io.scaling``
        (results within the scaling's range, except where the input lay beyond it).

        Args:
            image: numpy array, nested list or CPU torch tensor (2-D grey, (H, W, 3) RGB, (H, W, 4) RGBA with
                alpha untouched, multi-channel, stacks with any leading axes), uint8, uint16 (or other
                integers) or float; a dask array gives a lazy dask array back (restored chunk by chunk with
                one shared plan, as ``plan_per="stack"`` restores it in memory) and a torch tensor a CPU tensor
                of its dtype; anything else gives a numpy array.
            options: how to restore (``RestoreOptions``); reuse one for a batch of images.
            **fields: ``RestoreOptions`` fields that replace those of ``options``, e.g. ``tile=256``,
                ``axes="ZYX"``, ``routes=[...]``, ``plan=plan``.

        Raises:
            TypeError: routes, tile, overlap or batch that are not integers; an unknown option.
            ValueError: bad routes, tile, batch, axes, channels, scaling or plan_per; empty, ragged or non-finite
                images, tensors that require grad, and a network whose output is not finite (``ImageError``).
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

        Stop iterating to cancel between network passes (e.g. in a napari ``thread_worker``). The first yield
        is ``(0, total)``, before any work; each later one follows a pass, which may run several tiles. A dask
        input yields nothing and returns the lazy result.
        """
        opts = self.resolve_options(options, **fields)
        if is_dask(image):
            layout, canon, scaling = prepare_image(image, opts.axes, opts.channels, opts.scaling)
            _tell_scaling(opts, scaling, layout)
            return restore_lazy(self, layout, canon, scaling, opts)
        with reuse_freed_memory():
            restored = yield from self._restore_array(image, opts)
        return torch.from_numpy(restored) if isinstance(image, torch.Tensor) else restored

    def _restore_array(self, image: Any, opts: RestoreOptions) -> Generator[tuple[int, int], None, Any]:
        array = to_array(image)
        layout, canon, scaling = prepare_image(array, opts.axes, opts.channels, opts.scaling)
        _tell_scaling(opts, scaling, layout)
        out = np.empty(array.shape, array.dtype)
        out_canon = layout.canonical(out)
        grid = TileGrid.build(layout.height, layout.width, opts.tile, opts.overlap)
        default = self.resolve_options(replace(opts, tile=None, overlap=None))
        note = small_tile_note(layout.height, layout.width, (opts.tile, opts.overlap), (default.tile, default.overlap))
        if note is not None:
            # restore -> restore_steps -> this generator: the caller of restore is four frames up.
            warnings.warn(note, SmallTileWarning, stacklevel=4)
        total = math.prod(layout.stack_shape) * len(layout.groups) * len(grid)
        done = 0
        yield opts.report(done, total)
        plans = PlanChooser(self, layout, canon, scaling, opts)
        whole = (0, 0, layout.height, layout.width)
        for index in np.ndindex(layout.stack_shape):
            for g, group in enumerate(layout.groups):
                unit_plan = plans.get(index, g)
                for tiles in self.restore_region_steps(
                    canon[index], (0, 0), out_canon[index], whole, scaling, group, unit_plan, grid, opts.batch
                ):
                    done += tiles
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
            TypeError: routes, tile, overlap or batch that are not integers; an unknown option.
            ValueError: naming the bad option.
        """
        opts = replace(options or RestoreOptions(), **fields)
        check_scaling(opts.scaling)
        if opts.plan_per not in PLAN_PER:
            raise ValueError(f"plan_per must be one of {PLAN_PER}, not {opts.plan_per!r}")
        routes = None if opts.routes is None else check_routes(opts.routes, self.config.num_experts)
        batch = None if opts.batch is None else as_integer("batch", opts.batch)
        if batch is not None and batch < 1:
            raise ValueError(f"batch must be at least 1 tile a pass (or None to fit the free memory), got {batch}")
        tile = self.config.tile if opts.tile is None else as_integer("tile", opts.tile)
        if tile != 0 and tile < MIN_TILE:
            raise ValueError(
                f"tile must be 0 (no tiling) or at least {MIN_TILE} pixels, got {tile}: smaller tiles save no "
                "memory worth having and multiply the time, since every tile is a whole pass of the network"
            )
        if tile == 0:
            return replace(opts, routes=routes, batch=batch, tile=0, overlap=0)  # one piece: nothing overlaps
        overlap = min(self.config.overlap, tile // 4) if opts.overlap is None else as_integer("overlap", opts.overlap)
        if not 0 <= overlap < tile / 2:
            raise ValueError(f"overlap must be in [0, tile / 2) = [0, {tile / 2:g}), got {overlap}")
        return replace(opts, routes=routes, batch=batch, tile=tile, overlap=overlap)

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
        batch: int | None = None,
    ) -> Iterator[int]:
        """Restore channels ``group`` of one region of a 2-D image into ``out``, yielding after each network pass
        the number of tiles it ran.

        Every tile of ``grid`` (the whole image's) that touches the region is run and its share, weighted
        as in the whole image, added; so a region restored on its own (a dask chunk) gets the very values
        the whole image would when a pass runs one tile (``batch=1``), and within the rounding of the
        arithmetic otherwise (a batch groups the tiles of a region unlike those of the whole image).

        Args:
            source: canonical ``(Y, X, C)`` input pixels, holding every tile that touches the region.
            origin: (top, left) of ``source`` in the image.
            out: canonical ``(Y, X, C)`` output of the region.
            region: (top, left, bottom, right) of ``out`` in the image.
            batch: most tiles a pass runs (``RestoreOptions.batch``).
        """
        tiles = self._region_tiles(grid, region)
        # The tiles of a grid all have one shape (``tile_spans`` spreads them evenly instead of cutting a
        # smaller last one), so a batch stacks them as they are.
        (row, _), (col, _) = tiles[0]
        size = batch_size(len(tiles), (row[1] - row[0], col[1] - col[0]), self.config, self.device, batch)
        routes = torch.tensor([plan.routes], dtype=torch.long, device=self.device).expand(size, -1)
        prior = None if plan.prior is None else plan.prior.to(self.device)
        boxes = torch.tensor(
            [
                (y0 / grid.height, x0 / grid.width, y1 / grid.height, x1 / grid.width)
                for ((y0, y1), _), ((x0, x1), _) in tiles
            ],
            dtype=torch.float64,
            device=self.device,
        )
        band = BlendBand(region, group[1] - group[0], self.device)
        done = 0
        while done < len(tiles):
            chunk = tiles[done : done + size]
            pixels = np.stack(
                [
                    scaling.to_unit(source[y0 - origin[0] : y1 - origin[0], x0 - origin[1] : x1 - origin[1]], group)
                    for ((y0, y1), _), ((x0, x1), _) in chunk
                ]
            )
            try:
                restored = self._run_tiles(pixels, routes[: len(chunk)], prior, boxes[done : done + len(chunk)])
            except torch.cuda.OutOfMemoryError:
                if size == 1:
                    raise
                free_cuda_cache()  # the estimate of a tile's memory fell short: retry with half as many
                size //= 2
                continue
            for (row, col), tile in zip(chunk, restored, strict=True):
                band.add(row, col, tile)
            done += len(chunk)
            yield len(chunk)
            next_top = tiles[done][0][0][0] if done < len(tiles) else region[2]
            first, final = band.take(next_top)
            top = first - origin[0]
            raw = source[top : top + len(final), region[1] - origin[1] : region[3] - origin[1]]
            out[first - region[0] : first - region[0] + len(final), :, group[0] : group[1]] = scaling.from_unit(
                final, group, raw
            )

    def _region_tiles(self, grid: TileGrid, region: tuple[int, int, int, int]) -> list[tuple[Span, Span]]:
        """The tiles of ``grid`` that touch ``region``, row by row (so that the rows above a tile row are final
        once it is done), each as its row and column with their weights on the device."""
        top, left, bottom, right = region
        rows = [(span, w) for span, w in zip(grid.rows, grid.row_weights, strict=True) if meets(span, top, bottom)]
        cols = [(span, w) for span, w in zip(grid.cols, grid.col_weights, strict=True) if meets(span, left, right)]
        rows = [(span, torch.from_numpy(w).to(self.device)) for span, w in rows]
        cols = [(span, torch.from_numpy(w).to(self.device)) for span, w in cols]
        return [(row, col) for row in rows for col in cols]

    @torch.inference_mode()
    def _run_tiles(
        self, pixels: np.ndarray, routes: torch.Tensor, prior: torch.Tensor | None, boxes: torch.Tensor
    ) -> torch.Tensor:
        """Backbone on a batch of tiles, (n, h, w, k) float32 in [0, 1] with k = 1 (grey, fed as 3 equal
        channels) or 3, each in its box; returns the (n, h, w, k) float32 output on the device."""
        x = torch.from_numpy(pixels).to(self.device).permute(0, 3, 1, 2)
        with autocast(self.device, self.bf16):
            y = self.model.restore_features(x.expand(-1, 3, -1, -1), routes, prior, boxes)
        y = y.float().permute(0, 2, 3, 1)
        return y if pixels.shape[3] == 3 else y.mean(dim=3, keepdim=True)
