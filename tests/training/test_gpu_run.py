"""``scripts/gpu_run.sh --dry-run``: the prepared GPU run's phases on the CPU, so that a fixed GPU time budget is
never spent on debugging the script."""

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
from training.state import recorded_phase

SCRIPT = Path(__file__).parents[2] / "scripts" / "gpu_run.sh"
SHIPPED = Path(__file__).parents[2] / "slerir_core" / "weights" / "slerir-compact.safetensors"


def _run(*args: str, out: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OUT": str(out), "PYTHON": sys.executable}
    return subprocess.run(
        ["bash", str(SCRIPT), *args], env=env, capture_output=True, text=True, timeout=900, check=False
    )


# About a minute on two busy cores, most of it one step of the compact model (its extractors see the image and
# 16 crops of it at 224²), the validations before and after it and the restore timing: not marked slow, so CI
# checks the GPU path.
@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_dry_run_leaves_weights_logs_tables_and_measures(tmp_path):
    out = tmp_path / "out"
    result = _run("--dry-run", out=out)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]

    names = {p.name for p in out.iterdir()}
    assert {"model.safetensors", "train_log.csv", "val_log.csv", "train.log", "gpu_run.log", "gpu_run.json"} <= names
    # Eight flat files, none over the default --max-file-mib of 16.
    assert len(names) <= 8 and all(p.is_file() and p.stat().st_size <= 16 * 2**20 for p in out.iterdir())

    # The shipped weights go on in the phase that trained them.
    shipped, meta = read_metadata(SHIPPED), read_metadata(out / "model.safetensors")
    phase = str(recorded_phase(SHIPPED))
    assert meta["phase"] == phase and int(meta["steps"]) > int(shipped["steps"])
    with (out / "train_log.csv").open() as fh:
        assert int(list(csv.DictReader(fh))[-1]["step"]) >= 1

    summary = json.loads((out / "gpu_run.json").read_text())
    phases = ["setup", "kernel_tests", "train", "pack", "restore", "bench"]
    assert [p["phase"] for p in summary["phases"]] == phases
    assert summary["dry_run"] and summary["phases"][1]["status"].startswith("all: passed")
    assert summary["reference_kernels"] == []
    measures = summary["measures"]
    for key in ("warmup_s", "steady_crops_per_s", "restore_mp_per_s", "restore_s"):
        assert isinstance(measures[key], (int, float)) and measures[key] > 0, (key, measures)
    assert measures["gpu_busy_pct"] is None  # a dry run hides the GPU: nothing to sample
    assert measures["restore_image"].startswith("512x512x3 uint8")

    log = (out / "gpu_run.log").read_text()
    assert "gpu_run.sh summary" in log and f"--phase {phase} --init" in log
    assert "--time-budget 120s --out" in log and "--steps 4" in log
    assert f"train.phase{phase}.batch_size=2" in log


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
@pytest.mark.parametrize(
    ("args", "message"),
    [(["--minutes", "ten"], "--minutes expects a number"), (["--batch", "0"], "--batch expects a whole number")],
)
def test_bad_options_stop_before_any_work(tmp_path, args, message):
    out = tmp_path / "out"
    result = _run("--dry-run", *args, out=out)
    assert result.returncode == 2 and message in result.stderr
    assert not out.exists()


def test_help_describes_the_budget_as_options():
    help_text = subprocess.run(["bash", str(SCRIPT), "--help"], capture_output=True, text=True, check=True).stdout
    for option in ("--minutes", "--batch", "--max-file-mib", "--out", "--dry-run"):
        assert option in help_text
    assert "set -uo" not in help_text
