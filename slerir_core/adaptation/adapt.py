"""Adapting a model to a user's own noisy images, with no clean targets (``slerir adapt``, ``Restorer.adapt``).

What is trained: the experts on the path the router picks for the user's images, one per routed stage, and
nothing else. The router, the extractors, the GLGF prior and the shared layers stay as they were, and so do the
other experts: the images still route as before, and the degradations other paths restore (rain, haze, low
light, blur) keep their experts. The noise is what differs from camera to camera, and the experts of the path
are what restores it.

How: a self-supervised loss on crops of the user's images, as the network sees them (scaled, grey repeated to
RGB, channel by channel for multichannel data): pseudo-clean pairs (``pseudo_clean``), the blind-spot loss
(``blind_spot``), or Stein's unbiased risk estimate (``sure``); by default pseudo-clean pairs, or the blind-spot
loss for images whose noise cannot be measured (almost wholly black or saturated). A share of the crops is held out
and never trained on; the loss on them, with fixed random draws, is measured as adaptation goes, the best state
is kept, and adaptation stops early once that loss has not improved for a while.

Why pseudo-clean pairs come first: the blind-spot loss scores the network with the hidden pixels' own
values out of reach, and a model that already restores well leans on those values: its predictions from the
surroundings improve while the restoration a user gets barely moves, or gets worse. SURE scores that
restoration itself, but assumes Gaussian noise; on photon-limited images with clipped pixels it was measured to
fall while the restoration got worse. Pseudo-clean pairs draw the user's noise, photons and clipping included,
on the starting model's own restorations, and gained on every noise model measured
(``benchmarks/adaptation.py``).
"""

from __future__ import annotations

import copy
import hashlib
import time
from collections import Counter
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from slerir_core.adaptation.blind_spot import blind_spot_case
from slerir_core.adaptation.noise_model import NoiseModel, fit_noise_model
from slerir_core.adaptation.pseudo_clean import pseudo_clean_case
from slerir_core.adaptation.sure import sure_case
from slerir_core.device import autocast
from slerir_core.errors import ImageError
from slerir_core.io.scaling import Scaling
from slerir_core.noise_level import estimate_noise_sigma
from slerir_core.tiling import TileGrid

if TYPE_CHECKING:
    from slerir_core.plan import Plan
    from slerir_core.restore import Restorer

CROP = 64
"""Side of the training and held-out crops."""
HELD_OUT_SHARE = 0.15
"""Share of the crops held out (at least one)."""
MIN_NOISE_SIGMA = 1.0 / 255
"""Noise below this (on the 0-1 scale, by ``estimate_noise_sigma``) leaves nothing to learn."""
LEARNING_RATES = {"pseudo-clean": 2e-4, "blind-spot": 5e-5, "sure": 5e-5}
"""Each self-supervised loss (``pseudo_clean``, ``blind_spot``, ``sure``) and Adam's learning rate for it. The
pseudo-clean targets are smooth and their draws fresh, so it takes larger steps: on Poisson noise at 20 photons
2e-4 gained 0.1 dB more than 5e-5 in 400 steps."""
LOSSES = ("auto", *LEARNING_RATES)
"""``auto``: pseudo-clean pairs, or the blind-spot loss when the noise of some plane cannot be measured."""


