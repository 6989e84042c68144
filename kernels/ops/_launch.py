"""Launch choices shared by the Triton ops: the config fields every op has, overrides, dot operands, splits.

Each op file subclasses ``LaunchConfig`` with its own fields and picks its block sizes in its own
``launch_config``; what the ops decide the same way lives here. No autotuning: the interpreter can't run it,
and fixed choices keep results bitwise reproducible.
"""

import contextlib
import dataclasses
from collections.abc import Iterator

import torch
import triton
import triton.language as tl


@dataclasses.dataclass(frozen=True, kw_only=True)
class LaunchConfig:
    """Fields every op's launch configuration has.

    Attributes:
        block_n: pixels per tile.
        num_warps: warps per program.
        num_stages: software-pipelining depth of the pixel loops.
        fp32_precision: tl.dot input precision for fp32 inputs ("tf32x3", "ieee" or "tf32").
        fp16_operands: tl.dot operand type for fp16 inputs.
    """

    block_n: int
    num_warps: int
    num_stages: int
    fp32_precision: str = "tf32x3"
    fp16_operands: tl.dtype = tl.float16


class LaunchOverrides:
    """Fields that replace those of an op's chosen configs within a ``with`` block (tests, benchmark sweeps).

    Args:
        config_type: the op's ``LaunchConfig`` subclass; only its fields can be overridden.
        kinds: the op's kinds of launch, each chosen separately (e.g. "matmul" and "dweight").
    """

    def __init__(self, config_type: type[LaunchConfig], kinds: tuple[str, ...] = ("default",)) -> None:
        self._fields = {f.name for f in dataclasses.fields(config_type)}
        self._by_kind: dict[str, dict[str, object]] = {kind: {} for kind in kinds}

    @contextlib.contextmanager
    def override(self, kind: str | None = None, **fields: object) -> Iterator[None]:
        """Within the block, replace these fields of the configs of ``kind`` (every kind when None).

        Raises:
            ValueError: for a field or kind the op does not have.
        """
        unknown = set(fields) - self._fields
        if unknown:
            raise ValueError(f"unknown launch config fields {sorted(unknown)}; known: {sorted(self._fields)}")
        if kind is not None and kind not in self._by_kind:
            raise ValueError(f"unknown launch kind {kind!r}; known: {sorted(self._by_kind)}")
        kinds = list(self._by_kind) if kind is None else [kind]
        previous = {k: dict(self._by_kind[k]) for k in kinds}
        for k in kinds:
            self._by_kind[k].update(fields)
        try:
            yield
        finally:
            self._by_kind.update(previous)

    def apply(self, config: LaunchConfig, kind: str = "default") -> LaunchConfig:
        """``config`` with the fields overridden for ``kind`` replaced."""
        fields = self._by_kind[kind]
        return dataclasses.replace(config, **fields) if fields else config


def dot_types(dtype: torch.dtype, config: LaunchConfig, device: torch.device) -> tuple[tl.dtype, str]:
    """tl.dot operand type and input precision for inputs of ``dtype``; accumulation is fp32 throughout.

    bf16: native bf16 operands (in Triton's interpreter, whose bf16 ``tl.dot`` is wrong, fp32 operands: the
    loads and stores still run in bf16). fp16: ``config.fp16_operands`` (fp32 ones run in tf32, which has
    fp16's 10-bit mantissa). fp32: ``config.fp32_precision`` ("tf32x3" on GPUs: fp32 accuracy on the tensor
    cores; "ieee" in the interpreter).
    """
    if dtype == torch.bfloat16:
        if device.type != "cuda":  # widening bf16 to fp32 is exact
            return tl.float32, config.fp32_precision
        return tl.bfloat16, "tf32"
    if dtype == torch.float16:
        return config.fp16_operands, "tf32"
    return tl.float32, config.fp32_precision


def dot_size(n: int, most: int | None = None) -> int:
    """A tl.dot operand side for ``n`` elements: the next power of two, at least 16 (tl.dot's smallest), at
    most ``most`` (then several tiles cover n)."""
    size = triton.next_power_of_2(n)
    return max(16, size if most is None else min(most, size))


def split_tiles(
    n_tiles: int, parallel: int, target_programs: int, forced: int = 0, most: int | None = None
) -> tuple[int, int]:
    """Split ``n_tiles`` pixel tiles into S contiguous runs so that S * ``parallel`` programs ≈ the target.

    Args:
        n_tiles: pixel tiles to cover.
        parallel: programs that run beside each split (e.g. (sample, head) pairs).
        target_programs: programs that fill the device.
        forced: if > 0, this many splits instead (still at most one per tile).
        most: cap on S (a grid axis limit), if any.

    Returns:
        (S, tiles per run); no run is empty.
    """
    splits = forced if forced > 0 else triton.cdiv(target_programs, parallel)
    splits = max(1, min(n_tiles, splits) if most is None else min(n_tiles, splits, most))
    per_split = triton.cdiv(n_tiles, splits)
    return triton.cdiv(n_tiles, per_split), per_split
