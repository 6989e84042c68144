"""Planning: what the analysis of an image decides once, before any tile is restored.

``Restorer.plan`` analyses a whole 2-D image once: routes for the eight stages, routing probabilities, the
degradation map of the 4x4 crops, the task label when the model has task prototypes, and the GLGF prior
(a ``Plan``). Images larger than ``PLAN_SIDE`` are first block-averaged down to it, strip by strip
(``planning_view``: the extractors see 32-224 px views anyway), so planning a 4k image never holds a float
copy of it; the router then reads windows of the image at full resolution (``routing_mosaic``), where noise
grain and blur show at their own size.

Stacks (any leading axes: T, Z, ...) are planned one 2-D image at a time, or once per channel group on the
*middle slice* whose plan the whole stack shares (``PlanChooser``). The middle slice, not a max or mean
projection, because a projection averages the noise away (or, for the max, biases it) and would misinform
the router about the very degradation it must detect.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from slerir_core.config import STAGES
from slerir_core.degradations.registry import family
from slerir_core.io.layout import Layout
from slerir_core.io.scaling import Scaling
from slerir_core.model.extractors import window_starts
from slerir_core.model.slerir import routes_tensor

if TYPE_CHECKING:
    from slerir_core.restore import RestoreOptions, Restorer

PLAN_SIDE = 1024
"""Longest side of the view a plan is computed on (the extractors see 32-224 px views anyway)."""


def confident_above(families: int) -> float:
    """The probability of a degradation family from which it is given as the label: halfway from chance
    (``1 / families``) to certainty. 0.6 for the shipped model's five families (its seven tasks, microscopy
    noise and blur counted with noise and blur), 0.75 for two; below it two or more share the probability and
    the label says so."""
    return (1.0 + 1.0 / families) / 2.0


def family_probabilities(task_probs: dict[str, float]) -> dict[str, float]:
    """Task probabilities summed by degradation family (``slerir_core.degradations.registry.family``), most
    likely first: the router treats a family's tasks as one degradation, so they split its probability."""
    out: dict[str, float] = {}
    for task, p in task_probs.items():
        out[family(task)] = out.get(family(task), 0.0) + p
    return dict(sorted(out.items(), key=lambda item: item[1], reverse=True))


def family_verdict(task_probs: dict[str, float]) -> Verdict:
    """The label task probabilities give: the likeliest family with its probability (``kind`` ``label``,
    ``family`` set), or ``uncertain`` with the two likeliest when it is below ``confident_above``."""
    families = family_probabilities(task_probs)
    (top, p), *_ = families.items()
    if p < confident_above(len(families)):
        likeliest = list(families.items())[:2]
        return Verdict("uncertain", f"uncertain ({', '.join(f'{name} {q:.0%}' for name, q in likeliest)})")
    return Verdict("label", f"{top} ({p:.0%})", top)


@dataclass(frozen=True)
class Verdict:
    """What a plan may honestly say about the image's degradation, in one place for the CLI, the JSON
    report and the plugin.

    Attributes:
        kind: ``"label"`` (a confident task), ``"uncertain"`` (no task stands out), ``"outside"`` (the
            image lies outside what the model was trained on), ``"manual"`` (routes set by hand: the
            router decided nothing) or ``"none"`` (the model has no task prototypes).
        text: the verdict in words, e.g. ``"noise (81%)"``, ``"uncertain (noise 35%, rain 24%)"``,
            ``"outside training (grey image)"``, ``"manual"``.
        family: the degradation family a ``label`` names; ``None`` for the other kinds.
    """

    kind: str
    text: str
    family: str | None = None

    def __str__(self) -> str:
        return self.text


