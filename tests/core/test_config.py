"""Config loading: named configs, YAML files, and clear errors for bad ones."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import yaml

import slerir_core
from slerir_core.checkpoint import load_model, read_metadata
from slerir_core.config import STAGES, list_configs, load_config
from slerir_core.errors import ConfigError


def test_named_configs_load():
    assert {"paper", "compact", "tiny"} <= set(list_configs())
    paper = load_config("paper")
    assert (paper.dim, paper.blocks, paper.decoder_blocks, paper.refine_blocks) == (48, (4, 6, 6, 8), (6, 6, 4), 4)
    assert paper.heads == (1, 2, 4, 8) and paper.ffn_factor == 2.66 and paper.num_experts == 3
    assert paper.stage_channels == (48, 96, 192, 384, 192, 96, 96, 96)
    assert len(paper.stage_blocks) == len(STAGES)


def test_round_trip_through_dict():
    cfg = load_config("compact")
    assert load_config(cfg.to_dict()) == cfg


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"dimm": 4}, "unknown key"),
        ({"blocks": [1, 2]}, "blocks needs 4 entries"),
        ({"heads": [3, 2, 4, 8]}, "not divisible by 3 heads"),
        ({"dim": "48"}, "expected int"),
        ({"num_experts": 0}, "num_experts"),
        ({"layernorm": "rms"}, "layernorm"),
        ({"clustering": {"momentum": 1.5}}, "momentum"),
        ({"degradation_extractor": {"model": "x"}}, "unknown key"),
    ],
)
def test_bad_values_are_clear_errors(change, message):
    data = load_config("tiny").to_dict() | change
    with pytest.raises(ConfigError, match=message):
        load_config(data)


def test_yaml_file_errors(tmp_path):
    with pytest.raises(ConfigError, match="no config named 'nope'"):
        load_config("nope")
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("dim: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    typo = tmp_path / "typo.yaml"
    typo.write_text(
        "name: x\ndegradation_extractor: {model_name: slerir-vit-tiny}\n"
        "content_extractor: {model_name: slerir-vit-tiny}\nrouting_dims: 3\n"
    )
    with pytest.raises(ConfigError, match=r"typo.yaml: unknown key\(s\) \['routing_dims'\]"):
        load_config(typo)


def test_config_is_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        load_config("tiny").dim = 3


def test_former_key_names_still_load(tmp_path):
    """``per_layer_centres`` is now ``per_stage_centres``: YAML files and weights files that name it the old
    way load with the same meaning, and an override under the old name wins over the resolved new one."""
    path = tmp_path / "old.yaml"
    data = load_config("tiny").to_dict()
    del data["per_stage_centres"]
    path.write_text(yaml.safe_dump({**data, "per_layer_centres": True}))
    assert load_config(path).per_stage_centres is True
    assert load_config({**load_config("tiny").to_dict(), "per_layer_centres": True}).per_stage_centres is True
    assert "per_layer_centres" not in load_config(path).to_dict()


def test_weights_written_with_the_former_key_load(tmp_path):
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    shipped = Path(slerir_core.__file__).parent / "weights" / "slerir-compact.safetensors"
    with safe_open(shipped, "pt") as f:
        metadata = dict(f.metadata())
    tensors = load_file(shipped)
    config = json.loads(metadata["config"])
    config["per_layer_centres"] = config.pop("per_stage_centres")  # as files written before the rename hold it
    weights = tmp_path / "former.safetensors"
    save_file(tensors, weights, metadata={**metadata, "config": json.dumps(config)})
    assert "per_stage_centres" not in json.loads(read_metadata(weights)["config"])
    model = load_model(weights)
    assert model.config.per_stage_centres and model.router.centres.shape[0] == len(STAGES)
