"""The plugin's adaptation job: fine-tune the model on a layer's own noisy data, in a worker, into a weights file.

The job adapts a copy of the loaded model (``slerir_core.adaptation``) and yields after every step, so Cancel
stops it at once; a cancelled job writes nothing and leaves the model in use as it was. A finished one writes
the adapted weights, atomically, to the adapted-weights folder, and the main thread then makes them the model
the widgets use.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Generator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from slerir_plugin._state import STATE, ModelSpec, channels_option
from slerir_plugin._workers import Failed, ProgressUpdate, Status, Update, _failure, _load


def adapted_folder() -> Path:
    """Where the plugin keeps adapted weights: ``$XDG_CACHE_HOME/slerir/adapted``, or ``~/.cache/slerir/adapted``."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "slerir" / "adapted"


def adapted_path(layer_name: str) -> Path:
    """A new file name for weights adapted to a layer: its name (made file-safe) and the time."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", layer_name).strip("._") or "layer"
    return adapted_folder() / f"{stem}-{time.strftime('%Y%m%d-%H%M%S')}.safetensors"


@dataclass(frozen=True)
class AdaptJob:
    """What to adapt on, and how long."""

    image: Any
    axes: str
    spec: ModelSpec
    minutes: float
    layer_name: str


@dataclass(frozen=True)
class AdaptDone:
    """A finished adaptation: the weights file written and what was done (``AdaptResult``)."""

    weights: Path
    result: Any
    seconds: float


def adapt_job(job: AdaptJob) -> Generator[Update, None, AdaptDone | Failed]:
    """Load the model, adapt a copy of it to the layer, write the weights.

    Yields:
        :class:`Status` (the held-out loss after each measurement) and :class:`ProgressUpdate` (thousandths
        of the time budget).
    """
    start = time.perf_counter()
    try:
        yield from _load(job.spec)  # first: loading the model keeps Triton clear of the viewer's LLVM
        from slerir_core.adaptation import AdaptSettings, adapt_steps, budget_fraction
        from slerir_core.checkpoint import save_weights

        restorer = STATE.restorer(job.spec)
        yield Status("Adapting: reading the layer…")
        steps = adapt_steps(
            restorer, [np.asarray(job.image)], AdaptSettings(minutes=job.minutes), job.axes, channels_option(job.axes)
        )
        restoring = False
        try:
            while True:
                try:
                    update = next(steps)
                except StopIteration as done:
                    model, result = done.value
                    break
                yield ProgressUpdate(int(1000 * budget_fraction(update)), 1000)
                if update.step == 0 and update.held_out_loss is None:
                    if not restoring:  # once, though the restoration reports every pass
                        restoring = True
                        yield Status("Adapting: restoring the layer with the current weights first…")
                elif update.held_out_loss is not None:
                    yield Status(
                        f"Adapting… step {update.step}: held-out loss {update.held_out_loss:.5f} "
                        f"(best {update.best_loss:.5f})"
                    )
        finally:
            steps.close()  # a cancelled job stops adapting too
        out = adapted_path(job.layer_name)
        out.parent.mkdir(parents=True, exist_ok=True)
        save_weights(model, out, **result.metadata(restorer.weights or job.spec.describe()))
    except Exception as err:
        failed = _failure(err)
        if failed is None:
            raise
        return failed
    return AdaptDone(out, result, time.perf_counter() - start)