@dataclass(frozen=True)
class AdaptSettings:
    """How to adapt.

    Attributes:
        minutes: wall-clock budget.
        max_steps: stop after this many optimiser steps as well (``None``: the budget alone).
        batch: crops per step.
        lr: Adam's learning rate (``None``: the loss's own, ``LEARNING_RATES``).
        eval_every: steps between two held-out measurements.
        patience: held-out measurements without improvement before stopping early.
        seed: seeds the crop order and the losses' draws.
        loss: ``auto`` (pseudo-clean pairs, or the blind-spot loss for images whose noise cannot be measured),
            ``pseudo-clean`` (the user's noise drawn on the starting model's restorations; noise whose
            variance is a straight line of the intensity, see ``slerir_core.adaptation.pseudo_clean``),
            ``blind-spot`` (hides pixels; any pixel-independent noise) or ``sure`` (scores the network as it
            restores whole images; Gaussian-like noise without saturation, see ``slerir_core.adaptation.sure``).
    """

    minutes: float = 5.0
    max_steps: int | None = None
    batch: int = 8
    lr: float | None = None
    eval_every: int = 10
    patience: int = 8
    seed: int = 0
    loss: str = "auto"

    def __post_init__(self) -> None:
        if self.loss not in LOSSES:
            raise ValueError(f"unknown adaptation loss {self.loss!r}; choose one of {sorted(LOSSES)}")

    def learning_rate(self, loss: str) -> float:
        """``lr``, or the learning rate of ``loss`` (one of ``LEARNING_RATES``) when it is not set."""
        return LEARNING_RATES[loss] if self.lr is None else self.lr


@dataclass(frozen=True)
class AdaptProgress:
    """How far adaptation is, after a step: for progress bars and the plugin's loss readout.

    Attributes:
        step: steps taken (0 while the starting model restores the images for pseudo-clean pairs).
        seconds: time since adaptation began.
        budget_seconds: the time budget.
        held_out_loss: the held-out loss measured after this step; ``None`` when it was not measured.
        best_loss: the lowest held-out loss so far (the starting weights' included; infinite before the first).
    """

    step: int
    seconds: float
    budget_seconds: float
    held_out_loss: float | None
    best_loss: float


@dataclass
class AdaptResult:
    """What an adaptation did.

    Attributes:
        path: the expert per routed stage that was adapted.
        steps: optimiser steps taken.
        best_step: the step whose state was kept (0: the starting weights were best).
        seconds: wall-clock time.
        curve: (step, held-out loss) pairs, the first at step 0.
        data_hash: SHA-256 of the crops adapted on, to tell later which data a file came from.
        stopped: why it ended: ``budget``, ``steps``, ``converged`` or ``cancelled``.
        loss: the self-supervised loss adapted with (``LEARNING_RATES``: ``auto`` resolved).
    """

    path: tuple[int, ...]
    steps: int = 0
    best_step: int = 0
    seconds: float = 0.0
    curve: list[tuple[int, float]] = field(default_factory=list)
    data_hash: str = ""
    stopped: str = "budget"
    loss: str = "pseudo-clean"

    def metadata(self, source: str) -> dict[str, str]:
        """String metadata for the weights file (``slerir_core.checkpoint.save_weights``)."""
        return {
            "adapted_from": source,
            "adapted_path": "-".join(map(str, self.path)),
            "adapted_data_sha256": self.data_hash,
            "adapted_minutes": f"{self.seconds / 60:.2f}",
            "adapted_steps": str(self.steps),
            "adapted_best_step": str(self.best_step),
            "adapted_stopped": self.stopped,
            "adapted_loss": self.loss,
            "adapted_curve": ";".join(f"{s}:{loss:.6g}" for s, loss in self.curve),
        }


@dataclass
class _Plane:
    """One 2-D image as the network sees it, with its plan and the plan's prior ready for training."""

    pixels: torch.Tensor  # (1, 3, H, W) in [0, 1]
    plan: Plan
    prior: torch.Tensor | None

    @property
    def routes(self) -> tuple[int, ...]:
        """The plan's expert per routed stage."""
        return tuple(self.plan.routes)


Axes = str | None | Sequence[str | None]
"""One axes string for every image, or one per image (``None``: inferred, as ``restore`` does)."""


