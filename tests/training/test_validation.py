"""Validation during training: which held-out images, what it measures, and the timed validation."""

from __future__ import annotations

import csv

import pytest
import torch

from slerir_core.model import SLERIR
from training.config import load_experiment, with_overrides
from training.phase import configure_phase
from training.run_log import RunLog
from training.runtime import Runtime
from training.validation import timed_validation, validate, validation_cases


@pytest.fixture(scope="module")
def exp():
    return with_overrides(load_experiment("tiny-synthetic"), **{"data.val_images": 1, "data.noise_sigmas": [15, 50]})


def test_generated_cases_cover_every_task_and_noise_level(exp):
    cases = validation_cases(exp)
    assert [c.column for c in cases] == ["noise σ=15", "noise σ=50", "rain", "haze", "blur", "lowlight"]
    assert all(c.degraded.shape == (32, 32, 3) for c in cases)
    assert validation_cases(with_overrides(exp, **{"data.val_images": 0})) == []


def test_folder_data_validates_on_the_test_folders_present(exp, promptir_root):
    folders = with_overrides(
        exp,
        **{
            "data.type": "folders",
            "data.root": str(promptir_root),
            "data.tasks": ["noise", "rain", "haze", "lowlight"],
            "train.steps_per_epoch": None,
        },
    )
    assert {c.task for c in validation_cases(folders)} == {"noise", "rain"}  # no Test/dehaze, no low-light test


def test_validate_measures_each_task_and_leaves_the_model_as_it_was(exp):
    torch.manual_seed(0)
    model = SLERIR(exp.model)
    configure_phase(model, 1)
    results = validate(model, validation_cases(exp), torch.device("cpu"))
    assert list(results) == list(exp.data.tasks)
    noise = results["noise"]
    assert noise["n"] == 2 and noise["purity"] in (0.5, 1.0) and len(noise["path"].split("-")) == 8
    assert all(abs(sum(load) - 1) < 1e-6 for load in noise["stage_load"])
    assert all(0 < r["psnr"] < 100 and r["psnr"] - r["gain"] > 0 for r in results.values())
    assert model.training and model.routing == "soft"


def test_timed_validation_logs_on_rank_zero_and_restores_the_phases_mode(exp, tmp_path):
    torch.manual_seed(0)
    model = SLERIR(exp.model)
    configure_phase(model, 2)
    cases = validation_cases(exp)[:2]
    quiet = RunLog(tmp_path / "rank1", primary=False, start_step=0)
    assert timed_validation(model, cases, 5, Runtime(rank=1, world_size=2), quiet, 2) == 0.0
    assert timed_validation(model, [], 5, Runtime(), quiet, 2) == 0.0
    log = RunLog(tmp_path, primary=True, start_step=0)
    assert timed_validation(model, cases, 5, Runtime(), log, 2) > 2.0  # the time taken, with a margin
    log.close()
    with (tmp_path / "val_log.csv").open() as fh:
        assert [(r["step"], r["task"]) for r in csv.DictReader(fh)] == [("5", "noise")]
    assert model.training and not any(m.training for m in model.routing_modules())
