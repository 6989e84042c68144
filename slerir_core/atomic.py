"""Atomic file writes: a temporary file in the destination's folder, renamed onto it when complete.

A crash or an error mid-write leaves the destination as it was (absent, or its previous content) and no
temporary file behind. A process killed outright (``SIGKILL``, power loss) cannot clean up after itself, so
each temporary file's name records the host and process that writes it, ``.<name>.slerir-<host>-<pid>-<random>.tmp``,
and ``remove_stale_temporaries`` deletes those whose process is gone.
"""

from __future__ import annotations

import errno
import os
import re
import socket
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

_TEMPORARY = re.compile(r"^\..+\.slerir-(?P<host>.+)-(?P<pid>\d+)-[a-z0-9_]+\.tmp$")
PROBE_BYTES = 1 << 16
"""What ``prepare_folder`` writes to prove a folder takes files: an empty file fits even on a full disk."""


@contextmanager
def atomic_write(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path to write; on a clean exit it replaces ``path``, on an error it is removed.

    The file gets the permissions a plain ``open`` would give (``mkstemp`` makes it owner-only).
    """
    path = Path(path)
    prefix = f".{path.name}.slerir-{socket.gethostname()}-{os.getpid()}-"
    fd, name = tempfile.mkstemp(prefix=prefix, suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        umask = os.umask(0o022)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def prepare_folder(folder: str | Path) -> list[Path]:
    """Make sure an output folder exists and takes a file, and clear out what killed runs left in it.

    Call it before the work whose results go there, so a read-only or full folder is found first.

    Returns:
        The stale temporary files removed (``remove_stale_temporaries``).

    Raises:
        OSError: ``folder`` is a file, or cannot be created or written (read-only, full, over quota).
    """
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise NotADirectoryError(errno.ENOTDIR, "it is a file, not a folder", str(folder))
    folder.mkdir(parents=True, exist_ok=True)
    check_writable(folder)
    return remove_stale_temporaries(folder)


def check_writable(folder: str | Path) -> None:
    """Write and discard ``PROBE_BYTES`` in ``folder``.

    Raises:
        OSError: the folder is read-only, full or over quota.
    """
    with tempfile.TemporaryFile(dir=folder) as probe:  # unnamed: nothing is left if this process dies
        probe.write(b"\0" * PROBE_BYTES)
        probe.flush()
        os.fsync(probe.fileno())


def remove_stale_temporaries(folder: str | Path) -> list[Path]:
    """Delete the temporary files ``atomic_write`` left in ``folder`` when its process was killed.

    Only files written on this host by a process that no longer runs are removed: another process's write in
    progress, or a file from another host sharing the folder, is left alone.

    Returns:
        The files removed.
    """
    host = socket.gethostname()
    removed = []
    for entry in Path(folder).iterdir():
        match = _TEMPORARY.match(entry.name)
        if match is None or match["host"] != host or _running(int(match["pid"])) or not entry.is_file():
            continue
        entry.unlink(missing_ok=True)
        removed.append(entry)
    return removed


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True
