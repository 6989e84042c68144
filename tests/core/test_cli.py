"""The ``slerir restore``, ``info`` and ``demo`` commands, through ``slerir_core.cli.main``, on the tiny config."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from slerir_core.checkpoint import save_weights
from slerir_core.cli import main
from slerir_core.config import load_config
from slerir_core.io import read_image, write_image
from slerir_core.model import SLERIR
from slerir_core.samples import degraded_photo

TINY = ["--config", "tiny", "--device", "cpu", "-q"]


@pytest.fixture
def inputs(tmp_path):
    """A folder with a PNG, a uint16 TIFF stack and a corrupt PNG."""
    folder = tmp_path / "in"
    folder.mkdir()
    rng = np.random.default_rng(0)
    write_image(folder / "photo.png", rng.integers(0, 256, (40, 48, 3), dtype=np.uint8))
    write_image(folder / "stack.tif", rng.integers(100, 4000, (3, 32, 40)).astype(np.uint16), "ZYX")
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    return folder


def leftovers(folder):
    """Temporary or hidden files a crashed or careless write would leave."""
    return [p.name for p in folder.iterdir() if p.name.startswith(".") or p.suffix == ".tmp"]


def test_a_corrupt_file_is_reported_the_others_written_and_the_exit_code_is_one(inputs, tmp_path, capsys):
    out = tmp_path / "out"
    code = main(["restore", str(inputs), "-o", str(out), *TINY])
    captured = capsys.readouterr()
    assert code == 1
    assert "broken.png" in captured.err and "skipped" in captured.err
    assert sorted(p.name for p in out.iterdir()) == ["photo_restored.png", "stack_restored.tif"]
    photo, axes = read_image(out / "photo_restored.png")
    assert photo.shape == (40, 48, 3) and photo.dtype == np.uint8
    stack, axes = read_image(out / "stack_restored.tif")
    assert stack.shape == (3, 32, 40) and stack.dtype == np.uint16 and axes == "ZYX"
    assert leftovers(out) == [] and leftovers(inputs) == []
    assert "restored 2 of 3 inputs" in captured.out


@pytest.mark.parametrize(
    ("name", "make", "message"),
    [
        ("nan.tif", lambda path: write_image(path, np.full((16, 16), np.nan, np.float32)), "NaN or infinite"),
        ("dot.png", lambda path: write_image(path, np.zeros((1, 1, 3), np.uint8)), "at least 8×8"),
        ("empty.tif", lambda path: path.write_bytes(b""), "empty file"),
    ],
)
def test_bad_image_files_are_reported_and_write_nothing(tmp_path, capsys, name, make, message):
    folder, out = tmp_path / "in", tmp_path / "out"
    folder.mkdir()
    make(folder / name)
    assert main(["restore", str(folder / name), "-o", str(out), *TINY]) == 1
    assert message in capsys.readouterr().err
    assert not out.exists() or list(out.iterdir()) == []
    assert [p.name for p in folder.iterdir()] == [name]


def test_all_good_inputs_exit_zero_and_globs_and_files_mix(inputs, tmp_path):
    out = tmp_path / "out"
    assert main(["restore", str(inputs / "*.tif"), str(inputs / "photo.png"), "-o", str(out), *TINY]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["photo_restored.png", "stack_restored.tif"]


def test_missing_inputs_are_reported_and_fail_the_run(inputs, tmp_path, capsys):
    out = tmp_path / "out"
    code = main(
        [
            "restore",
            str(inputs / "photo.png"),
            str(tmp_path / "nope.png"),
            str(tmp_path / "*.jpg"),
            "-o",
            str(out),
            *TINY,
        ]
    )
    err = capsys.readouterr().err
    assert code == 1 and "nope.png: no such file" in err and "matches no files" in err
    assert [p.name for p in out.iterdir()] == ["photo_restored.png"]


def test_an_input_is_never_overwritten(inputs, tmp_path, capsys):
    """photo.png's output would be photo_restored.png, which is itself an input here."""
    victim = inputs / "photo_restored.png"
    write_image(victim, np.zeros((8, 8), np.uint8))
    before = victim.read_bytes()
    code = main(["restore", str(inputs / "photo.png"), str(victim), "-o", str(inputs), *TINY])
    assert code == 1 and "refusing to overwrite" in capsys.readouterr().err
    assert victim.read_bytes() == before
    assert (inputs / "photo_restored_restored.png").is_file()  # the other input still ran


