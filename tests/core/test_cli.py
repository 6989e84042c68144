"""The ``slerir restore``, ``info`` and ``demo`` commands, through ``slerir_core.cli.main``, on the tiny config."""

from __future__ import annotations

import json
import os
import resource
import struct
import subprocess
import sys
import zlib

import numpy as np
import pytest
import tifffile
import torch
from PIL import Image

from slerir_core.atomic import PROBE_BYTES
from slerir_core.checkpoint import save_weights
from slerir_core.cli import main
from slerir_core.config import load_config
from slerir_core.io.files import read_image, write_image
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
            "64",
            "--overlap",
            "16",
            "--save-maps",
            *TINY,
        ]
    )
    assert code == 0
    report = json.loads((out / "photo_report.json").read_text())
    (plan,) = report["plans"]
    assert plan["routes"] == routes and plan["manual_routes"] and report["untrained"] is True
    assert report["tile"] == 64 and np.array(plan["degradation_map"]).shape == (3, 4, 4)
    assert report["channels"] == "RGB"
    dmap, _ = read_image(out / "photo_degradation_map.png")
    picture, _ = read_image(out / "photo_routes.png")
    assert dmap.shape[0] > 40 and dmap.shape[1] >= 48 and picture.shape[0] > 8 * 14  # see tests/core/test_maps.py


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
        (["--routes", "1,3"], "got 2: [1, 3]"),
        (["--tile", "16"], "at least 64 pixels, got 16"),
        (["--max-pixels", "-1"], "pixel limit"),
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


# -- no silent garbage --------------------------------------------------------------------------------


def test_a_weights_file_holding_nan_is_refused_before_any_output(inputs, tmp_path, capsys):
    torch.manual_seed(3)
    model = SLERIR(load_config("tiny"))
    with torch.no_grad():
        next(model.parameters()).view(-1)[0] = float("nan")
    weights = save_weights(model, tmp_path / "nan.safetensors")
    out = tmp_path / "out"
    assert main(["restore", str(inputs / "photo.png"), "-o", str(out), "--weights", str(weights), "-q"]) == 2
    err = capsys.readouterr().err
    assert "NaN or infinite" in err and len(err.strip().splitlines()) == 1 and not out.exists()


def test_an_output_that_would_hold_nan_or_inf_is_not_written(inputs, tmp_path, capsys):
    """Finite but huge weights overflow to inf inside the network: that file fails, nothing is written."""
    torch.manual_seed(3)
    model = SLERIR(load_config("tiny"))
    with torch.no_grad():
        model.output.weight.fill_(1e38)
    weights = save_weights(model, tmp_path / "huge.safetensors")
    out = tmp_path / "out"
    code = main(
        [
            "restore",
            str(inputs / "photo.png"),
            str(inputs / "stack.tif"),
            "-o",
            str(out),
            "--weights",
            str(weights),
            "-q",
        ]
    )
    err = capsys.readouterr().err
    assert code == 1 and err.count("NaN or infinite") == 2
    assert list(out.iterdir()) == []


def imagej_stack(path, channels: int = 4) -> np.ndarray:
    """A uint16 CYX ImageJ file with pixel size 0.25 um, like a microscope's, channels of different brightness."""
    rng = np.random.default_rng(11)
    stack = np.stack([rng.integers(0, peak, (40, 48)) for peak in (4095, 900, 2500, 300)[:channels]])
    stack = stack.astype(np.uint16)
    tifffile.imwrite(path, stack, imagej=True, resolution=(4.0, 4.0), metadata={"axes": "CYX", "unit": "um"})
    return stack