def user_planes(restorer: Restorer, images: Sequence[Any], axes: Axes, channels: str) -> list[_Plane]:
    """Every 2-D plane of ``images`` (stacks and channel groups apart, as the Restorer restores them), checked.

    Raises:
        ImageError: a plane smaller than ``CROP``², a constant plane, or images whose pixel noise is too low to
            learn from.
    """
    from slerir_core.restore import prepare_image

    planes: list[_Plane] = []
    noise = []
    per_image = [axes] * len(images) if axes is None or isinstance(axes, str) else list(axes)
    for image, image_axes in zip(images, per_image, strict=True):
        layout, canon, scaling = prepare_image(image, image_axes, channels, "percentile")
        if min(layout.height, layout.width) < CROP:
            raise ImageError(
                f"an image of {layout.height}×{layout.width} pixels is too small to adapt on: at least {CROP}×{CROP}"
            )
        for index in np.ndindex(layout.stack_shape):
            for group in layout.groups:
                raw = np.asarray(canon[index])
                unit = scaling.to_unit(raw, group)
                if float(np.ptp(unit)) == 0.0:
                    raise ImageError("an image plane is constant: there is nothing to learn from it")
                noise.append(estimate_noise_sigma(unit))
                plan = restorer.plan_plane(raw, scaling, group, layout.describe(index, layout.groups.index(group)))
                # A clone outside inference mode: the plan's prior was made in it, and training reads it.
                prior = None if plan.prior is None else plan.prior.clone().to(restorer.device)
                planes.append(_Plane(restorer.network_input(unit).clone(), plan, prior))
    if not planes:
        raise ImageError("no images to adapt on")
    if float(np.median(noise)) < MIN_NOISE_SIGMA:
        raise ImageError(
            f"the images show almost no pixel noise (σ ≈ {255 * float(np.median(noise)):.2f} grey levels of 255): "
            "there is nothing to adapt to"
        )
    return planes


def restorations(restorer: Restorer, planes: Sequence[_Plane]) -> Generator[int, None, list[torch.Tensor]]:
    """The restorer's restoration of every plane, as a user gets it (its tiles, its plan), on the network's
    scale like ``_Plane.pixels``; yields the tiles of each network pass, to report progress and to be stopped."""
    opts = restorer.resolve_options()
    out = []
    for plane in planes:
        k = 1 if plane.plan.grey else 3
        unit = plane.pixels[0, :k].permute(1, 2, 0).float().cpu().numpy()
        restored = np.empty_like(unit)
        h, w = unit.shape[:2]
        identity = Scaling(np.zeros(k, np.float32), np.ones(k, np.float32), np.dtype(np.float32), "unit")
        grid = TileGrid.build(h, w, opts.tile, opts.overlap)
        yield from restorer.restore_region_steps(
            unit, (0, 0), restored, (0, 0, h, w), identity, (0, k), plane.plan, grid, opts.batch
        )
        out.append(restorer.network_input(restored).clone())
    return out


def _loss_and_noise(loss: str, planes: Sequence[_Plane]) -> tuple[str, list[NoiseModel] | None]:
    """The loss to adapt with (``auto`` resolved) and each plane's noise model, for the losses that read one.

    Raises:
        ImageError: the noise of a plane cannot be measured and the loss needs it (not with ``auto``).
    """
    if loss == "blind-spot":
        return loss, None
    try:
        return ("pseudo-clean" if loss == "auto" else loss), [fit_noise_model(plane.pixels) for plane in planes]
    except ImageError:
        if loss != "auto":
            raise
        return "blind-spot", None


def trainable_experts(model: torch.nn.Module) -> list[torch.nn.Parameter]:
    """Freeze ``model`` but its routed stages' expert stacks, and return those. Run with fixed routes, only the
    path's slices of the stacks get gradients: Adam leaves the other experts exactly as they are."""
    model.requires_grad_(False)
    stacks = [p for stage in model.stages.values() for p in stage.parameters()]
    for p in stacks:
        p.requires_grad_(True)
    return stacks