def test_two_inputs_with_one_output_name_are_not_both_written(tmp_path, capsys):
    for sub in ("a", "b"):
        (tmp_path / sub).mkdir()
        write_image(tmp_path / sub / "x.png", np.full((16, 16), 100 if sub == "a" else 200, np.uint8))
    code = main(
        ["restore", str(tmp_path / "a" / "x.png"), str(tmp_path / "b" / "x.png"), "-o", str(tmp_path / "o"), *TINY]
    )
    assert code == 1 and "rename one" in capsys.readouterr().err


def test_no_input_files_is_exit_two_and_creates_nothing(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["restore", str(tmp_path / "nope.png"), str(tmp_path / "*.tif"), "-o", str(out), *TINY]) == 2
    assert "no input files" in capsys.readouterr().err and not out.exists()


def test_save_maps_never_overwrites_an_input_or_another_inputs_maps(inputs, tmp_path, capsys):
    """photo.png's routes picture would be photo_routes.png, an input; x.png and x.tif would share a report."""
    victim = inputs / "photo_routes.png"
    write_image(victim, np.zeros((8, 8), np.uint8))
    before = victim.read_bytes()
    code = main(["restore", str(inputs / "photo.png"), str(victim), "-o", str(inputs), "--save-maps", *TINY])
    assert code == 1 and "photo_routes.png is one of the inputs" in capsys.readouterr().err
    assert victim.read_bytes() == before and not (inputs / "photo_restored.png").exists()
    twins, out = tmp_path / "twins", tmp_path / "out"
    twins.mkdir()
    write_image(twins / "x.png", np.full((16, 16), 100, np.uint8))
    write_image(twins / "x.tif", np.full((16, 16), 200, np.uint8))
    assert main(["restore", str(twins), "-o", str(out), "--save-maps", *TINY]) == 1
    assert "rename one" in capsys.readouterr().err
    assert json.loads((out / "x_report.json").read_text())["input"] == str(twins / "x.png")
    assert not (out / "x_restored.tif").exists()


def test_a_grey_png_with_alpha_keeps_its_alpha(tmp_path):
    grey_alpha = np.random.default_rng(1).integers(0, 256, (24, 32, 2), dtype=np.uint8)
    write_image(tmp_path / "ga.png", grey_alpha)
    assert main(["restore", str(tmp_path / "ga.png"), "-o", str(tmp_path / "out"), *TINY]) == 0
    restored, _ = read_image(tmp_path / "out" / "ga_restored.png")
    assert restored.shape == grey_alpha.shape and np.array_equal(restored[..., 1], grey_alpha[..., 1])
    assert not np.array_equal(restored[..., 0], grey_alpha[..., 0])


def test_save_maps_writes_pictures_and_a_report_with_the_manual_routes(inputs, tmp_path):
    out = tmp_path / "out"
    routes = [0, 2, 1, 1, 0, 2, 2, 1]
    code = main(
        [
            "restore",
            str(inputs / "photo.png"),
            "-o",
            str(out),
            "--routes",
            ",".join(map(str, routes)),
            "--tile",
            "32",
            "--overlap",
            "8",
            "--save-maps",
            *TINY,
        ]
    )
    assert code == 0
    report = json.loads((out / "photo_report.json").read_text())
    (plan,) = report["plans"]
    assert plan["routes"] == routes and plan["manual_routes"] and report["untrained"] is True
    assert report["tile"] == 32 and np.array(plan["degradation_map"]).shape == (3, 4, 4)
    dmap, _ = read_image(out / "photo_degradation_map.png")
    picture, _ = read_image(out / "photo_routes.png")
    assert dmap.shape == (128, 128, 3) and picture.shape == (8 * 24, 3 * 24, 3)


def test_a_stack_planned_once_has_one_plan_in_its_report(inputs, tmp_path):
    out = tmp_path / "out"
    assert (
        main(["restore", str(inputs / "stack.tif"), "-o", str(out), "--plan-per", "stack", "--save-maps", *TINY]) == 0
    )
    report = json.loads((out / "stack_report.json").read_text())
    assert [(p["applies_to"], p["source"]) for p in report["plans"]] == [("all", "Z=1")]
    per_slice = tmp_path / "per_slice"
    assert main(["restore", str(inputs / "stack.tif"), "-o", str(per_slice), "--save-maps", *TINY]) == 0
    assert len(json.loads((per_slice / "stack_report.json").read_text())["plans"]) == 3
    maps, _ = read_image(per_slice / "stack_degradation_map.tif")
    assert maps.shape[0] == 3  # one page per plan