def test_a_four_channel_microscopy_tiff_is_restored_channel_by_channel_with_its_calibration(tmp_path, capsys):
    torch.manual_seed(4)
    weights = ["--weights", str(save_weights(SLERIR(load_config("tiny")), tmp_path / "tiny.safetensors")), "-q"]
    stack = imagej_stack(tmp_path / "cells.tif")
    out = tmp_path / "out"
    assert main(["restore", str(tmp_path / "cells.tif"), "-o", str(out), "--save-maps", "--tile", "0", *weights]) == 0
    assert "channels: 4 channels, each on its own" in capsys.readouterr().out
    assert json.loads((out / "cells_report.json").read_text())["channels"] == "4 channels, each on its own"
    with tifffile.TiffFile(out / "cells_restored.tif") as tif:
        restored = tif.asarray()
        assert tif.is_imagej and tif.imagej_metadata["unit"] == "um" and tif.series[0].axes == "CYX"
        assert tif.pages[0].tags["XResolution"].value == (4, 1)
    assert restored.shape == stack.shape and restored.dtype == np.uint16
    assert not np.array_equal(restored[3], stack[3])  # restored, not copied through as an alpha channel
    for c in (0, 3):  # each channel with its own range and plan, as if it were the only one
        tifffile.imwrite(tmp_path / f"c{c}.tif", stack[c])
        assert main(["restore", str(tmp_path / f"c{c}.tif"), "-o", str(out), "--tile", "0", *weights]) == 0
        alone, _ = read_image(out / f"c{c}_restored.tif")
        assert np.array_equal(restored[c], alone), c


def test_tiff_resolution_and_png_dpi_are_kept(tmp_path):
    rng = np.random.default_rng(12)
    tifffile.imwrite(
        tmp_path / "scan.tif",
        rng.integers(0, 255, (40, 48, 3), dtype=np.uint8),
        photometric="rgb",
        resolution=(300, 300),
        resolutionunit="INCH",
    )
    Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(tmp_path / "photo.png", dpi=(300, 300))
    out = tmp_path / "out"
    assert main(["restore", str(tmp_path / "scan.tif"), str(tmp_path / "photo.png"), "-o", str(out), *TINY]) == 0
    with tifffile.TiffFile(out / "scan_restored.tif") as tif:
        page = tif.pages[0]
        assert page.tags["XResolution"].value == (300, 1) and page.tags["ResolutionUnit"].value == 2
        assert page.photometric == tifffile.PHOTOMETRIC.RGB
    with Image.open(out / "photo_restored.png") as png:
        assert png.info["dpi"] == pytest.approx((300, 300), abs=0.01)


# -- batch runs ---------------------------------------------------------------------------------------


def test_running_twice_into_the_input_folder_skips_outputs_and_finished_inputs(inputs, tmp_path, capsys):
    (inputs / "broken.png").unlink()
    assert main(["restore", str(inputs), "-o", str(inputs), *TINY]) == 0
    capsys.readouterr()
    names = ["photo.png", "photo_restored.png", "stack.tif", "stack_restored.tif"]
    assert sorted(p.name for p in inputs.iterdir()) == names
    written = {name: (inputs / name).stat().st_mtime_ns for name in names}
    assert main(["restore", str(inputs), "-o", str(inputs), *TINY]) == 0
    captured = capsys.readouterr()
    assert "left out 2 file(s) named like outputs" in captured.err and "exists; skipped" in captured.err
    assert "restored 0 of 2 inputs" in captured.out and "2 skipped" in captured.out and "failed" not in captured.out
    assert sorted(p.name for p in inputs.iterdir()) == names
    assert {name: (inputs / name).stat().st_mtime_ns for name in names} == written
    assert main(["restore", str(inputs), "-o", str(inputs), "--overwrite", *TINY]) == 0
    assert "restored 2 of 2 inputs" in capsys.readouterr().out
    assert (inputs / "photo_restored.png").stat().st_mtime_ns > written["photo_restored.png"]
    assert sorted(p.name for p in inputs.iterdir()) == names


def test_an_output_named_on_the_command_line_is_restored(inputs, tmp_path):
    write_image(inputs / "old_restored.png", np.zeros((16, 16), np.uint8))
    out = tmp_path / "out"
    assert main(["restore", str(inputs / "old_restored.png"), "-o", str(out), *TINY]) == 0
    assert (out / "old_restored_restored.png").is_file()


def cli(args: list[str], file_size_limit: int) -> subprocess.CompletedProcess:
    """``slerir`` in a fresh process whose writes fail past ``file_size_limit`` bytes (EFBIG, as on a full disk)."""

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (file_size_limit, file_size_limit))

    return subprocess.run(
        [sys.executable, "-m", "slerir_core.cli", *args], capture_output=True, text=True, preexec_fn=limit, check=False
    )