def as_integer(what: str, value: Any) -> int:
    """``value`` as an int; floats (even 2.0), bools and strings are refused rather than truncated or cast.

    Raises:
        TypeError: naming ``what``.
    """
    if isinstance(value, (bool, np.bool_)) or (isinstance(value, torch.Tensor) and value.dtype == torch.bool):
        raise TypeError(f"{what} must be an integer, not a bool ({value!r})")
    try:
        return operator.index(value)
    except TypeError:
        raise TypeError(f"{what} must be an integer, not {type(value).__name__} {value!r}") from None


def check_routes(routes: Sequence[int], num_experts: int) -> list[int]:
    """Validate manual routes for one image: one expert index in ``[0, num_experts)`` per routed stage.

    Raises:
        TypeError: not a sequence, or an entry that is not an integer (``1.5``, ``True``).
        ValueError: wrong length or an index out of range.
    """
    if isinstance(routes, (str, bytes)) or not hasattr(routes, "__len__"):
        raise TypeError(f"routes must be a sequence of {len(STAGES)} integers, not {type(routes).__name__}")
    routes = [as_integer("each route", r) for r in routes]
    if len(routes) != len(STAGES):
        raise ValueError(f"routes need {len(STAGES)} expert indices ({', '.join(STAGES)}), got {len(routes)}: {routes}")
    return routes_tensor(routes, 1, num_experts)[0].tolist()


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
        grey: the image was one channel, which the network saw repeated over its three.
        grey_sigma: the noise σ (0-1 scale) of a grey image planned with it spread over the three channels
            (``slerir_core.grey_noise``); ``None`` for colour images, grey ones with too little noise or large
            enough to be planned as they are, or when spreading is turned off.
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
    grey: bool = False
    grey_sigma: float | None = None

    @classmethod
    def from_analysis(
        cls,
        info: dict[str, torch.Tensor],
        source: str,
        tasks: Sequence[str],
        grey: bool = False,
        grey_sigma: float | None = None,
    ) -> Plan:
        """The plan of one image from ``SLERIR.analyse`` output for a batch of one.

        Args:
            info: the analysis.
            source: what it was computed on.
            tasks: the names of the model's trained task prototypes; empty when it has none (no label).
            grey: the image was one channel (grey, or one channel of multichannel data).
            grey_sigma: its noise σ to spread over the channels, if any.
        """

        def numpy(key: str) -> np.ndarray:
            return info[key][0].float().cpu().numpy()

        label, confidence, task_probs, task_map = None, None, {}, None
        if "task_probs" in info and tasks:
            probs = numpy("task_probs")
            task_probs = {name: float(p) for name, p in zip(tasks, probs, strict=True)}
            label, confidence = tasks[int(probs.argmax())], float(probs.max())
            task_map = numpy("task_map") if "task_map" in info else None
        prior = info.get("prior")
        return cls(
            routes=[int(r) for r in info["routes"][0].tolist()],
            probs=numpy("probs"),
            degradation_map=numpy("degradation_map"),
            prior=None if prior is None else prior.float(),
            label=label,
            confidence=confidence,
            task_probs=task_probs,
            task_map=task_map,
            source=source,
            grey=grey,
            grey_sigma=grey_sigma,
        )

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

    def verdict(self) -> Verdict:
        """What may be said of the image's degradation, checked in this order:

        - manual routes: ``manual``; the router's label would describe a choice nobody followed;
        - no task prototypes: no label at all;
        - a grey image planned as three equal channels: ``outside training``. No model trained here has seen
          equal channels with their degradation: its clean images are colour (dead-leaves pictures) or
          photographs whose grey ones are repeated to RGB, and every noise is drawn for each channel on its own.
          Grey images were once labelled ``haze`` at 99% whatever their degradation. A noisy grey image planned
          with its noise spread over the channels (``grey_sigma``) is shown to the router as a colour sample
          would be, and gets its label like one;
        - the likeliest family (``family_probabilities``) below ``confident_above(families)``: ``uncertain``,
          with the two likeliest;
        - otherwise that family and its probability.
        """
        if self.manual_routes:
            return Verdict("manual", "manual")
        if self.label is None or self.confidence is None:
            return Verdict("none", "none (the model has no task labels)")
        if self.grey and self.grey_sigma is None:
            return Verdict("outside", "outside training (grey image)")
        return family_verdict(self.task_probs)

    def summary(self) -> dict[str, Any]:
        """JSON-ready description (everything but the prior)."""
        verdict = self.verdict()
        return {
            "source": self.source,
            "routes": list(self.routes),
            "manual_routes": self.manual_routes,
            "grey": self.grey,
            "grey_sigma": self.grey_sigma,
            "verdict": {"kind": verdict.kind, "text": verdict.text},
            "stages": list(STAGES),
            "probs": np.round(self.probs, 4).tolist(),
            "label": self.label,
            "confidence": None if self.confidence is None else round(self.confidence, 4),
            "task_probs": {k: round(v, 4) for k, v in self.task_probs.items()},
            "degradation_map": np.round(self.degradation_map, 4).tolist(),
            "expert_map": self.expert_map.tolist(),
            "task_map": None if self.task_map is None else np.round(self.task_map, 4).tolist(),
        }