@pytest.mark.parametrize(
    ("option", "message"),
    [
        (["--routes", "0,1,2"], "8 expert indices"),
        (["--routes", "0,1,2,0,1,2,0,9"], "must be in"),
        (["--routes", "a,b"], "comma-separated"),
        (["--tile", "4"], "tile"),
    ],
)
def test_bad_options_stop_before_any_output(inputs, tmp_path, capsys, option, message):
    out = tmp_path / "out"
    assert main(["restore", str(inputs / "photo.png"), "-o", str(out), *option, *TINY]) == 2
    assert message in capsys.readouterr().err and not out.exists()


def test_a_corrupt_weights_file_is_a_clear_error_and_writes_nothing(inputs, tmp_path, capsys):
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(b"definitely not safetensors")
    out = tmp_path / "out"
    code = main(["restore", str(inputs / "photo.png"), "-o", str(out), "--weights", str(weights), "-q"])
    err = capsys.readouterr().err
    assert code == 2 and "model.safetensors" in err and "safetensors" in err and not out.exists()


def test_a_weights_file_restores_like_its_model(inputs, tmp_path):
    torch.manual_seed(3)
    weights = save_weights(SLERIR(load_config("tiny")), tmp_path / "tiny.safetensors")
    out_a, out_b = tmp_path / "a", tmp_path / "b"
    for out in (out_a, out_b):
        assert main(["restore", str(inputs / "photo.png"), "-o", str(out), "--weights", str(weights), "-q"]) == 0
    assert (out_a / "photo_restored.png").read_bytes() == (out_b / "photo_restored.png").read_bytes()


def test_info_prints_model_device_and_paths(capsys):
    assert main(["info", "--config", "tiny", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "'tiny'" in out and "3^8 = 6,561 paths" in out and "parameters" in out and "UNTRAINED" in out
    assert "cpu" in out


def test_info_with_a_corrupt_weights_file_fails_clearly(tmp_path, capsys):
    bad = tmp_path / "w.safetensors"
    bad.write_bytes(b"\x00" * 4)
    assert main(["info", "--weights", str(bad)]) == 2
    assert "w.safetensors" in capsys.readouterr().err


@pytest.mark.parametrize("sample", ["noisy", "dark"])
def test_demo_writes_the_restored_sample_and_a_before_after_picture(tmp_path, capsys, sample):
    out = tmp_path / "demo"
    assert main(["demo", "--sample", sample, "--out", str(out), "--config", "tiny", "--device", "cpu"]) == 0
    printed = capsys.readouterr().out
    expected = degraded_photo(sample)
    restored, _ = read_image(next(out.glob(f"*_{sample}_restored.png")))
    pair, _ = read_image(out / "before_after.png")
    h, w = expected.shape[:2]
    assert restored.shape == expected.shape and pair.shape[1] > 2 * w and pair.shape[0] > h
    assert "UNTRAINED" in printed and f"sample {sample!r}" in printed


def test_demo_uses_the_axes_a_tiff_records(tmp_path, capsys):
    """A 5-D hyperstack cannot be guessed from its shape, and CYX is not ZYX: the file's axes decide."""
    hyperstack = np.random.default_rng(2).integers(100, 4000, (2, 3, 2, 24, 32)).astype(np.uint16)
    write_image(tmp_path / "h.tif", hyperstack, "TZCYX")
    assert main(["demo", "--input", str(tmp_path / "h.tif"), "--out", str(tmp_path / "d"), *TINY[:4]]) == 0
    assert "(TZCYX)" in capsys.readouterr().out
    restored, _ = read_image(tmp_path / "d" / "h_restored.png")
    assert restored.shape == (24, 32, 3)


def test_demo_takes_an_input(inputs, tmp_path):
    out = tmp_path / "demo"
    assert main(["demo", "--input", str(inputs / "stack.tif"), "--out", str(out), "--config", "tiny"]) == 0
    restored, _ = read_image(out / "stack_restored.png")
    assert restored.shape == (32, 40, 3) and restored.dtype == np.uint8  # the middle slice, for display