def _crop_boxes(planes: Sequence[_Plane]) -> list[tuple[int, int, int]]:
    """(plane, top, left) of every whole ``CROP``² cell of every plane."""
    boxes = []
    for p, plane in enumerate(planes):
        h, w = plane.pixels.shape[-2:]
        boxes += [(p, top, left) for top in range(0, h - CROP + 1, CROP) for left in range(0, w - CROP + 1, CROP)]
    return boxes


def _data_hash(planes: Sequence[_Plane]) -> str:
    digest = hashlib.sha256()
    for plane in planes:
        digest.update(plane.pixels.float().cpu().numpy().tobytes())
    return digest.hexdigest()


def adapt_model(
    restorer: Restorer,
    images: Sequence[Any],
    settings: AdaptSettings,
    axes: Axes = None,
    channels: str = "auto",
    progress: Callable[[AdaptProgress], None] | None = None,
    cancelled: Callable[[], bool] | None = None,
) -> tuple[torch.nn.Module, AdaptResult]:
    """Adapt a copy of the restorer's model to ``images``; the restorer's own model is left as it was.

    Args:
        restorer, images, settings, axes, channels: as for ``adapt_steps``.
        progress: called after every step (``held_out_loss`` set after each held-out measurement).
        cancelled: polled before every step; once true, adaptation ends with the best state so far.

    Returns:
        The adapted model (the best state on the held-out crops) and what was done.

    Raises:
        ImageError: unusable images (``user_planes``), or too few crops to hold some out.
    """
    steps = adapt_steps(restorer, images, settings, axes, channels, cancelled)
    while True:
        try:
            update = next(steps)
        except StopIteration as done:
            return done.value
        if progress is not None:
            progress(update)


