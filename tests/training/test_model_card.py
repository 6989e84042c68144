"""The model card's measured sections: the training record from the weights' metadata, the evaluation and
routing tables from ``slerir evaluate --json``."""

from __future__ import annotations

import json

from slerir_core.checkpoint import save_weights
from slerir_core.cli import main as cli
from training.model_card import evaluation_table, routing_table, training_record
from training.model_card import main as model_card

HISTORY = {"steps": 40, "crops": 400, "hours": {"cpu": 0.5, "gpu": 0.25}, "hardware": ["a CPU"], "run_dates": ["d1"]}
CONFIG = json.dumps({"name": "tiny"})


def test_the_training_record_names_the_phase_in_new_and_old_metadata():
    for key in ("phase", "stage"):  # weights written before training stages were called phases say "stage"
        lines = training_record({key: "2", "run": "r", "config": CONFIG, "history": json.dumps(HISTORY)})
        assert "| training run | `r`, phase 2 |" in lines
    lines = training_record({"config": CONFIG, "history": json.dumps(HISTORY)})
    assert "| training run | `?`, phase ? |" in lines
    assert "| training hours | CPU 0.50 h, GPU 0.25 h |" in lines and "| crops seen | 400 |" in lines


def test_a_blend_gets_its_own_row():
    history = {**HISTORY, "blend": {"alpha": 0.25, "base_steps": 17}}
    lines = training_record({"phase": "2", "config": CONFIG, "history": json.dumps(history)})
    assert any("0.25 × these weights + 0.75 × the weights of step 17" in line for line in lines)
    assert not any("blend" in line for line in training_record({"config": CONFIG, "history": json.dumps(HISTORY)}))


def test_the_evaluation_table_gives_the_gains_over_the_input_and_the_best_other_row():
    def score(psnr):
        return {"psnr": psnr, "ssim": 0.5}

    result = {
        "columns": ["haze", "noise σ=25"],
        "rows": {
            "Degraded input": {"haze": score(15.0), "noise σ=25": score(20.0)},
            "Classical (scikit-image)": {"haze": score(17.0), "noise σ=25": score(26.0)},
            "BM3D (true σ)": {"noise σ=25": score(29.0)},
            "SLER-IR (w.safetensors)": {"haze": score(21.0), "noise σ=25": score(28.0)},
        },
    }
    lines = evaluation_table(result)
    assert lines[0].startswith("| task | degraded input | Classical (scikit-image) | BM3D (true σ) | this model |")
    assert lines[2] == "| Dehazing | 15.00 / 0.500 | 17.00 / 0.500 | — | 21.00 / 0.500 | +6.00 | +4.00 |"
    assert lines[3].endswith("| +8.00 | -1.00 |") and lines[3].startswith("| Denoising σ=25 |")


def test_the_routing_table_counts_distinct_paths():
    routing = {"haze": {"path": "0-0", "purity": 1.0}, "rain": {"path": "0-0", "purity": 0.75}}
    lines = routing_table({"routing": routing, "mixed": None, "labels": {"haze": 0.9}})
    assert "| Deraining | `0-0` | 0.75 | — |" in lines and "| Dehazing | `0-0` | 1.00 | 90% |" in lines
    assert "\nDistinct paths: 1." in lines and not any("Mixed case" in line or "Grey" in line for line in lines)


def test_model_card_sections_come_from_the_weights_and_the_evaluation(tmp_path, tiny_model, capsys):
    weights = save_weights(tiny_model, tmp_path / "w.safetensors", run="r", phase="1", history=json.dumps(HISTORY))
    scores = tmp_path / "eval.json"
    args = ["--tasks", "haze", "noise", "--images", "1", "--size", "32", "--sigmas", "25", "--json", str(scores)]
    assert cli(["evaluate", "--weights", str(weights), *args]) == 0
    capsys.readouterr()
    model_card(["--weights", str(weights), "--eval", str(scores)])
    text = capsys.readouterr().out
    assert "| optimiser steps | 40 |" in text and "CPU 0.50 h" in text and "d1" in text and "phase 1" in text
    assert "| Dehazing |" in text and "| Denoising σ=25 |" in text and "BM3D (true σ)" in text
    assert "Distinct paths:" in text and "Mixed case" in text and "Grey pictures" in text
