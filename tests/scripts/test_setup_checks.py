"""The checks of ``scripts/setup.sh`` and ``scripts/test.sh`` that keep a set-up from half-installing: every
system package is checked on its own, and the test command stops with one line when Qt's xcb plugin cannot load.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).parents[2] / "scripts"

pytestmark = pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")


def _source_and_call(script: str, call: str, stdin: str = "", env: dict[str, str] | None = None):
    """Source a script (which then only defines its functions) and run one shell line with them."""
    return subprocess.run(
        ["bash", "-c", f'source "$1" && {call}', "bash", str(SCRIPTS / script)],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=env,
    )


@pytest.mark.skipif(shutil.which("dpkg-query") is None, reason="needs a Debian system")
def test_setup_names_exactly_the_packages_that_are_not_installed():
    result = _source_and_call("setup.sh", "missing_packages bash slerir-no-such-package coreutils")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["slerir-no-such-package"]


def test_ldd_listing_gives_the_missing_libraries():
    listing = (
        "\tlinux-vdso.so.1 (0x00007ffd5a3f1000)\n"
        "\tlibxcb-icccm.so.4 => not found\n"
        "\tlibxcb-cursor.so.0 => /lib/x86_64-linux-gnu/libxcb-cursor.so.0 (0x00007f40eabee000)\n"
        "\tlibxcb-keysyms.so.1 => not found\n"
    )
    result = _source_and_call("test.sh", "missing_libraries", stdin=listing)
    assert result.stdout.split() == ["libxcb-icccm.so.4", "libxcb-keysyms.so.1"]


@pytest.mark.skipif(importlib.util.find_spec("PyQt6") is None, reason="needs PyQt6 (the gui extra)")
def test_preflight_passes_with_this_environments_qt():
    result = _source_and_call("test.sh", f'qt_preflight "{sys.executable}"')
    assert result.returncode == 0, result.stderr


@pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc to build a plugin with a missing library")
def test_preflight_fails_in_one_line_naming_the_missing_library(tmp_path):
    # A stand-in PyQt6 whose xcb plugin links a library that is then removed, as on a machine lacking one.
    platforms = tmp_path / "PyQt6" / "Qt6" / "plugins" / "platforms"
    platforms.mkdir(parents=True)
    (tmp_path / "PyQt6" / "__init__.py").write_text("")
    (tmp_path / "gone.c").write_text("int gone(void) { return 1; }\n")
    (tmp_path / "plugin.c").write_text("int gone(void);\nint plugin(void) { return gone(); }\n")
    gone = tmp_path / "libslerirgone.so"
    subprocess.run(["gcc", "-shared", "-fPIC", "-o", str(gone), str(tmp_path / "gone.c")], check=True)
    subprocess.run(
        ["gcc", "-shared", "-fPIC", "-o", str(platforms / "libqxcb.so"), str(tmp_path / "plugin.c"),
         f"-L{tmp_path}", "-lslerirgone", "-Wl,--no-as-needed"],
        check=True,
    )  # fmt: skip
    gone.unlink()

    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    result = _source_and_call("test.sh", f'qt_preflight "{sys.executable}"', env=env)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "missing libslerirgone.so" in lines[0]


def test_preflight_reports_a_missing_pyqt6(tmp_path):
    # A python that finds no PyQt6: with -S it reads no site-packages, only the standard library.
    python = tmp_path / "python"
    python.write_text(f'#!/bin/sh\nexec "{sys.executable}" -S "$@"\n')
    python.chmod(0o755)
    result = _source_and_call("test.sh", f'qt_preflight "{python}"')
    assert result.returncode == 1 and "PyQt6 is not installed" in result.stderr
