"""The training state of a run: what ``checkpoint.pt`` holds and how it is written and read back, and the
training record (history) that a run's weights carry from run to run.

The RNG states are stored as plain containers and read with ``weights_only=True``, so resuming a run never
unpickles arbitrary objects from the run folder.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from slerir_core.atomic import atomic_write
from slerir_core.errors import first_line
from slerir_core.model import SLERIR

STATE_FORMAT = "slerir-train-state-1"
CHECKPOINT = "checkpoint.pt"
# Where a weights file's metadata or a training state records its training phase; files written before the
# training stages were called phases say "stage".
PHASE_KEYS = ("phase", "stage")


class TrainError(ValueError):
    """A training job that cannot run as asked (missing initial weights, a run folder already in use, ...)."""


def rng_state() -> dict[str, Any]:
    """Python, NumPy and torch RNG states as plain containers (loadable with ``weights_only=True``)."""
    kind, key, pos, has_gauss, gauss = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": {
            "kind": kind,
            "key": key.tolist(),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "gauss": float(gauss),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Set the Python, NumPy and torch RNGs to a state from ``rng_state``."""
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
    n = state["numpy"]
    np.random.set_state((n["kind"], np.asarray(n["key"], dtype=np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def save_state(path: Path, state: dict[str, Any]) -> None:
    """``torch.save`` to a temporary file in the same folder, then ``os.replace``: never a half-written file."""
    with atomic_write(path) as tmp:
        torch.save(state, tmp)


def load_state(path: Path) -> dict[str, Any]:
    """Read a training state written by ``save_state``.

    Raises:
        TrainError: an empty, truncated or corrupt file, or not a SLER-IR training state.
    """
    if path.stat().st_size == 0:
        raise TrainError(f"{path} is empty (0 bytes); delete it to start the phase over")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch.load raises many types for a damaged file (EOF, unpickling, zip, index)
        raise TrainError(
            f"{path} is truncated or corrupt ({first_line(err)}); delete it to start the phase over, "
            "or start from model.safetensors with --init"
        ) from None
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
        raise TrainError(f"{path} is not a SLER-IR training state ({STATE_FORMAT})")
    return state


def state_digest(model: nn.Module) -> str:
    """SHA-256 of every parameter and buffer, to check that ranks hold identical models."""
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def load_init(model: SLERIR, path: str | Path) -> dict[str, Any]:
    """Load weights to start from: a ``.safetensors`` weights file or a training ``checkpoint.pt``.

    Returns:
        The training history those weights carry (steps, crops, hours, hardware, run dates), fresh if none.

    Raises:
        TrainError: if the file is missing or its tensors do not fit the model (another config).
    """
    from slerir_core.checkpoint import read_metadata
    from slerir_core.errors import WeightsError

    path = Path(path)
    if not path.is_file():
        raise TrainError(f"initial weights {path} do not exist (phase 2 starts from phase-1 weights)")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            history = json.loads(read_metadata(path).get("history", "{}"))
            state = load_file(str(path))
        else:
            saved = torch.load(path, map_location="cpu", weights_only=True)
            history, state = saved.get("history", {}), saved["model"]
    except (WeightsError, OSError, RuntimeError, KeyError, json.JSONDecodeError) as err:
        raise TrainError(f"cannot read initial weights {path}: {err}") from None
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise TrainError(f"{path} does not fit this config's model: {err}") from None
    # Training on from a blend makes weights of their own: the record keeps the steps and hours, not the blend.
    history.pop("blend", None)
    return as_history(history)


def phase_of(record: Mapping[str, Any]) -> int | None:
    """The training phase (1 or 2) a weights file's metadata or a training state records, ``None`` where it
    does not say."""
    value = next((record[key] for key in PHASE_KEYS if key in record), None)
    return int(value) if str(value) in ("1", "2") else None


def recorded_phase(path: str | Path) -> int | None:
    """The training phase that produced a weights file or a training state, ``None`` where it does not say
    (or cannot be read: ``load_init`` reports that)."""
    from slerir_core.checkpoint import read_metadata
    from slerir_core.errors import WeightsError

    path = Path(path)
    try:
        if path.suffix == ".safetensors":
            record = read_metadata(path)
        else:
            # Memory-mapped: only the small entries are read, not the tensors load_init reads next.
            record = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except (WeightsError, OSError, RuntimeError):
        return None
    return phase_of(record) if isinstance(record, Mapping) else None


def new_history() -> dict[str, Any]:
    """The training record carried from run to run: optimiser steps, crops seen, device-hours per kind of
    hardware, the hardware and the dates of the training runs (UTC)."""
    return {"steps": 0, "crops": 0, "hours": {}, "hardware": [], "run_dates": []}


def as_history(record: Mapping[str, Any]) -> dict[str, Any]:
    """A training record as read from a weights file or a checkpoint, completed with ``new_history``'s keys;
    files written before ``run_dates`` had its name hold the dates under ``sessions``."""
    record = dict(record)
    if "sessions" in record:
        record.setdefault("run_dates", record.pop("sessions"))
    return {**new_history(), **record}
