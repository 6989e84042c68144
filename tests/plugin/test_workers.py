"""The jobs' Qt-free helpers: map upsampling, map names, manual routes, errors turned into messages."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from slerir_core.errors import ConfigError, WeightsError
from slerir_plugin._workers import Failed, _failure, degradation_maps, resolve_routes, upsample


def test_upsample_is_bilinear_and_keeps_range():
    maps = np.array([[[0.0, 1.0], [1.0, 0.0]]], np.float32)
    up = upsample(maps, (4, 4))
    assert up.shape == (1, 4, 4) and up.dtype == np.float32
    assert up.min() >= 0 and up.max() <= 1
    np.testing.assert_allclose(up[0, 0, 0], 0.0)
    # Output pixel 1 sits a quarter of the way between map cells 0 and 1 along each axis.
    top, bottom = 0.75 * 0.0 + 0.25 * 1.0, 0.75 * 1.0 + 0.25 * 0.0
    np.testing.assert_allclose(up[0, 1, 1], 0.75 * top + 0.25 * bottom, atol=1e-6)
    np.testing.assert_allclose(upsample(maps, (2, 2)), maps)


def test_degradation_maps_fall_back_to_experts():
    class P:
        degradation_map = np.full((3, 4, 4), 1 / 3, np.float32)
        task_map = None

    class Info:
        tasks = ()

    maps, names = degradation_maps(P(), Info())
    assert maps.shape == (3, 4, 4) and names == ["expert 1", "expert 2", "expert 3"]
    P.task_map = np.full((2, 4, 4), 0.5, np.float32)
    Info.tasks = ("noise", "rain")
    maps, names = degradation_maps(P(), Info())
    assert names == ["noise", "rain"] and maps.shape == (2, 4, 4)


def test_resolve_routes_fills_auto_from_the_plan():
    plan = SimpleNamespace(routes=[2] * 8)
    assert resolve_routes([None, 0, None, 1, None, None, None, 0], plan) == [2, 0, 2, 1, 2, 2, 2, 0]


def test_errors_users_can_act_on_become_messages():
    oom = _failure(RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB"))
    assert isinstance(oom, Failed) and "Out of GPU memory" in oom.message and "tile" in oom.message
    cpu_oom = _failure(RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 9 GB"))
    assert isinstance(cpu_oom, Failed) and cpu_oom.message.startswith("Out of memory: choose a smaller tile")
    assert _failure(MemoryError()).message.startswith("Out of memory")

    assert _failure(WeightsError("bad header")).message.startswith("Could not load the weights file")
    assert _failure(ConfigError("unknown config 'x'")).message.startswith("Bad model configuration")
    assert _failure(ValueError("axes 'ZYX' has 3 letters")).message == "axes 'ZYX' has 3 letters"
    assert _failure(KeyError("bug")) is None  # bugs propagate with their traceback
