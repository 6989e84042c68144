"""The run log: CSV rows, one header when the logged terms change, trimming on resume, rank 0 alone."""

from __future__ import annotations

import csv
from pathlib import Path

from training.run_log import RunLog, log_validation, truncate_csv

VALIDATION = {
    "noise": {"psnr": 25.0, "gain": 3.0, "path": "0-1-2-0-1-2-0-1", "purity": 1.0, "stage_load": [[1.0, 0.0, 0.0]] * 8},
    "rain": {"psnr": 22.5, "gain": -0.5, "path": "1-1-1-1-1-1-1-1", "purity": 0.5, "stage_load": [[0.5, 0.5, 0.0]] * 8},
}


def rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def test_rows_are_written_with_full_precision_and_to_tensorboard(tmp_path):
    log = RunLog(tmp_path, primary=True, start_step=0)
    log.row("train_log", {"step": 1, "loss": 0.1 + 0.2}, 1)
    log.row("train_log", {"step": 2, "loss": 0.25}, 2)
    log.close()
    assert rows(tmp_path / "train_log.csv") == [{"step": "1", "loss": repr(0.1 + 0.2)}, {"step": "2", "loss": "0.25"}]
    assert any((tmp_path / "tensorboard").iterdir())


def test_a_new_logged_term_widens_the_one_header(tmp_path):
    log = RunLog(tmp_path, primary=True, start_step=0)
    log.row("train_log", {"step": 1, "loss": 0.5}, 1, scalars=False)
    log.row("train_log", {"step": 2, "loss": 0.4, "route": 0.1}, 2, scalars=False)
    log.row("train_log", {"step": 3, "route": 0.2, "loss": 0.3}, 3, scalars=False)
    lines = (tmp_path / "train_log.csv").read_text().splitlines()
    assert lines == ["step,loss,route", "1,0.5,", "2,0.4,0.1", "3,0.3,0.2"]


def test_a_resumed_log_drops_the_rows_after_its_checkpoint(tmp_path):
    first = RunLog(tmp_path, primary=True, start_step=0)
    for step in range(1, 6):
        first.row("train_log", {"step": step, "loss": 1.0 / step}, step, scalars=False)
    RunLog(tmp_path, primary=True, start_step=3)
    assert [r["step"] for r in rows(tmp_path / "train_log.csv")] == ["1", "2", "3"]
    RunLog(tmp_path, primary=True, start_step=0)  # a fresh run in the same folder
    assert rows(tmp_path / "train_log.csv") == []


def test_an_older_logs_longer_rows_are_trimmed_not_fatal(tmp_path):
    log = tmp_path / "train_log.csv"
    log.write_text("step,loss\n1,0.5\n2,0.4,0.9\n3,0.3\n")
    truncate_csv(log, 2)
    assert log.read_text().splitlines() == ["step,loss", "1,0.5", "2,0.4"]


def test_other_ranks_write_nothing(tmp_path, capsys):
    log = RunLog(tmp_path, primary=False, start_step=0)
    log.row("train_log", {"step": 1, "loss": 0.5}, 1)
    log.print("hello")
    log_validation(VALIDATION, 1, log)
    log.close()
    assert list(tmp_path.iterdir()) == [] and capsys.readouterr().err == ""


def test_validation_prints_a_table_and_logs_a_row_per_task(tmp_path, capsys):
    log = RunLog(tmp_path, primary=True, start_step=0)
    log_validation(VALIDATION, 10, log)
    written = rows(tmp_path / "val_log.csv")
    assert [(r["step"], r["task"], r["path"]) for r in written] == [
        ("10", "noise", "0-1-2-0-1-2-0-1"),
        ("10", "rain", "1-1-1-1-1-1-1-1"),
    ]
    assert written[1]["load_enc1"] == "0.50/0.50/0.00" and written[1]["load_refine"] == "0.50/0.50/0.00"
    err = capsys.readouterr().err
    assert "step 10 validation" in err and "22.50 dB ( -0.50)" in err and "purity 0.50" in err
    log_validation(VALIDATION, 20, log, final=True)  # printed, not logged
    assert "step 20 final validation" in capsys.readouterr().err
    assert {r["step"] for r in rows(tmp_path / "val_log.csv")} == {"10"}
    log.close()
