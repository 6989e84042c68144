"""Synthetic degradations: seeded, vectorised generators that turn a clean image into a degraded one.

Every generator takes a float32 H×W×C image in [0, 1] (C = 1 or 3) and a :class:`numpy.random.Generator`
and returns a float32 image of the same shape, clipped to [0, 1]; parameters left out are drawn from
the ranges documented in each generator's docstring.

>>> rng = np.random.default_rng(0)
>>> noisy = degrade(clean, "noise", rng, sigma=25)
>>> degraded, label = degrade_random(clean, rng, composite_prob=0.3)   # label indexes TASKS
"""

from __future__ import annotations

# The generator modules register themselves on import; they are listed explicitly (no package scan).
from slerir_core.degradations import blur, haze, lowlight, microscopy, noise, rain  # noqa: F401
from slerir_core.degradations.blur import defocus_kernel, motion_kernel
from slerir_core.degradations.composite import APPLY_ORDER, composite, degrade_random
from slerir_core.degradations.haze import depth_proxy
from slerir_core.degradations.noise import NOISE_SIGMAS, poisson_gaussian
from slerir_core.degradations.registry import DEGRADATIONS, TASKS, degrade, register_degradation

__all__ = [
    "APPLY_ORDER",
    "DEGRADATIONS",
    "NOISE_SIGMAS",
    "TASKS",
    "composite",
    "defocus_kernel",
    "degrade",
    "degrade_random",
    "depth_proxy",
    "motion_kernel",
    "poisson_gaussian",
    "register_degradation",
]
