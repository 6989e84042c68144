"""Large blocks come from the reusable heap while a restoration holds it, and it is given back afterwards."""

from __future__ import annotations

import ctypes
import os
import resource

import pytest
import torch

from slerir_core import heap
from slerir_core.heap import reuse_freed_memory

pytestmark = pytest.mark.skipif(
    heap._LIBC is None or not hasattr(heap._LIBC, "mallinfo2"), reason="glibc 2.33 or later only"
)

BLOCK = 64 << 20  # above glibc's largest mmap threshold (32 MiB): mmap serves it by default


class MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in [
            "arena",
            "ordblks",
            "smblks",
            "hblks",
            "hblkhd",
            "usmblks",
            "fsmblks",
            "uordblks",
            "fordblks",
            "keepcost",
        ]
    ]


def mmapped_bytes_with_a_block() -> int:
    """Bytes glibc has in mmap'd blocks while one fresh block is alive."""
    heap._LIBC.mallinfo2.restype = MallInfo2
    block = torch.ones(BLOCK, dtype=torch.uint8)
    mapped = heap._LIBC.mallinfo2().hblkhd
    del block
    return mapped


def resident_bytes() -> int:
    with open(f"/proc/{os.getpid()}/statm") as fh:
        return int(fh.read().split()[1]) * resource.getpagesize()


def test_held_blocks_come_from_the_heap_where_freed_pages_stay_for_the_next():
    assert mmapped_bytes_with_a_block() >= BLOCK
    with reuse_freed_memory():
        assert mmapped_bytes_with_a_block() < BLOCK
    assert mmapped_bytes_with_a_block() >= BLOCK


def test_nested_holders_keep_the_heap_until_the_last_leaves_then_it_is_returned():
    with reuse_freed_memory():
        with reuse_freed_memory():
            mmapped_bytes_with_a_block()
        assert mmapped_bytes_with_a_block() < BLOCK  # the inner exit changed nothing
        held = resident_bytes()
    assert resident_bytes() < held - BLOCK // 2
