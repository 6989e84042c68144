"""Several degradations on one image, applied in the order a camera would meet them."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from slerir_core.degradations.registry import TASKS, degrade

APPLY_ORDER: dict[str, int] = {
    "haze": 0,
    "rain": 1,
    "blur": 2,
    "micro_blur": 2,
    "lowlight": 3,
    "noise": 4,
    "micro_noise": 4,
}
"""Physical order: the scene (haze, then rain in front of it), the optics (blur), the exposure, and
last the sensor noise, which is never blurred or darkened in a real capture."""

DOMAINS: dict[str, str] = {task: "microscopy" if task.startswith("micro_") else "photo" for task in TASKS}
"""Random composites mix tasks of one domain only: rain on a fluorescence image means nothing."""


def composite(
    clean: np.ndarray,
    tasks: Sequence[str],
    rng: np.random.Generator,
    params: Mapping[str, Mapping] | None = None,
) -> np.ndarray:
    """Apply several degradations, sorted by :data:`APPLY_ORDER` whatever order ``tasks`` lists them in.

    Args:
        clean: H×W×C float image in [0, 1].
        tasks: distinct task names.
        rng: random source.
        params: optional per-task parameters, e.g. ``{"noise": {"sigma": 15}}``.

    Returns:
        The degraded float32 image, same shape, in [0, 1].

    Raises:
        ValueError: an unknown or repeated task.
    """
    if len(set(tasks)) != len(tasks):
        raise ValueError(f"composite tasks must be distinct, got {list(tasks)}")
    unknown = [t for t in tasks if t not in APPLY_ORDER]
    if unknown:
        raise ValueError(f"unknown degradation task(s) {unknown}; choose from {list(APPLY_ORDER)}")
    params = params or {}
    out = clean
    for task in sorted(tasks, key=APPLY_ORDER.__getitem__):
        out = degrade(out, task, rng, **params.get(task, {}))
    return out


def degrade_random(
    clean: np.ndarray,
    rng: np.random.Generator,
    tasks: Sequence[str] = TASKS,
    composite_prob: float = 0.0,
) -> tuple[np.ndarray, int]:
    """Degrade with a task drawn uniformly from ``tasks``, sometimes joined by one or two others.

    Args:
        clean: H×W×C float image in [0, 1].
        rng: random source.
        tasks: the tasks to draw from.
        composite_prob: probability of adding one or two further distinct tasks of the same domain
            (photo or microscopy) from ``tasks``.

    Returns:
        The degraded image and the class id (index into :data:`TASKS`) of the first task drawn, which
        stays the label of a composite.

    Raises:
        ValueError: ``tasks`` is empty or holds a name outside :data:`TASKS`.
    """
    if len(tasks) == 0:
        raise ValueError("tasks must not be empty")
    unknown = [t for t in tasks if t not in TASKS]
    if unknown:
        raise ValueError(f"unknown degradation task(s) {unknown}; choose from {list(TASKS)}")
    primary = str(tasks[int(rng.integers(len(tasks)))])
    chosen = [primary]
    if composite_prob > 0 and rng.random() < composite_prob:
        partners = [t for t in dict.fromkeys(tasks) if t != primary and DOMAINS[t] == DOMAINS[primary]]
        if partners:
            n_extra = int(rng.integers(1, min(2, len(partners)) + 1))
            chosen += [str(t) for t in rng.choice(partners, size=n_extra, replace=False)]
    return composite(clean, chosen, rng), TASKS.index(primary)