def adapt_steps(
    restorer: Restorer,
    images: Sequence[Any],
    settings: AdaptSettings,
    axes: Axes = None,
    channels: str = "auto",
    cancelled: Callable[[], bool] | None = None,
) -> Generator[AdaptProgress, None, tuple[torch.nn.Module, AdaptResult]]:
    """Adaptation as a generator that yields after every step, for workers that stop it by closing it (then
    nothing is returned and the restorer's model is untouched).

    Args:
        restorer: whose model (and device and precision) to start from.
        images: arrays as ``Restorer.restore`` takes them.
        settings: how to adapt.
        axes: as for ``restore``, for every image or one per image.
        channels: as for ``restore``.
        cancelled: polled before every step; once true, adaptation ends with the best state so far.

    Returns:
        The adapted model and what was done (``StopIteration.value``).

    Raises:
        ImageError: unusable images (``user_planes``), too few crops to hold some out, or noise that cannot be
            measured for a loss that needs it (``pseudo-clean``, ``sure``).
    """
    start = time.monotonic()
    budget = 60.0 * settings.minutes
    planes = user_planes(restorer, images, axes, channels)
    boxes = _crop_boxes(planes)
    if len(boxes) < 2:
        raise ImageError(
            f"the images hold {len(boxes)} crop(s) of {CROP}×{CROP}: at least 2 are needed (one is held out)"
        )
    rng = np.random.default_rng(settings.seed)
    order = rng.permutation(len(boxes))
    held = max(1, round(HELD_OUT_SHARE * len(boxes)))
    held_out, train = [boxes[i] for i in order[:held]], [boxes[i] for i in order[held:]]
    path = Counter(plane.routes for plane in planes).most_common(1)[0][0]
    # Before the restorations: an image whose noise cannot be fitted fails, or falls back, at once.
    loss, noise = _loss_and_noise(settings.loss, planes)
    result = AdaptResult(path=path, data_hash=_data_hash(planes), loss=loss)

    model = copy.deepcopy(restorer.model).train()
    stacks = trainable_experts(model)
    optimizer = torch.optim.Adam(stacks, lr=settings.learning_rate(loss), weight_decay=0.0)
    device = restorer.device
    bf16 = restorer.bf16 and loss != "sure"  # SURE's finite difference needs float32
    routes = torch.tensor(path, device=device)
    generator = torch.Generator(device).manual_seed(settings.seed)

    sources = [plane.pixels for plane in planes]
    if loss == "pseudo-clean":
        tiles = restorations(restorer, planes)
        while True:
            try:
                next(tiles)
            except StopIteration as done:
                sources = done.value
                break
            yield AdaptProgress(0, time.monotonic() - start, budget, None, float("inf"))

    def batch(crops: Sequence[tuple[int, int, int]]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Crops of one plane as the loss reads them (noisy, or restored for pseudo-clean pairs), their boxes in
        it (fractions) and its prior."""
        plane, source = planes[crops[0][0]], sources[crops[0][0]]
        h, w = plane.pixels.shape[-2:]
        x = torch.cat([source[..., t : t + CROP, left : left + CROP] for _, t, left in crops])
        box = torch.tensor(
            [[t / h, left / w, (t + CROP) / h, (left + CROP) / w] for _, t, left in crops], device=device
        )
        return x, box, plane.prior

    def network(box: torch.Tensor, prior: torch.Tensor | None) -> Callable[[torch.Tensor], torch.Tensor]:
        """The model on crops of one plane, at ``box`` in it."""

        def restore(x: torch.Tensor) -> torch.Tensor:
            with autocast(device, bf16):
                return model.restore_features(x, routes.expand(len(x), -1), prior=prior, box=box)

        return restore

    def draw(crops: Sequence[tuple[int, int, int]], generator: torch.Generator) -> tuple[Callable, Callable]:
        """One draw of the loss on crops of one plane, and the network that restores them."""
        x, box, prior = batch(crops)
        if noise is None:
            score = blind_spot_case(x, generator)
        else:
            case = sure_case if loss == "sure" else pseudo_clean_case
            score = case(x, generator, noise[crops[0][0]])
        return score, network(box, prior)

    eval_generator = torch.Generator(device).manual_seed(settings.seed + 1)
    held_cases = [draw([crop], eval_generator) for crop in held_out]

    @torch.no_grad()
    def held_out_loss() -> float:
        model.eval()
        losses = [float(score(restore)) for score, restore in held_cases]
        model.train()
        return float(np.mean(losses))

    best_loss = held_out_loss()
    best_state = [p.detach().clone() for p in stacks]
    result.curve.append((0, best_loss))
    since_best = 0
    while True:
        elapsed = time.monotonic() - start
        if cancelled is not None and cancelled():
            result.stopped = "cancelled"
            break
        if elapsed >= budget:
            result.stopped = "budget"
            break
        if settings.max_steps is not None and result.steps >= settings.max_steps:
            result.stopped = "steps"
            break
        # Crops of one plane per step: the planes' priors differ, and one forward shares one prior.
        plane = train[int(rng.integers(len(train)))][0]
        own = [c for c in train if c[0] == plane]
        picks = [own[i] for i in rng.integers(len(own), size=settings.batch)]
        score, restore = draw(picks, generator)
        loss = score(restore)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        result.steps += 1
        current = None
        if result.steps % settings.eval_every == 0:
            current = held_out_loss()
            result.curve.append((result.steps, current))
            if current < best_loss:
                best_loss, since_best, result.best_step = current, 0, result.steps
                best_state = [p.detach().clone() for p in stacks]
            else:
                since_best += 1
        yield AdaptProgress(result.steps, time.monotonic() - start, budget, current, best_loss)
        if since_best >= settings.patience:
            result.stopped = "converged"
            break
    with torch.no_grad():
        for p, kept in zip(stacks, best_state, strict=True):
            p.copy_(kept)
    model.requires_grad_(False)
    result.seconds = time.monotonic() - start
    return model.eval(), result


def budget_fraction(update: AdaptProgress) -> float:
    """How much of the budget an update has used, in [0, 1]."""
    return min(1.0, update.seconds / update.budget_seconds) if update.budget_seconds > 0 else 1.0
