"""Atomic writes: all or nothing, no temporary files left, ordinary permissions."""

from __future__ import annotations

import os
import stat

import pytest

from slerir_core.atomic import atomic_write


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
