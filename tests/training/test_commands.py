"""The ``slerir train`` and ``slerir evaluate`` command lines: options, how a request is resolved, and exit
code 2 with a one-line reason for an unusable request."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from slerir_core.cli import main as cli
from training.commands import add_train_arguments, parse_duration, resolve_train_args

SHIPPED = Path(__file__).parents[2] / "slerir_core" / "weights" / "slerir-compact.safetensors"


def train(*args: str) -> int:
    return cli(["train", "--config", "tiny-synthetic", *args])


def train_args(*args: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_train_arguments(parser)
    return parser.parse_args(["--config", "tiny-synthetic", *args])


# -- slerir train --------------------------------------------------------------------------------------------


def test_a_request_resolves_to_a_config_a_phase_and_a_run_folder():
    exp, phase, out = resolve_train_args(train_args("--steps", "7", "--set", "train.phase1.lr=1e-3", "data.crop=64"))
    assert phase == 1 and out == Path("runs/tiny-synthetic-phase1")
    assert exp.train.phase1.steps == 7 and exp.train.phase1.lr == 1e-3 and exp.data.crop == 64
    exp, phase, out = resolve_train_args(train_args("--phase", "2", "--steps", "3", "--out", "elsewhere"))
    assert phase == 2 and out == Path("elsewhere") and exp.train.phase2.steps == 3 and exp.train.phase1.steps == 40
    assert resolve_train_args(train_args("--set", "train.phase=2"))[1] == 2


def test_repeated_set_options_all_apply():
    exp, _, _ = resolve_train_args(
        train_args("--set", "train.seed=17", "--set", "data.crop=64", "train.phase2.lr=5e-5")
    )
    assert (exp.train.seed, exp.data.crop, exp.train.phase2.lr) == (17, 64, 5e-5)


def test_weights_train_on_in_the_phase_they_record_unless_told():
    # The shipped weights record phase 2.
    assert resolve_train_args(train_args("--init", str(SHIPPED)))[1:] == (2, Path("runs/tiny-synthetic-phase2"))
    assert resolve_train_args(train_args("--init", str(SHIPPED), "--phase", "1"))[1] == 1
    assert resolve_train_args(train_args("--init", "missing.safetensors"))[1] == 1  # load_init reports it


def test_the_old_stage_option_is_gone(capsys):
    with pytest.raises(SystemExit) as exit_info:
        train_args("--stage", "2")
    assert exit_info.value.code == 2 and "--stage" in capsys.readouterr().err


@pytest.mark.parametrize("text", ["0", "-3m", "ten", "5d", "nan", ""])
def test_bad_time_budget_is_a_usage_error(text):
    with pytest.raises(argparse.ArgumentTypeError, match="duration"):
        parse_duration(text)


def test_durations():
    assert [parse_duration(t) for t in ("90", "90s", "1.5m", "2h")] == [90.0, 90.0, 90.0, 7200.0]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--steps", "0"], "steps must be >= 1"),
        (["--device", "mps"], "mps"),
        (["--set", "data.tasks=[noise, snow]"], "snow"),
        (["--set", "train.amp=bf16"], "old name of 'precision'"),
        (["--set", "crop"], "KEY=VALUE"),
        (["--phase", "2", "--steps", "2"], "--init"),
    ],
)
def test_unusable_requests_are_one_line_and_exit_two_before_any_output(tmp_path, capsys, args, message):
    out = tmp_path / "never"
    assert train(*args, "--out", str(out)) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err and not out.exists()


@pytest.mark.parametrize("content", [b"", b"PK\x03\x04 half a zip", b"\x80\x04random"])
def test_a_broken_checkpoint_is_one_line_and_exit_two(tmp_path, capsys, content):
    out = tmp_path / "broken"
    out.mkdir()
    (out / "checkpoint.pt").write_bytes(content)
    assert train("--steps", "2", "--resume", "--out", str(out)) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "checkpoint.pt" in err and ("empty" in err or "corrupt" in err)


def test_a_failing_cpu_rank_gives_the_exit_code(tmp_path):
    out = tmp_path / "bad"
    sets = ["train.cpu_processes=2", "data.val_images=0"]
    assert train("--phase", "2", "--steps", "2", "--out", str(out), "--set", *sets) == 2


# -- slerir evaluate -----------------------------------------------------------------------------------------


def test_evaluate_command_prints_the_table(tmp_path, capsys):
    out = tmp_path / "scores.json"
    code = cli(
        [
            "evaluate",
            "--config",
            "tiny",
            "--tasks",
            "haze",
            "rain",
            "noise",
            "--images",
            "2",
            "--size",
            "64",
            "--sigmas",
            "15",
            "25",
            "--json",
            str(out),
        ]
    )
    assert code == 0
    text = capsys.readouterr().out
    for title in (
        "Dehazing",
        "Deraining",
        "Denoising σ=15",
        "Denoising σ=25",
        "Average",
        "Degraded input",
        "Classical (scikit-image)",
        "SLER-IR (tiny, untrained)",
        "7×7 uniform window",
        "Routing",
    ):
        assert title in text
    result = json.loads(out.read_text())
    assert result["columns"] == ["haze", "rain", "noise σ=15", "noise σ=25"]
    assert set(result["rows"]) == {
        "Degraded input",
        "Classical (scikit-image)",
        "NL-means (true σ)",
        "BM3D (true σ)",
        "SLER-IR (tiny, untrained)",
    }
    noisy = result["rows"]["Degraded input"]
    for reference in ("NL-means (true σ)", "BM3D (true σ)"):
        scores = result["rows"][reference]
        assert set(scores) == {"noise σ=15", "noise σ=25", "average"}
        assert all(scores[c]["psnr"] > noisy[c]["psnr"] + 3 for c in ("noise σ=15", "noise σ=25"))
    assert "NL-means and BM3D: given the true σ" in text
    assert result["rows"]["Degraded input"]["haze"]["n"] == 2
    assert set(result["routing"]) == {"haze", "rain", "noise"}
    assert result["labels"] is None  # an untrained network of a config without task labels names nothing
    assert "Mixed case (rain | noise σ=25" in text
    assert set(result["mixed"]) == {"input", "injection on", "injection off"}
    assert result["mixed"]["injection on"] != result["mixed"]["injection off"]
    assert "Grey pictures (noise σ=25 the same in every channel)" in text
    assert set(result["grey"]) == {"input", "model", "model, noise as is", "NL-means (true σ)"}
    assert result["grey"]["NL-means (true σ)"] > result["grey"]["input"] + 3


def test_evaluate_reads_real_test_folders(promptir_root, capsys):
    assert cli(["evaluate", "--data", str(promptir_root), "--sigmas", "25", "--no-baselines"]) == 0
    text = capsys.readouterr().out
    assert "Deraining" in text and "Denoising σ=25" in text and "Dehazing" not in text  # no Test/dehaze here
    assert "all images, whole images" in text


def test_evaluate_rejects_unknown_configs_and_tasks(capsys):
    assert cli(["evaluate", "--config", "nope"]) == 2
    err = capsys.readouterr().err
    assert "'tiny'" in err and "'tiny-synthetic'" in err  # both kinds of config are offered
    with pytest.raises(SystemExit) as exit_info:
        cli(["evaluate", "--tasks", "snow"])
    assert exit_info.value.code == 2 and "invalid choice: 'snow'" in capsys.readouterr().err
