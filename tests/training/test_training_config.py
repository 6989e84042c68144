"""Training configs: loading, overrides, the old keys' conversion, and clear errors for bad values."""

from __future__ import annotations

import pytest
import yaml

from slerir_core.errors import ConfigError
from training.config import (
    TRAIN_CONFIG_DIR,
    convert_old_keys,
    experiment_from_dict,
    list_experiments,
    load_experiment,
    with_overrides,
)

TINY = {"name": "x", "model": "tiny", "train": {"steps_per_epoch": 5}}


def test_a_named_config_loads_with_the_model_tasks_from_the_data():
    exp = load_experiment("tiny-synthetic")
    assert exp.model.name == "tiny" and exp.model.tasks == exp.data.tasks
    assert exp.train.phase == 1 and exp.train.precision == "auto"
    assert exp.train.phase_config(1) is exp.train.phase1 and exp.train.phase_config(2) is exp.train.phase2
    assert exp.train.phase1.steps == 40 and exp.train.phase2.steps == 20
    assert "tiny-synthetic" in list_experiments()


def test_the_resolved_yaml_loads_back_as_the_same_config(tmp_path):
    exp = load_experiment("compact-synthetic-cpu")
    path = tmp_path / "config.yaml"
    path.write_text(exp.to_yaml())
    again = load_experiment(path)
    assert again.to_dict() == exp.to_dict()
    assert exp.to_yaml().startswith(f"# Resolved from {exp.source}")


def test_a_model_entry_overrides_its_base_key_by_key():
    exp = experiment_from_dict({**TINY, "model": {"base": "tiny", "dim": 16}})
    assert exp.model.dim == 16 and exp.model.name == "tiny"


def test_overrides_replace_dotted_keys_and_revalidate():
    exp = load_experiment("tiny-synthetic")
    changed = with_overrides(exp, **{"train.phase1.lr": 1e-3, "model.dim": 16, "train.precision": "fp32"})
    assert changed.train.phase1.lr == 1e-3 and changed.model.dim == 16 and changed.train.precision == "fp32"
    assert changed.model.tasks == exp.data.tasks and changed.source == exp.source
    assert exp.train.phase1.lr != 1e-3  # the original is untouched


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"data.tasks": ["noise", "snow"]}, r"unknown task.*snow"),
        ({"foo.bar": 1}, "'foo' is not a section"),
        ({"train.phase1.lr.x": 1}, r"'train\.phase1\.lr' is not a section"),
        ({"train.phase": 3}, "phase must be 1 or 2"),
        ({"train.precision": "fp16"}, "precision must be one of"),
        ({"train.phase1.steps": 0}, "steps must be >= 1"),
        ({"data.crop": 20}, "multiple of 8"),
        ({"data.route_groups": [["noise", "micro_noise"]]}, "micro_noise"),
        ({"data.route_groups": [["noise", "rain"], ["rain"]]}, "one per task"),
        ({"data.route_groups": [[]]}, "empty"),
        # The command line speaks the new names only: the conversion is for files.
        ({"train.stage1.lr": 1e-3}, r"'train\.stage1' is not a section"),
        ({"train.amp": "bf16"}, "'amp' is the old name of 'precision'"),
    ],
)
def test_bad_values_are_errors_naming_the_key(changes, message):
    with pytest.raises(ConfigError, match=message):
        with_overrides(load_experiment("tiny-synthetic"), **changes)


def test_bad_files_are_errors_naming_the_key(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nmodel: {base: tiny, dimm: 4}\ntrain: {steps_per_epoch: 5}\n")
    with pytest.raises(ConfigError, match="dimm"):
        load_experiment(bad)
    bad.write_text("name: x\nmodel: tiny\ndata: {type: synthetic}\n")
    with pytest.raises(ConfigError, match="steps_per_epoch"):
        load_experiment(bad)
    bad.write_text("name: x\nmodel: tiny\ntrain: {steps_per_epoch: 5}\nval: {}\n")
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['val'\]"):
        load_experiment(bad)
    with pytest.raises(ConfigError, match="no config named 'nope'"):
        load_experiment("nope")


def test_an_old_config_file_loads_with_the_new_keys(tmp_path):
    old = yaml.safe_load((TRAIN_CONFIG_DIR / "tiny-synthetic.yaml").read_text())
    train = old["train"]
    train["stage"] = train.pop("phase")
    train["stage1"], train["stage2"] = train.pop("phase1"), train.pop("phase2")
    train["amp"] = "none"
    path = tmp_path / "old.yaml"
    path.write_text(yaml.safe_dump(old))
    exp = load_experiment(path)
    assert exp.train.precision == "fp32"
    assert exp.to_dict() == with_overrides(load_experiment("tiny-synthetic"), **{"train.precision": "fp32"}).to_dict()


@pytest.mark.parametrize(("amp", "precision"), [("auto", "auto"), ("bf16", "bf16"), ("none", "fp32")])
def test_old_amp_values_become_precisions(amp, precision):
    assert convert_old_keys({"train": {"amp": amp}}) == {"train": {"precision": precision}}


def test_the_conversion_keeps_new_files_and_other_sections_as_they_are():
    data = {"name": "x", "data": {"stage": 1}, "train": {"phase": 2, "seed": 3}}
    assert convert_old_keys(data) == data
    assert convert_old_keys({"name": "x"}) == {"name": "x"}
    assert convert_old_keys({"train": {"stage": 2, "seed": 3}}) == {"train": {"phase": 2, "seed": 3}}


@pytest.mark.parametrize(
    ("train", "message"),
    [
        ({"stage": 1, "phase": 2}, "'stage' is the old name of 'phase'"),
        ({"stage2": {}, "phase2": {}}, "'stage2' is the old name of 'phase2'"),
        ({"amp": "fp16"}, r"train\.amp must be one of \('auto', 'bf16', 'none'\)"),
    ],
)
def test_old_keys_that_cannot_be_converted_are_errors(train, message):
    with pytest.raises(ConfigError, match=message):
        experiment_from_dict({**TINY, "train": {**TINY["train"], **train}}, "old.yaml")
