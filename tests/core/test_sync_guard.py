"""The test helper that fails on ops which would make the host wait for a GPU."""

from __future__ import annotations

import pytest
import torch
from sync_guard import HostSyncError, forbid_host_syncs

t = torch.tensor([0.5, -1.0, 2.0])
SYNCING = {
    "item": lambda: t.sum().item(),
    "bool": lambda: bool((t > 0).any()),
    "int": lambda: int(t.argmax()),
    "float": lambda: float(t[0]),
    "tolist": lambda: t.tolist(),
    "boolean mask": lambda: t[t > 0],
    "boolean mask assignment": lambda: t.clone().__setitem__(t > 0, 0.0),
    "nonzero": lambda: t.nonzero(),
    "unique": lambda: t.unique(),
    "masked_select": lambda: t.masked_select(t > 0),
    "equal": lambda: torch.equal(t, t),
    "repeat_interleave by counts": lambda: torch.tensor([1, 2]).repeat_interleave(torch.tensor([2, 1])),
}
FREE = {
    "where": lambda: torch.where(t > 0, t, 0.0),
    "index_select": lambda: t.index_select(0, torch.tensor([2, 0])),
    "integer index": lambda: t[torch.tensor([1, 1])],
    "repeat_interleave by a number": lambda: t.repeat_interleave(2),
    "reductions": lambda: (t > 0).any() & (t.sum() > 0),
}


@pytest.mark.parametrize("op", SYNCING)
def test_catches_ops_that_read_back_or_size_by_value(op):
    with pytest.raises(HostSyncError), forbid_host_syncs():
        SYNCING[op]()


@pytest.mark.parametrize("op", FREE)
def test_lets_fixed_shape_device_side_ops_through(op):
    with forbid_host_syncs():
        FREE[op]()


def test_restores_host_reads_on_exit():
    with pytest.raises(HostSyncError), forbid_host_syncs():
        t.tolist()
    assert t.tolist() == [0.5, -1.0, 2.0] and bool(t[0] > 0)
