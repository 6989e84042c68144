"""A training step replayed as one CUDA graph: forward, backward and optimiser step in a single launch.

The compact model on a GPU is bound by launches and host work, not arithmetic: a step dispatches thousands of
small kernels. Once a step has fixed shapes and never reads a value back to the host, it can be recorded
once and replayed: every later step is one graph launch plus copying the batch into the recorded inputs.

Anything that breaks capture (an op that synchronises, a shape that changes, an allocator that refuses)
falls back to eager steps with one warning: a run is never lost to capture.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence

import torch

Step = Callable[[Sequence[torch.Tensor]], dict[str, torch.Tensor]]


class CapturedStep:
    """Run ``step(batch)`` eagerly, or on CUDA as a recorded graph replayed for each batch.

    ``step`` must take a fixed-shape batch of tensors and return a dict of tensors (the loss terms), and read
    nothing back to the host. Its outputs are the graph's own tensors: read them before the next call.

    Args:
        step: the training step.
        capture: record and replay on CUDA (ignored elsewhere).
        warmup: eager steps before recording, on a side stream, as CUDA graphs require (they also
            initialise the optimiser's state and let cuDNN and Triton pick their kernels).
    """

    def __init__(self, step: Step, capture: bool, warmup: int = 3) -> None:
        self._step = step
        self._capture = capture
        self._warmup = warmup
        self._calls = 0
        self._graph: torch.cuda.CUDAGraph | None = None
        self._inputs: list[torch.Tensor] = []
        self._outputs: dict[str, torch.Tensor] = {}

    @property
    def captured(self) -> bool:
        """Whether steps replay a recorded graph."""
        return self._graph is not None

    def invalidate(self) -> None:
        """Record again at the next call: for when what the step computes changes (a new loss term)."""
        self._graph, self._inputs, self._outputs = None, [], {}
        self._calls = 0

    def __call__(self, batch: Sequence[torch.Tensor]) -> dict[str, torch.Tensor]:
        """One training step on ``batch``; returns the step's outputs."""
        if not self._capture or not batch[0].is_cuda:
            return self._step(batch)
        if self._graph is not None:
            for static, new in zip(self._inputs, batch, strict=True):
                static.copy_(new, non_blocking=True)
            self._graph.replay()
            return self._outputs
        self._calls += 1
        if self._calls <= self._warmup:
            return self._on_side_stream(batch)
        try:
            return self._record(batch)
        except Exception as err:  # any refusal of capture: eager from now on
            warnings.warn(f"training step not captured as a CUDA graph ({err}); running eagerly", stacklevel=2)
            self._capture = False
            torch.cuda.synchronize()
            return self._step(batch)

    def _on_side_stream(self, batch: Sequence[torch.Tensor]) -> dict[str, torch.Tensor]:
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            out = self._step(batch)
        torch.cuda.current_stream().wait_stream(side)
        return out

    def _record(self, batch: Sequence[torch.Tensor]) -> dict[str, torch.Tensor]:
        self._inputs = [t.clone() for t in batch]
        graph = torch.cuda.CUDAGraph()
        torch.cuda.synchronize()
        with torch.cuda.graph(graph):
            self._outputs = self._step(self._inputs)
        self._graph = graph
        graph.replay()  # recording ran nothing: this is the step itself
        return self._outputs
