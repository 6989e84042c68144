"""Which implementation runs: the Triton kernels or their PyTorch reference twins, and the debug switch.

Rules, checked on every call (a few dictionary look-ups), per kernel family (``FAMILIES``):

* ``SLERIR_KERNELS=reference`` or ``use_reference(True)``: the reference, for every family.
* ``SLERIR_REFERENCE_KERNELS=routed`` (a comma list of families) or ``use_reference(True, family="routed")``:
  the reference for those families only, so that a kernel found wrong turns off only itself.
* CUDA tensors: Triton, if it imports (it is imported here, lazily, once); otherwise the reference.
* CPU tensors: the reference, unless ``SLERIR_KERNELS=triton`` *and* ``TRITON_INTERPRET=1`` ask for Triton's
  interpreter. Both are needed because the kernel tests set ``TRITON_INTERPRET=1`` for the whole pytest
  process, and the rest of the suite must keep the (fast) reference path on CPU.

The Triton op modules (``kernels.ops.*``) import triton and define ``@triton.jit`` kernels at import, and
triton reads ``TRITON_INTERPRET`` when a kernel is decorated, so ``kernels.functional`` imports them inside
the functions, on first use (a function-level import, which torch.compile traces without a graph break).
"""

from __future__ import annotations

import os

import torch

GRID_AXIS_LIMIT = 65535
"""CUDA's cap on launch grid axes 1 and 2: the kernels put (sample, head) pairs or samples there."""
MAX_HEAD_CHANNELS = 128
"""Widest attention head the fused kernel holds (C_h x C_h, padded to a power of two, in registers and
shared memory); the model has 48 and 96."""

FAMILIES = ("transposed_attention", "routed")
"""Kernel families, each switched to its reference twins as a whole: the transposed attention
(``transposed_attention``) and the routed-expert ops (``routed_pointwise``; ``routed_depthwise3x3`` always runs
its twin)."""

_state: dict[str, bool | None] = {"debug": False, "triton": None}
_reference: dict[str, bool] = dict.fromkeys(FAMILIES, False)


def _check_families(families: list[str], source: str) -> None:
    unknown = sorted(set(families) - set(FAMILIES))
    if unknown:
        raise ValueError(f"{source}: unknown kernel families {unknown}; known: {', '.join(FAMILIES)}")


def _env_families() -> list[str]:
    """The families ``SLERIR_REFERENCE_KERNELS`` forces to their twins (comma-separated, spaces ignored)."""
    names = [name.strip().lower() for name in os.environ.get("SLERIR_REFERENCE_KERNELS", "").split(",")]
    families = [name for name in names if name]
    _check_families(families, "SLERIR_REFERENCE_KERNELS")
    return families


def reference_forced(family: str) -> bool:
    """Whether ``family``'s reference twins are forced (``use_reference``, ``SLERIR_KERNELS=reference`` or
    ``SLERIR_REFERENCE_KERNELS``)."""
    _check_families([family], "reference_forced")
    if _reference[family] or os.environ.get("SLERIR_KERNELS", "").lower() == "reference":
        return True
    return family in _env_families()


class _Switch:
    """Set flags now; as a context manager, restore their previous values on exit."""

    def __init__(self, flags: dict, keys: tuple[str, ...], enabled: bool) -> None:
        self._flags = flags
        self._previous = {key: flags[key] for key in keys}
        flags.update(dict.fromkeys(keys, bool(enabled)))

    def __enter__(self) -> _Switch:
        return self

    def __exit__(self, *exc: object) -> None:
        self._flags.update(self._previous)


class use_reference(_Switch):  # noqa: N801 - called like a function: use_reference(True)
    """Force the PyTorch reference twins of every kernel family, or of one; ``use_reference(False)`` lifts it.

    Works as a call (``kernels.use_reference(True)``, stays in force) or as a context manager
    (``with kernels.use_reference(family="routed"):``, restores the previous setting on exit).

    Args:
        enabled: force the twins (True) or lift the forcing (False).
        family: "transposed_attention" or "routed" (``FAMILIES``); None for all of them.

    Raises:
        ValueError: for another family name.
    """

    def __init__(self, enabled: bool = True, family: str | None = None) -> None:
        if family is not None:
            _check_families([family], "use_reference")
        super().__init__(_reference, FAMILIES if family is None else (family,), enabled)


class debug_mode(_Switch):  # noqa: N801 - same calling convention as use_reference
    """Poison the Triton launchers' outputs and scratch buffers with NaN, so unwritten elements show.

    Also on with ``SLERIR_KERNELS_DEBUG=1``. Costs a fill per buffer; for tests and debugging only.
    """

    def __init__(self, enabled: bool = True) -> None:
        super().__init__(_state, ("debug",), enabled)


def debug_enabled() -> bool:
    """Whether launchers should poison their buffers (``debug_mode`` or ``SLERIR_KERNELS_DEBUG=1``)."""
    return _state["debug"] or os.environ.get("SLERIR_KERNELS_DEBUG") == "1"


def empty(shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """``torch.empty``, or a NaN-filled tensor in debug mode (-1 for integer dtypes)."""
    if debug_enabled():
        fill = float("nan") if dtype.is_floating_point else -1
        return torch.full(shape, fill, dtype=dtype, device=device)
    return torch.empty(shape, dtype=dtype, device=device)


_sm_counts: dict[int, int] = {}


def sm_count(device: torch.device) -> int:
    """Streaming multiprocessors of a CUDA device (cached); 2 elsewhere, so that the interpreter's grids still
    split the work the way a GPU's would."""
    if device.type != "cuda":
        return 2
    index = device.index if device.index is not None else torch.cuda.current_device()
    if index not in _sm_counts:
        _sm_counts[index] = torch.cuda.get_device_properties(index).multi_processor_count
    return _sm_counts[index]


def triton_available() -> bool:
    """Whether triton imports (tried once; the answer is kept)."""
    if _state["triton"] is None:
        try:
            import triton  # noqa: F401
        except Exception:  # a missing or broken triton means: use the reference
            _state["triton"] = False
        else:
            _state["triton"] = True
    return bool(_state["triton"])


def _interpreter_requested() -> bool:
    return os.environ.get("SLERIR_KERNELS", "").lower() == "triton" and os.environ.get(
        "TRITON_INTERPRET", "0"
    ).lower() in ("1", "true", "on")


def use_triton(x: torch.Tensor, family: str) -> bool:
    """Whether an op of ``family`` on tensors living where ``x`` lives should run its Triton kernel."""
    if reference_forced(family):
        return False
    if x.is_cuda:
        return triton_available()
    if x.device.type == "cpu" and _interpreter_requested():
        return triton_available()
    return False
