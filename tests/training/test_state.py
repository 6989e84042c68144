"""The training state: atomic save and checked load, RNG states, the rank digest, initial weights and the
training phase a file records (in the new and the old metadata key)."""

from __future__ import annotations

import dataclasses
import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from slerir_core.checkpoint import save_weights
from slerir_core.model import SLERIR
from training.state import (
    STATE_FORMAT,
    TrainError,
    as_history,
    load_init,
    load_state,
    new_history,
    phase_of,
    recorded_phase,
    rng_state,
    save_state,
    set_rng_state,
    state_digest,
)

SHIPPED = Path(__file__).parents[2] / "slerir_core" / "weights" / "slerir-compact.safetensors"


def draws() -> tuple[float, float, torch.Tensor]:
    return random.random(), float(np.random.rand()), torch.rand(3)


def test_rng_state_puts_every_generator_back(tmp_path):
    random.seed(1)
    np.random.seed(1)
    torch.manual_seed(1)
    np.random.standard_normal()  # leaves a cached Gaussian in NumPy's state
    saved = rng_state()
    first = draws()
    draws()
    # Through a file read with weights_only, as a resumed run reads it.
    save_state(tmp_path / "s.pt", {"format": STATE_FORMAT, "rng": saved})
    set_rng_state(load_state(tmp_path / "s.pt")["rng"])
    again = draws()
    assert first[:2] == again[:2] and torch.equal(first[2], again[2])


def test_a_state_is_written_whole_or_not_at_all(tmp_path):
    path = tmp_path / "checkpoint.pt"
    save_state(path, {"format": STATE_FORMAT, "step": 1})

    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("cannot pickle")

    with pytest.raises(RuntimeError, match="cannot pickle"):
        save_state(path, {"format": STATE_FORMAT, "step": 2, "bad": Unpicklable()})
    assert load_state(path)["step"] == 1  # the previous state, intact
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]  # no temporary file left


@pytest.mark.parametrize(
    ("content", "message"),
    [(b"", "empty"), (b"PK\x03\x04 half a zip", "corrupt"), (b"\x80\x04random", "corrupt")],
)
def test_a_broken_state_is_a_train_error_saying_what_to_do(tmp_path, content, message):
    path = tmp_path / "checkpoint.pt"
    path.write_bytes(content)
    with pytest.raises(TrainError, match=message) as err:
        load_state(path)
    assert "delete it" in str(err.value) and "\n" not in str(err.value)


def test_a_file_of_another_format_is_refused(tmp_path):
    path = tmp_path / "other.pt"
    torch.save({"format": "something-else", "model": {}}, path)
    with pytest.raises(TrainError, match=STATE_FORMAT):
        load_state(path)


def test_the_digest_follows_every_parameter_and_buffer(tiny_config):
    torch.manual_seed(0)
    a = SLERIR(tiny_config)
    torch.manual_seed(0)
    b = SLERIR(tiny_config)
    assert state_digest(a) == state_digest(b)
    with torch.no_grad():
        b.router.centres.view(-1)[0] += 1e-6  # a buffer
    assert state_digest(a) != state_digest(b)


def test_phase_of_reads_the_new_key_then_the_old_one():
    assert phase_of({"phase": "2"}) == 2 and phase_of({"phase": 1}) == 1
    assert phase_of({"stage": "2"}) == 2  # written before training stages were called phases
    assert phase_of({"phase": "1", "stage": "2"}) == 1
    assert phase_of({"phase": "3"}) is None and phase_of({"steps": "4"}) is None


def test_the_shipped_weights_record_phase_two():
    from slerir_core.checkpoint import load_model

    assert recorded_phase(SHIPPED) == 2
    assert load_model(SHIPPED).config.name == "compact"


def test_recorded_phase_of_weights_and_states_new_and_old(tmp_path, tiny_model):
    new = save_weights(tiny_model, tmp_path / "new.safetensors", phase="1")
    old = save_weights(tiny_model, tmp_path / "old.safetensors", stage="2")
    silent = save_weights(tiny_model, tmp_path / "silent.safetensors")
    assert [recorded_phase(p) for p in (new, old, silent)] == [1, 2, None]
    for key, value in (("phase", 2), ("stage", 1)):
        save_state(tmp_path / f"{key}.pt", {"format": STATE_FORMAT, key: value, "model": tiny_model.state_dict()})
        assert recorded_phase(tmp_path / f"{key}.pt") == value
    (tmp_path / "junk.pt").write_bytes(b"junk")
    assert recorded_phase(tmp_path / "junk.pt") is None and recorded_phase(tmp_path / "missing.safetensors") is None


def test_initial_weights_load_with_their_training_record(tmp_path, tiny_model, tiny_config):
    history = {"steps": 7, "crops": 70, "hours": {"cpu": 0.1}, "blend": {"alpha": 0.5, "base_steps": 3}}
    weights = save_weights(tiny_model, tmp_path / "w.safetensors", history=json.dumps(history))
    model = SLERIR(tiny_config)
    record = load_init(model, weights)
    assert state_digest(model) == state_digest(tiny_model)
    assert record == {**new_history(), "steps": 7, "crops": 70, "hours": {"cpu": 0.1}}  # the blend entry dropped
    save_state(tmp_path / "c.pt", {"format": STATE_FORMAT, "model": tiny_model.state_dict(), "history": history})
    assert load_init(SLERIR(tiny_config), tmp_path / "c.pt")["steps"] == 7


def test_initial_weights_that_are_missing_or_do_not_fit_are_train_errors(tmp_path, tiny_model, tiny_config):
    with pytest.raises(TrainError, match="do not exist"):
        load_init(SLERIR(tiny_config), tmp_path / "missing.safetensors")
    weights = save_weights(tiny_model, tmp_path / "w.safetensors")
    other = SLERIR(dataclasses.replace(tiny_config, dim=tiny_config.dim * 2))
    with pytest.raises(TrainError, match="does not fit"):
        load_init(other, weights)


def test_a_record_with_its_dates_under_their_former_name_reads_as_run_dates():
    history = as_history({"steps": 7, "sessions": ["2026-12-01"]})
    assert history["run_dates"] == ["2026-12-01"] and "sessions" not in history and history["steps"] == 7
    assert as_history({})["run_dates"] == [] and as_history({}) == new_history()
