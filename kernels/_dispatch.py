"""Which implementation runs: the Triton kernels or their PyTorch reference twins, and the debug switch.

Rules, checked on every call (a few dictionary look-ups):

* ``SLERIR_KERNELS=reference`` or ``use_reference(True)``: always the reference.
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

_state: dict[str, bool | None] = {"reference": False, "debug": False, "triton": None}


def reference_forced() -> bool:
    """Whether the reference twins are forced (``use_reference`` or ``SLERIR_KERNELS=reference``)."""
    return _state["reference"] or os.environ.get("SLERIR_KERNELS", "").lower() == "reference"


class _Switch:
    """Set a flag now; as a context manager, restore the previous value on exit."""

    key = ""

    def __init__(self, enabled: bool = True) -> None:
        self._previous = _state[self.key]
        _state[self.key] = bool(enabled)

    def __enter__(self) -> _Switch:
        return self

    def __exit__(self, *exc: object) -> None:
        _state[self.key] = self._previous


class use_reference(_Switch):  # noqa: N801 - called like a function: use_reference(True)
    """Force the PyTorch reference twins, for debugging; ``use_reference(False)`` lifts it.

    Works as a call (``kernels.use_reference(True)``, stays in force) or as a context manager
    (``with kernels.use_reference():``, restores the previous setting on exit).
    """

    key = "reference"


class debug_mode(_Switch):  # noqa: N801 - same calling convention as use_reference
    """Poison the Triton launchers' outputs and scratch buffers with NaN, so unwritten elements show.

    Also on with ``SLERIR_KERNELS_DEBUG=1``. Costs a fill per buffer; for tests and debugging only.
    """

    key = "debug"


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


def use_triton(x: torch.Tensor) -> bool:
    """Whether an op on tensors living where ``x`` lives should run its Triton kernel."""
    if reference_forced():
        return False
    if x.is_cuda:
        return triton_available()
    if x.device.type == "cpu" and _interpreter_requested():
        return triton_available()
    return False
