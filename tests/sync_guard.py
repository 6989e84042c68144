"""A dispatch mode that fails on every op that would make the host wait for a GPU, checked on the CPU.

On a CPU a host read costs nothing, so nothing shows it; on a GPU each one stalls the host until the queue
drains. The ops caught are those that read a tensor's value to the host (``item``, ``bool``, ``int``,
``float``, ``tolist``, ``numpy``, ``torch.equal``) and those whose output shape depends on the values (``nonzero``,
``unique``, ``masked_select``, indexing with a boolean mask, ``repeat_interleave`` without ``output_size``).
"""

from __future__ import annotations

import torch
from torch.utils._python_dispatch import TorchDispatchMode

aten = torch.ops.aten

SYNCING_OPS = {
    aten._local_scalar_dense,  # item(), bool(t), int(t), float(t), tolist()
    aten.is_nonzero,
    aten.equal,
    aten.nonzero,
    aten.nonzero_static,  # fixed shape, but the CUDA kernel still reads the count back
    aten.argwhere,
    aten.masked_select,
    aten.masked_scatter,
    aten.unique_dim,
    aten.unique_consecutive,
    aten.unique_dim_consecutive,
    aten._unique,
    aten._unique2,
    aten.bincount,  # on a GPU it reads the largest value back to size its output
}
"""Op packets that synchronise whatever their arguments."""


class HostSyncError(AssertionError):
    """An op that would synchronise a GPU ran under ``forbid_host_syncs``."""


def _has_bool_index(indices: object) -> bool:
    return isinstance(indices, (list, tuple)) and any(
        isinstance(i, torch.Tensor) and i.dtype in (torch.bool, torch.uint8) for i in indices
    )


def _why_syncing(func: torch._ops.OpOverload, args: tuple, kwargs: dict) -> str | None:
    packet = func.overloadpacket
    if packet in SYNCING_OPS:
        return "reads values to the host or has a value-dependent shape"
    if packet in (aten.index, aten.index_put, aten.index_put_, aten._index_put_impl_) and _has_bool_index(args[1]):
        return "indexes with a boolean mask (a nonzero inside)"
    counted = packet is aten.repeat_interleave and func is not aten.repeat_interleave.self_int
    if counted and kwargs.get("output_size") is None:
        return "repeats by tensor counts without output_size"
    return None


def _refusing(name: str):
    def method(self: torch.Tensor, *args: object, **kwargs: object) -> None:
        raise HostSyncError(f"Tensor.{name}() reads values to the host: on a GPU the host would wait for the device")

    return method


class forbid_host_syncs(TorchDispatchMode):  # noqa: N801 - used like a function: with forbid_host_syncs():
    """Fail on the first op that would synchronise a GPU, naming it.

    Example:
        ``with forbid_host_syncs(): loss = step(batch)`` raises ``HostSyncError`` at ``bool(loss > 0)``.
    """

    # A CPU tensor's tolist() and numpy() read its memory without dispatching an op: patched while active.
    HOST_READS = ("tolist", "numpy")

    def __enter__(self) -> forbid_host_syncs:
        self._saved = {name: getattr(torch.Tensor, name) for name in self.HOST_READS}
        for name in self.HOST_READS:
            setattr(torch.Tensor, name, _refusing(name))
        return super().__enter__()

    def __exit__(self, *exc: object) -> None:
        for name, method in self._saved.items():
            setattr(torch.Tensor, name, method)
        super().__exit__(*exc)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        why = _why_syncing(func, args, kwargs)
        if why is not None:
            raise HostSyncError(f"{func} {why}: on a GPU the host would wait for the device here")
        return func(*args, **kwargs)
