"""``scripts/device_session.sh --dry-run``: the GPU session's phases on the CPU, so a lent GPU is never spent
on debugging the script."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from slerir_core.checkpoint import read_metadata

SCRIPT = Path(__file__).parents[2] / "scripts" / "device_session.sh"
SHIPPED = Path(__file__).parents[2] / "slerir_core" / "weights" / "slerir-compact.safetensors"


# ~50 s on two busy cores, most of it one step of the compact model (its extractors see the image and 16
# crops of it at 224²) and the validations before and after it: not marked slow, so CI checks the GPU path.
@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_dry_run_leaves_weights_logs_and_tables_in_out(tmp_path):
    out = tmp_path / "out"
    env = {**os.environ, "OUT": str(out), "PYTHON": sys.executable}
    result = subprocess.run(
        ["bash", str(SCRIPT), "--dry-run"], env=env, capture_output=True, text=True, timeout=900, check=False
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]

    names = {p.name for p in out.iterdir()}
    assert {"model.safetensors", "train_log.csv", "val_log.csv", "train.log", "session.log", "session.json"} <= names
    # What the device tool brings back: at most 8 flat files of at most 16 MiB.
    assert len(names) <= 8 and all(p.is_file() and p.stat().st_size <= 16 * 2**20 for p in out.iterdir())

    # The shipped weights go on in the stage that trained them.
    shipped, meta = read_metadata(SHIPPED), read_metadata(out / "model.safetensors")
    stage = shipped["stage"]
    assert meta["stage"] == stage and int(meta["steps"]) > int(shipped["steps"])
    with (out / "train_log.csv").open() as fh:
        assert int(list(csv.DictReader(fh))[-1]["step"]) >= 1

    session = json.loads((out / "session.json").read_text())
    assert [p["phase"] for p in session["phases"]] == ["setup", "kernel_tests", "train", "pack", "bench"]
    assert session["dry_run"] and session["phases"][1]["status"].startswith("passed")
    log = (out / "session.log").read_text()
    assert "device_session.sh summary" in log and f"--stage {stage} --init" in log and "--time-budget 10s" in log