def middle_index(shape: Sequence[int]) -> tuple[int, ...]:
    """Index of the middle element along each axis (the middle slice of a stack)."""
    return tuple(n // 2 for n in shape)


def planning_view(plane: Any, scaling: Scaling, group: tuple[int, int], side: int = PLAN_SIDE) -> np.ndarray:
    """Channels ``group`` of a 2-D image as float32 in [0, 1], block-averaged so neither side exceeds ``side``.

    Works strip by strip, so a large image is never copied to float whole. A dask plane is read here.
    """
    height, width = plane.shape[:2]
    fy, fx = math.ceil(height / side), math.ceil(width / side)
    if fy == fx == 1:
        return scaling.to_unit(np.asarray(plane), group)
    h, w = height // fy, width // fx  # the last < fy rows and < fx columns are left out
    out = np.empty((h, w, group[1] - group[0]), np.float32)
    rows = max(1, 64 // fy) * fy
    for r0 in range(0, h * fy, rows):
        r1 = min(r0 + rows, h * fy)
        strip = scaling.to_unit(np.asarray(plane[r0:r1, : w * fx]), group)
        out[r0 // fy : r1 // fy] = strip.reshape((r1 - r0) // fy, fy, w, fx, -1).mean(axis=(1, 3))
    return out


def routing_mosaic(plane: Any, scaling: Scaling, group: tuple[int, int], window: tuple[int, int]) -> np.ndarray:
    """The windows the router reads of a 2-D image (``SLERIR.degradation_embedding``), cut at full resolution
    and laid side by side, as float32 in [0, 1]: cut into windows again, the mosaic gives back the same ones.

    For an image planned on a reduced view (``planning_view``), whose block averages would show noise grain
    and blur at a fraction of their size. A dask plane is read window by window.
    """
    (h, w), (wh, ww) = plane.shape[:2], window
    lh, lw = min(h, wh), min(w, ww)
    return np.concatenate(
        [
            np.concatenate(
                [scaling.to_unit(np.asarray(plane[y : y + lh, x : x + lw]), group) for x in window_starts(w, ww)],
                axis=1,
            )
            for y in window_starts(h, wh)
        ],
        axis=0,
    )


class PlanChooser:
    """Hands out the plan of each 2-D image: the given one, one per channel group, or one per image.

    Args:
        restorer: plans the images.
        layout, canon, scaling: the input's layout, canonical ``(stack..., Y, X, C)`` view and value scaling.
        opts: the resolved options: ``plan``, ``routes``, ``plan_per`` and ``on_plan`` are read.
    """

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
        """The plan of the 2-D image at stack ``index``, channel group ``group`` (planned on first use)."""
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
            where = self.layout.describe(index, group)
            spread = self.opts.spread_grey_noise
            plan = self.restorer.plan_plane(plane, self.scaling, self.layout.groups[group], where, spread)
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
