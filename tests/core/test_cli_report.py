"""What ``slerir restore`` prints, run as a user's pipeline runs it (stdout and stderr captured, not a
terminal): result lines alone on stdout, the label's verdict on each, notes on stderr, no progress bars."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from slerir_core.checkpoint import save_weights
from slerir_core.config import load_config
from slerir_core.io.files import write_image
from slerir_core.model import SLERIR


@pytest.fixture
def photos(tmp_path):
    """A folder with two small RGB PNGs (two files: the per-file bar would show too)."""
    folder = tmp_path / "in"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name in ("a.png", "b.png"):
        write_image(folder / name, rng.integers(0, 256, (80, 96, 3), dtype=np.uint8))
    return folder


def run_cli(*args: str) -> subprocess.CompletedProcess:
    """``slerir`` in a fresh process, its output captured as a pipeline would."""
    return subprocess.run([sys.executable, "-m", "slerir_core.cli", *args], capture_output=True, text=True, check=False)


def slerir(*args: str) -> subprocess.CompletedProcess:
    """``run_cli`` with the untrained tiny model on the CPU."""
    return run_cli(*args, "--config", "tiny", "--device", "cpu")


def test_without_a_terminal_stdout_holds_only_result_lines_and_no_bar_is_drawn(photos, tmp_path):
    done = slerir("restore", str(photos), "-o", str(tmp_path / "out"), "--tile", "64")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("SLER-IR 'tiny' on cpu") and lines[-1].startswith("restored 2 of 2 inputs")
    results = lines[1:-1]
    assert len(results) == 2 and all(" -> " in line for line in results)
    assert "\r" not in done.stdout + done.stderr and "tile/s" not in done.stderr and "file/s" not in done.stderr
    # The untrained tiny model has no task prototypes: it says so rather than name a task.
    assert all(line.endswith("label: none (the model has no task labels))") for line in results)


def test_manual_routes_are_reported_as_manual_in_the_line_and_the_report(photos, tmp_path):
    out = tmp_path / "out"
    done = slerir("restore", str(photos / "a.png"), "-o", str(out), "--routes", "0,2,1,1,0,2,2,1", "--save-maps")
    assert done.returncode == 0, done.stderr
    (result,) = [line for line in done.stdout.splitlines() if " -> " in line]
    assert result.endswith("routes 0,2,1,1,0,2,2,1, label: manual)")
    (plan,) = json.loads((out / "a_report.json").read_text())["plans"]
    assert plan["verdict"] == {"kind": "manual", "text": "manual"}


def test_a_small_tile_is_one_note_on_stderr_with_its_tiles_against_the_default(photos, tmp_path):
    torch.manual_seed(0)
    model = SLERIR(dataclasses.replace(load_config("tiny"), tile=256, overlap=32))
    weights = save_weights(model, tmp_path / "tile256.safetensors")
    args = (str(photos / "a.png"), "--weights", str(weights), "--device", "cpu")
    small = run_cli("restore", *args, "-o", str(tmp_path / "small"), "--tile", "64", "--overlap", "16")
    assert small.returncode == 0, small.stderr
    (note,) = [line for line in small.stderr.splitlines() if line.startswith("note:")]
    assert "a.png: tile 64 cuts each 80x96 plane into 4 tiles" in note and "against 1 with the default tile 256" in note
    usual = run_cli("restore", *args, "-o", str(tmp_path / "usual"))
    assert usual.returncode == 0 and "note:" not in usual.stderr
