"""Weights files: round trip, config in the metadata, and clear errors for bad files."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

from slerir_core.checkpoint import export_weights, load_model, read_metadata, save_weights
from slerir_core.errors import WeightsError


def test_round_trip_restores_identical_outputs(tiny_model, tmp_path):
    path = save_weights(tiny_model, tmp_path / "w.safetensors", steps="7")
    assert read_metadata(path)["steps"] == "7"
    loaded = load_model(path)
    assert loaded.config == tiny_model.config
    x = torch.rand(1, 3, 16, 16)
    with torch.no_grad():
        assert torch.equal(tiny_model(x)[0], loaded(x)[0])
    assert not list(tmp_path.glob("*.tmp"))


def test_half_precision_file_is_smaller_and_close(tiny_model, tmp_path):
    full = save_weights(tiny_model, tmp_path / "full.safetensors")
    half = save_weights(tiny_model, tmp_path / "half.safetensors", dtype=torch.float16)
    assert half.stat().st_size < 0.6 * full.stat().st_size
    x = torch.rand(1, 3, 16, 16)
    with torch.no_grad():
        assert torch.allclose(tiny_model(x)[0], load_model(half)(x)[0], atol=2e-2)


def test_missing_file(tmp_path):
    with pytest.raises(WeightsError, match="does not exist"):
        load_model(tmp_path / "nope.safetensors")


@pytest.mark.parametrize("content", [b"", b"garbage that is not a weights file", b"\xff" * 64])
def test_corrupt_file(tmp_path, content):
    path = tmp_path / "bad.safetensors"
    path.write_bytes(content)
    with pytest.raises(WeightsError, match="safetensors"):
        load_model(path)


def test_truncated_file(tiny_model, tmp_path):
    path = save_weights(tiny_model, tmp_path / "w.safetensors")
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(WeightsError, match="corrupt"):
        load_model(path)


def test_foreign_safetensors_file(tmp_path):
    path = tmp_path / "other.safetensors"
    save_file({"a": torch.zeros(2)}, str(path))
    with pytest.raises(WeightsError, match="not SLER-IR weights"):
        load_model(path)


def test_file_that_does_not_match_its_config(tiny_model, tmp_path):
    path = tmp_path / "w.safetensors"
    tensors = {k: v.contiguous() for k, v in tiny_model.state_dict().items()}
    tensors.pop("output.weight")
    meta = {"format": "slerir-weights-1", "config": json.dumps(tiny_model.config.to_dict())}
    save_file(tensors, str(path), metadata=meta)
    with pytest.raises(WeightsError, match=r"missing \['output.weight'\]"):
        load_model(path)
    meta["config"] = json.dumps(tiny_model.config.to_dict() | {"dim": 5})
    save_file(tensors, str(path), metadata=meta)
    with pytest.raises(WeightsError, match="config stored in the file is invalid"):
        load_model(path)


@pytest.mark.parametrize(
    "header",
    [
        [],
        {"__metadata__": ["not", "a", "mapping"]},
        {"__metadata__": {"format": "slerir-weights-1", "config": "[1, 2]"}},
    ],
)
def test_headers_of_the_wrong_shape_are_weights_errors(tmp_path, header):
    """Valid JSON that is not what a weights file holds must not escape as an AttributeError or TypeError."""
    path = tmp_path / "odd.safetensors"
    text = json.dumps(header).encode()
    path.write_bytes(len(text).to_bytes(8, "little") + text)
    with pytest.raises(WeightsError, match=r"odd\.safetensors"):
        load_model(path)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_weights_holding_nan_or_inf_are_refused(tiny_model, tmp_path, bad):
    """NaN weights make every output NaN, which cast to uint8 is an all-black image: refuse them on load."""
    name, param = next(iter(tiny_model.named_parameters()))
    with torch.no_grad():
        param.view(-1)[0] = bad
    path = save_weights(tiny_model, tmp_path / "w.safetensors")
    with pytest.raises(WeightsError, match=rf"tensor {name} holds NaN or infinite values"):
        load_model(path)


def test_export_in_fp16_keeps_the_training_record(tmp_path, tiny_model):
    source = save_weights(tiny_model, tmp_path / "w.safetensors", stage="1", history='{"steps": 7}')
    small = export_weights(source, tmp_path / "small.safetensors")
    assert read_metadata(small)["history"] == '{"steps": 7}' and read_metadata(small)["stage"] == "1"
    assert small.stat().st_size < 0.6 * source.stat().st_size
    restored = load_model(small)
    for name, t in tiny_model.state_dict().items():
        assert torch.allclose(restored.state_dict()[name], t, atol=1e-2, rtol=1e-2), name
