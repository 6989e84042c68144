"""Registry of degradation generators, and the task labels the router is trained on.

Every generator has the signature ``fn(clean, rng, **params) -> degraded``: ``clean`` is float32 H×W×C
in [0, 1] with C = 1 or 3, ``rng`` a :class:`numpy.random.Generator`, and any parameter left out is
drawn from the range the generator's docstring documents.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

TASKS: tuple[str, ...] = ("noise", "rain", "haze", "blur", "lowlight", "micro_noise", "micro_blur")
"""Degradation labels; a task's position is its class id."""


Degradation = Callable[..., np.ndarray]
"""``fn(clean, rng, **params) -> degraded``; each generator names its own keyword parameters."""


DEGRADATIONS: dict[str, Degradation] = {}
"""Task name -> generator. Filled by :func:`register_degradation` when the package is imported."""

REACH: dict[str, int] = {}
"""Task name -> how far, in pixels, a degraded pixel draws on the clean pixels around it (a PSF's half-side;
0 for pixel-wise degradations and those whose fields do not move image content). A crop degraded with this
margin around it and cut back shows what the degradation does to a larger picture, not what it does to the
reflection of the crop that filters pad its border with."""


def family(task: str) -> str:
    """The degradation a task is a case of: microscopy noise and blur are noise and blur, with their own
    physics (Poisson-Gaussian noise, a PSF), and the shipped training configs give a family one routing path
    (``data.route_groups``)."""
    return task.removeprefix("micro_")


def register_degradation(name: str, reach: int = 0) -> Callable[[Degradation], Degradation]:
    """Decorator that files a generator under ``name``.

    Args:
        name: task name; must be new, so two modules cannot silently shadow each other.
        reach: its :data:`REACH`.

    Raises:
        ValueError: ``name`` is already registered.
    """

    def decorator(fn: Degradation) -> Degradation:
        if name in DEGRADATIONS:
            raise ValueError(f"degradation {name!r} is already registered (by {DEGRADATIONS[name]!r})")
        DEGRADATIONS[name] = fn
        REACH[name] = reach
        return fn

    return decorator


def degrade(clean: np.ndarray, task: str, rng: np.random.Generator, **params) -> np.ndarray:
    """Apply the generator registered as ``task``.

    Args:
        clean: H×W×C float image in [0, 1], C = 1 or 3.
        task: one of :data:`TASKS` (or any other registered name).
        rng: random source; the same seed and parameters give the same output.
        **params: the generator's parameters (see its docstring); those left out are drawn at random.

    Returns:
        The degraded float32 image, same shape, in [0, 1].

    Raises:
        ValueError: ``task`` is not registered.
    """
    if task not in DEGRADATIONS:
        raise ValueError(f"unknown degradation task {task!r}; choose one of {sorted(DEGRADATIONS)}")
    return DEGRADATIONS[task](clean, rng, **params)
