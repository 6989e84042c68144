"""Atomic writes (all or nothing, ordinary permissions) and output folders (checked before any work, cleared
of the temporary files a killed writer left)."""

from __future__ import annotations

import errno
import os
import resource
import socket
import stat
import subprocess
import sys
import textwrap

import pytest

from slerir_core.atomic import PROBE_BYTES, atomic_write, prepare_folder, remove_stale_temporaries


def test_replaces_the_file_with_ordinary_permissions(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")
    umask = os.umask(0o022)
    try:
        with atomic_write(target) as tmp:
            assert tmp.parent == tmp_path and tmp != target
            tmp.write_text("new")
            assert target.read_text() == "old"  # untouched until the block ends
    finally:
        os.umask(umask)
    assert target.read_text() == "new"
    assert stat.S_IMODE(target.stat().st_mode) == 0o644
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.txt"]


def test_an_error_keeps_the_old_file_and_leaves_nothing_behind(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError, match="disk full"), atomic_write(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("disk full")
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.txt"]


def run_python(code: str, file_size_limit: int | None = None) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter, optionally with a file size limit (writes past it fail with EFBIG,
    as they would on a full disk: Python ignores SIGXFSZ)."""

    def limit() -> None:
        if file_size_limit is not None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (file_size_limit, file_size_limit))

    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, preexec_fn=limit, check=False
    )


def test_a_writer_killed_mid_write_leaves_a_temporary_that_the_next_run_removes(tmp_path):
    killed = run_python(
        f"""
        import os, signal
        from slerir_core.atomic import atomic_write
        with atomic_write({str(tmp_path / "x_restored.tif")!r}) as tmp:
            tmp.write_bytes(b"x" * 1_000_000)
            os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    assert killed.returncode == -9
    (left,) = tmp_path.iterdir()
    assert left.name.startswith(".x_restored.tif.slerir-") and left.stat().st_size == 1_000_000
    assert remove_stale_temporaries(tmp_path) == [left]
    assert list(tmp_path.iterdir()) == []


def test_temporaries_of_running_processes_other_hosts_and_other_tools_are_kept(tmp_path):
    other_host = tmp_path / ".a.png.slerir-elsewhere-1-abcdefgh.tmp"
    foreign = [tmp_path / ".a.png.abcdefgh.tmp", tmp_path / ".hidden", other_host]
    for path in foreign:
        path.write_bytes(b"x")
    with atomic_write(tmp_path / "b.png") as tmp:
        tmp.write_bytes(b"in progress")
        assert remove_stale_temporaries(tmp_path) == []  # this process is alive and writing it
        assert tmp.is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([p.name for p in foreign] + ["b.png"])
    assert socket.gethostname() != "elsewhere"


def test_prepare_folder_creates_checks_and_cleans(tmp_path):
    folder = tmp_path / "a" / "b"
    assert prepare_folder(folder) == [] and folder.is_dir() and list(folder.iterdir()) == []
    a_file = tmp_path / "file.png"
    a_file.write_bytes(b"")
    with pytest.raises(NotADirectoryError, match="a file, not a folder"):
        prepare_folder(a_file)
    with pytest.raises(NotADirectoryError):
        prepare_folder(a_file / "sub")


def test_prepare_folder_finds_a_folder_that_cannot_take_a_file(tmp_path):
    """A write limit below the probe's size stands in for a full disk: the same error, before any work."""
    result = run_python(
        f"""
        from slerir_core.atomic import prepare_folder
        try:
            prepare_folder({str(tmp_path)!r})
        except OSError as err:
            print(err.errno)
        """,
        file_size_limit=PROBE_BYTES // 2,
    )
    assert result.stdout.strip() == str(errno.EFBIG), result.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes to read-only folders")
def test_prepare_folder_refuses_a_read_only_folder(tmp_path):
    tmp_path.chmod(0o555)
    try:
        with pytest.raises(PermissionError):
            prepare_folder(tmp_path)
    finally:
        tmp_path.chmod(0o755)