def test_an_output_folder_that_cannot_take_a_file_stops_the_run_before_any_work(inputs, tmp_path):
    out = tmp_path / "out"
    result = cli(["restore", str(inputs), "-o", str(out), *TINY], file_size_limit=PROBE_BYTES // 2)
    assert result.returncode == 2
    assert f"error: cannot write to the output folder {out}: File too large" in result.stderr
    assert " -> " not in result.stdout and list(out.iterdir()) == []


def test_an_output_folder_that_fills_up_mid_run_stops_the_run(tmp_path):
    folder, out = tmp_path / "in", tmp_path / "out"
    folder.mkdir()
    for name in ("a.tif", "b.tif", "c.tif"):  # 92 kB each: more than the limit, which the probe's 64 kiB is not
        write_image(folder / name, np.random.default_rng(0).integers(0, 4000, (5, 96, 96)).astype(np.uint16), "ZYX")
    result = cli(["restore", str(folder), "-o", str(out), *TINY], file_size_limit=PROBE_BYTES + 8192)
    assert result.returncode == 1, result.stderr
    assert "cannot write" in result.stderr and "stopping, 2 more input(s) not attempted" in result.stderr
    assert "restored 0 of 3 inputs" in result.stdout and list(out.iterdir()) == []


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes to read-only folders")
def test_a_read_only_output_folder_stops_the_run_before_any_work(inputs, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    out.chmod(0o555)
    try:
        assert main(["restore", str(inputs), "-o", str(out), *TINY]) == 2
    finally:
        out.chmod(0o755)
    assert "Permission denied" in capsys.readouterr().err and list(out.iterdir()) == []


def test_the_temporary_file_of_a_killed_run_is_removed_by_the_next(inputs, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    killed = subprocess.run(
        [
            sys.executable,
            "-c",
            "import os, signal\n"
            "from slerir_core.atomic import atomic_write\n"
            f"with atomic_write({str(out / 'photo_restored.png')!r}) as tmp:\n"
            "    tmp.write_bytes(b'x' * 100_000)\n"
            "    os.kill(os.getpid(), signal.SIGKILL)\n",
        ],
        check=False,
    )
    (left,) = leftovers(out)
    assert killed.returncode == -9 and left.startswith(".photo_restored.png.slerir-")
    assert main(["restore", str(inputs / "photo.png"), "-o", str(out), *TINY]) == 0
    assert f"note: removed {left}, a temporary file an interrupted run left" in capsys.readouterr().err
    assert leftovers(out) == [] and [p.name for p in out.iterdir()] == ["photo_restored.png"]


def test_a_decompression_bomb_is_one_clear_error_and_the_limit_can_be_changed(inputs, tmp_path, capsys):
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    bomb = tmp_path / "bomb.png"  # a 100000 x 100000 grey header over a few bytes of data
    header = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\0" * 1000)
    bomb.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b""))
    out = tmp_path / "out"
    assert main(["restore", str(bomb), str(inputs / "photo.png"), "-o", str(out), *TINY]) == 1
    (line,) = [line for line in capsys.readouterr().err.splitlines() if "bomb.png" in line]
    assert "100000×100000 = 10,000,000,000 pixels" in line and "--max-pixels N" in line
    assert main(["restore", str(inputs / "photo.png"), "-o", str(tmp_path / "o2"), "--max-pixels", "100", *TINY]) == 1
    assert "over the limit of 100" in capsys.readouterr().err


# -- clear errors, one line each ----------------------------------------------------------------------


@pytest.mark.skipif(torch.backends.mps.is_available(), reason="this machine has MPS")
@pytest.mark.parametrize("command", [["restore", "IN", "-o", "OUT"], ["info"], ["demo", "--out", "OUT"]])
def test_a_device_this_machine_lacks_is_one_line_and_exit_two(inputs, tmp_path, capsys, command):
    args = [a.replace("IN", str(inputs / "photo.png")).replace("OUT", str(tmp_path / "out")) for a in command]
    assert main([*args, "--config", "tiny", "--device", "mps"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: device 'mps' asked for, but MPS") and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_demo_out_pointing_to_a_file_is_one_line_and_exit_two(tmp_path, capsys):
    target = tmp_path / "taken.png"
    target.write_bytes(b"precious")
    assert main(["demo", "--out", str(target), "--config", "tiny", "--device", "cpu"]) == 2
    err = capsys.readouterr().err  # after the untrained-model warning line
    errors = [line for line in err.splitlines() if not line.startswith("warning: ")]
    assert errors == [f"error: cannot write to the output folder {target}: it is a file, not a folder"]
    assert target.read_bytes() == b"precious"
