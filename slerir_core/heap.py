"""Keep freed memory for reuse while a restoration runs (glibc's malloc; elsewhere nothing changes).

glibc serves blocks above its mmap threshold with fresh ``mmap`` pages and unmaps them when they are freed, so
every feature map of a large tile faults in all of its pages anew: 247,000 page faults for one 512² RGB
restoration. While ``reuse_freed_memory`` is held, large blocks come from the heap and freed ones stay there
for the next (136,000 faults, most of them the first touch of the working set); when the last holder leaves,
the defaults come back and ``malloc_trim`` returns the free pages to the system, so an idle napari keeps no
more memory than before.
Training steps allocate maps small enough to be reused already (100 faults a step) and do not use it.
"""

from __future__ import annotations

import ctypes
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager

# mallopt parameters and glibc's defaults (malloc/malloc.c).
M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4
DEFAULT_TRIM_THRESHOLD, DEFAULT_MMAP_MAX = 128 * 1024, 65536
KEEP_ALL = 2**31 - 1  # the largest int mallopt takes: never trim

_lock = threading.Lock()
_holders = 0


def _glibc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None)
    except OSError:
        return None
    # musl has no gnu_get_libc_version, and its mallopt does nothing.
    glibc = all(hasattr(libc, name) for name in ("gnu_get_libc_version", "mallopt", "malloc_trim"))
    return libc if glibc else None


_LIBC = _glibc()


@contextmanager
def reuse_freed_memory() -> Iterator[None]:
    """While held (by any thread, nested or not), freed blocks stay in the process for the next tensor."""
    global _holders
    with _lock:
        _holders += 1
        if _holders == 1 and _LIBC is not None:
            _LIBC.mallopt(M_MMAP_MAX, 0)
            _LIBC.mallopt(M_TRIM_THRESHOLD, KEEP_ALL)
    try:
        yield
    finally:
        with _lock:
            _holders -= 1
            if _holders == 0 and _LIBC is not None:
                _LIBC.mallopt(M_MMAP_MAX, DEFAULT_MMAP_MAX)
                _LIBC.mallopt(M_TRIM_THRESHOLD, DEFAULT_TRIM_THRESHOLD)
                _LIBC.malloc_trim(0)
