"""The Restorer on the tiny config: tiles in batches without seams, dtypes and stacks, progress, bad input, weights."""

from __future__ import annotations

import dataclasses
import math
import warnings

import dask.array as da
import numpy as np
import pytest
import torch
from restoring import Spy, drain, smooth_rgb, u16

from slerir_core import restore as restore_module
from slerir_core.batching import CPU_TILES, INDEX_LIMIT, MEMORY_SHARE, batch_size, tile_bytes, widest_map
from slerir_core.checkpoint import save_weights
from slerir_core.config import load_config
from slerir_core.device import free_memory, native_bf16, resolve_device
from slerir_core.errors import ImageError, WeightsError
from slerir_core.model import SLERIR
from slerir_core.restore import RestoreOptions, Restorer
from slerir_core.tiling import SmallTileWarning, TileGrid

# Tiled and untiled results differ because MDTA attends over all pixels of what it is given (a tile or the
# image): measured mean |difference| ~0.015 of the range for the untrained tiny model, whose output differs
# from its input by ~0.1. The bound below leaves room for seeds, not for a misplaced tile or prior crop.
TILED_MEAN_TOLERANCE = 0.03


def test_the_plan_is_computed_once_per_image_and_tiles_get_their_prior_box(restorer, monkeypatch):
    analyse = Spy(monkeypatch, restorer.model, "analyse")
    backbone = Spy(monkeypatch, restorer.model, "restore_features")
    restorer.restore(smooth_rgb(112), tile=64, overlap=16, channels="rgb")
    assert len(analyse.calls) == 1
    grid = TileGrid.build(112, 112, 64, 16)
    expected = {(y0 / 112, x0 / 112, y1 / 112, x1 / 112) for y0, y1 in grid.rows for x0, x1 in grid.cols}
    boxes = {tuple(box) for args, _ in backbone.calls for box in args[3].tolist()}
    assert len(grid) == 4 and len(backbone.calls) == 1 and boxes == expected  # the four tiles in one pass


# -- tiles agree with the whole image, without seams -------------------------------------------------


def seam_ratio(restorer: Restorer, image: np.ndarray, whole: np.ndarray, tile: int, overlap: int) -> float:
    """Gradient energy of (tiled - whole) across tile edges, over its median elsewhere (1 = no seam)."""
    tiled = restorer.restore(image, tile=tile, overlap=overlap, channels="rgb")
    diff = (tiled - whole).mean(axis=2)
    grid = TileGrid.build(*image.shape[:2], tile, overlap)
    edges = sorted({s for s, _ in grid.cols[1:]} | {e for _, e in grid.cols[:-1]})
    across = np.abs(np.diff(diff, axis=1)).mean(axis=0)  # across[i] is between columns i and i + 1
    at_edges = across[[e - 1 for e in edges]].mean()
    return float(at_edges / np.median(across))


def test_tiled_and_untiled_restoration_agree(restorer):
    image = smooth_rgb(128)
    whole = restorer.restore(image, tile=0, channels="rgb")
    tiled = restorer.restore(image, tile=64, overlap=16, channels="rgb")
    assert np.abs(tiled - whole).mean() < TILED_MEAN_TOLERANCE
    assert np.abs(tiled - whole).mean() < 0.5 * np.abs(whole - image).mean()  # small next to the model's effect


def test_feathered_tiles_leave_no_seam_and_the_test_sees_hard_ones(restorer):
    image = smooth_rgb(128)
    whole = restorer.restore(image, tile=0, channels="rgb")
    assert seam_ratio(restorer, image, whole, 64, 16) < 2.0
    assert seam_ratio(restorer, image, whole, 64, 0) > 3.0  # hard edges without overlap: the measure works


# -- tiles in batches ---------------------------------------------------------------------------------


def test_batches_of_tiles_give_what_one_tile_at_a_time_gives(restorer):
    """Tiles of one pass share routes and prior and differ only in their box: fp32 results agree to rounding."""
    restorer = Restorer(restorer.model, device="cpu", precision="fp32")  # bf16 rounds one pass's ops differently
    image = smooth_rgb(170)[:150]  # 3 x 4 tiles of 64 px with overlaps of 16 or more
    for channels, picture in (("rgb", image), ("grey", image[..., 1])):
        alone = restorer.restore(picture, tile=64, overlap=16, channels=channels, batch=1)
        for batch in (5, 12):
            batched = restorer.restore(picture, tile=64, overlap=16, channels=channels, batch=batch)
            np.testing.assert_allclose(batched, alone, rtol=0, atol=1e-5, err_msg=f"{channels}, batch {batch}")


def test_a_pass_runs_its_batch_of_tiles_each_with_its_own_box_and_the_plans_routes(restorer, monkeypatch):
    image = smooth_rgb(170)[:150]
    plan = restorer.plan(image, channels="rgb")
    backbone = Spy(monkeypatch, restorer.model, "restore_features")
    steps = restorer.restore_steps(image, plan=plan, tile=64, overlap=16, channels="rgb", batch=5)
    assert list(steps) == [(0, 12), (5, 12), (10, 12), (12, 12)]  # one yield a pass
    grid = TileGrid.build(150, 170, 64, 16)
    boxes = [box for args, _ in backbone.calls for box in args[3].tolist()]
    expected = [[y0 / 150, x0 / 170, y1 / 150, x1 / 170] for y0, y1 in grid.rows for x0, x1 in grid.cols]
    assert [len(args[0]) for args, _ in backbone.calls] == [5, 5, 2]
    assert boxes == expected  # row by row, each tile its own
    assert all(args[1].tolist() == [plan.routes] * len(args[0]) for args, _ in backbone.calls)


def test_a_4096_pixel_image_needs_at_most_eight_network_passes():
    """The default tile (512, overlap 32) cuts 4096² into 81 tiles; with the passes allowed all the free memory
    (``batch=81``), the tiny model runs them in at most eight passes: the sizes the tile loop takes."""
    config = load_config("tiny")
    grid = TileGrid.build(4096, 4096, 512, 32)
    size = batch_size(len(grid), (512, 512), config, torch.device("cpu"), limit=len(grid))
    needed = math.ceil(len(grid) / 8) * tile_bytes(config, 512, 512) / MEMORY_SHARE
    if (free_memory(torch.device("cpu")) or 0) < needed:
        pytest.skip(f"this machine has less than the {needed / 2**30:.1f} GiB free that 11 tiles a pass need")
    assert len(grid) == 81 and math.ceil(len(grid) / size) <= 8
    assert batch_size(len(grid), (512, 512), config, torch.device("cpu")) == min(size, CPU_TILES)  # by default


def test_batch_sizes_keep_to_the_limit_the_count_the_memory_and_32_bit_indices():
    config, cpu = load_config("tiny"), torch.device("cpu")
    assert batch_size(10, (64, 64), config, cpu, limit=4) == 4
    assert batch_size(3, (64, 64), config, cpu, limit=100) == 3
    size = batch_size(1000, (512, 512), config, cpu, limit=1000)
    # The free memory moves with the other processes of the machine: a tenth of slack.
    assert 1 < size < 1000 and size * tile_bytes(config, 512, 512) <= 1.1 * MEMORY_SHARE * free_memory(cpu)
    assert size * widest_map(config, 512, 512) <= INDEX_LIMIT
    assert batch_size(2, (8192, 8192), config, cpu, limit=2) == 1  # one tile alone overflows 32-bit indices


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_on_a_gpu_the_tiles_of_an_image_share_passes_and_agree_with_one_at_a_time(monkeypatch):
    torch.manual_seed(0)
    restorer = Restorer(SLERIR(load_config("tiny")), device="cuda")
    image = smooth_rgb(170)[:150]
    backbone = Spy(monkeypatch, restorer.model, "restore_features")
    batched = restorer.restore(image, tile=64, overlap=16, channels="rgb")
    assert len(backbone.calls) == 1  # 12 small tiles: one pass
    alone = restorer.restore(image, tile=64, overlap=16, channels="rgb", batch=1)
    np.testing.assert_allclose(batched, alone, rtol=0, atol=2e-2)  # bf16 autocast rounding


# -- arrays of every kind keep shape and dtype -------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "make", "axes"),
    [
        ("uint8 grey", lambda: (smooth_rgb(40)[..., 0] * 255).astype(np.uint8), None),
        ("uint8 rgb", lambda: (smooth_rgb(40) * 255).astype(np.uint8), None),
        ("uint16 yxc", lambda: u16((40, 36, 3)), None),
        ("float32 grey", lambda: smooth_rgb(40)[..., 1] * 1000 - 200, None),
        (
            "float32 rgba",
            lambda: np.concatenate([smooth_rgb(40), np.linspace(0, 1, 40 * 40).reshape(40, 40, 1)], -1).astype(
                np.float32
            ),
            None,
        ),
        ("uint16 zyx", lambda: u16((3, 40, 36)), "ZYX"),
        ("uint16 tzyx", lambda: u16((2, 2, 24, 20)), None),
        ("float32 cyx", lambda: np.random.default_rng(4).random((2, 30, 30)).astype(np.float32), "CYX"),
        ("uint8 5-D", lambda: np.random.default_rng(5).integers(0, 255, (2, 1, 2, 20, 20)).astype(np.uint8), "TZCYX"),
    ],
)
def test_round_trips_keep_shape_and_dtype(restorer, name, make, axes):
    image = make()
    out = restorer.restore(image, tile=64, overlap=16, axes=axes)
    assert out.shape == image.shape and out.dtype == image.dtype, name
    assert np.isfinite(out.astype(np.float64)).all()
    if image.dtype.kind in "ui":
        assert out.min() >= np.iinfo(image.dtype).min and out.max() <= np.iinfo(image.dtype).max


def test_alpha_passes_through_and_grey_output_is_grey(restorer):
    rgba = (np.concatenate([smooth_rgb(32), np.linspace(0, 1, 32 * 32).reshape(32, 32, 1)], -1) * 255).astype(np.uint8)
    out = restorer.restore(rgba)
    assert np.array_equal(out[..., 3], rgba[..., 3]) and not np.array_equal(out[..., :3], rgba[..., :3])


def test_uint16_output_stays_in_the_datas_range_scale(restorer):
    """uint16 is scaled by its own range, not by 65535: a dim image comes back at a similar level."""
    image = u16((32, 32))
    out = restorer.restore(image)
    assert abs(float(out.mean()) - float(image.mean())) < 0.25 * float(image.max() - image.min())


def test_channels_are_restored_one_by_one_or_as_rgb(restorer, monkeypatch):
    image = np.random.default_rng(6).random((3, 24, 24)).astype(np.float32)
    backbone = Spy(monkeypatch, restorer.model, "restore_features")
    restorer.restore(image, axes="CYX", channels="grey", tile=0)
    restorer.restore(image, axes="CYX", channels="rgb", tile=0)
    inputs = [args[0] for args, _ in backbone.calls]
    assert len(inputs) == 4
    assert all(torch.equal(x[:, 0], x[:, 1]) and torch.equal(x[:, 0], x[:, 2]) for x in inputs[:3])  # grey -> 3 equal
    assert not torch.equal(inputs[3][:, 0], inputs[3][:, 1])


@pytest.mark.parametrize("shape", [(8, 8), (8, 9, 3), (8, 50), (5, 8, 8)])
def test_small_and_thin_images_are_restored(restorer, shape):
    image = np.random.default_rng(7).integers(0, 255, shape).astype(np.uint8)
    out = restorer.restore(image, tile=64, overlap=16)
    assert out.shape == image.shape and out.dtype == np.uint8


@pytest.mark.parametrize("shape", [(1, 1), (1, 1, 3), (1, 50), (5, 7, 3)])
def test_images_under_eight_pixels_a_side_are_refused(restorer, shape):
    with pytest.raises(ImageError, match="at least 8×8"):
        restorer.restore(np.zeros(shape, np.uint8))


# -- progress and cancelling -------------------------------------------------------------------------


def test_restore_steps_yields_progress_and_returns_the_array(restorer):
    image = smooth_rgb(112)
    calls: list[tuple[int, int]] = []
    steps = restorer.restore_steps(
        image, tile=64, overlap=16, batch=1, channels="rgb", progress=lambda d, t: calls.append((d, t))
    )
    yielded, result = drain(steps)
    assert yielded == calls == [(i, 4) for i in range(5)]
    assert result.shape == image.shape and result.dtype == image.dtype


def test_closing_restore_steps_stops_between_passes(restorer, monkeypatch):
    backbone = Spy(monkeypatch, restorer.model, "restore_features")
    steps = restorer.restore_steps(smooth_rgb(112), tile=64, overlap=16, batch=1, channels="rgb")
    assert next(steps) == (0, 4) and next(steps) == (1, 4)
    steps.close()  # what a napari worker's quit does between yields
    assert len(backbone.calls) == 1


# -- bad input ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("image", "kwargs", "message"),
    [
        (np.full((8, 8), np.nan, np.float32), {}, "NaN or infinite"),
        (np.pad(np.array([[0, np.inf], [1, 2]], np.float32), 3), {}, "NaN or infinite"),
        (np.zeros((0, 8), np.uint8), {}, "empty"),
        (np.zeros((1, 1), np.uint8), {}, "at least 8×8"),
        (np.zeros((2, 2, 2, 8, 8), np.uint8), {}, "pass axes"),
        (np.zeros((8, 8), np.uint8), {"routes": [0] * 7}, "8 expert indices"),
        (np.zeros((8, 8), np.uint8), {"routes": [0] * 7 + [3]}, r"\[0, 2\]"),
        (np.zeros((8, 8), np.uint8), {"routes": [-1] * 8}, r"\[0, 2\]"),
        (np.zeros((8, 8), np.uint8), {"tile": 8}, "tile"),
        (np.zeros((8, 8), np.uint8), {"tile": 64, "overlap": 32}, "overlap"),
        (np.zeros((8, 8), np.uint8), {"plan_per": "volume"}, "plan_per"),
        (np.zeros((8, 8), np.uint8), {"axes": "ZX"}, "Y and X"),
    ],
)
def test_bad_input_raises_a_clear_value_error(restorer, image, kwargs, message):
    with pytest.raises(ValueError, match=message):
        restorer.restore(image, **kwargs)


# -- building restorers -------------------------------------------------------------------------------


def test_without_weights_a_fresh_model_is_used_and_said_to_be_untrained(monkeypatch, tmp_path):
    monkeypatch.setattr(restore_module, "DEFAULT_WEIGHTS", tmp_path / "none.safetensors")
    with pytest.warns(UserWarning, match="UNTRAINED 'tiny'"):
        restorer = Restorer.from_pretrained(config="tiny", device="cpu")
    assert restorer.untrained and restorer.config.name == "tiny" and "UNTRAINED" in restorer.describe()


def test_weights_files_load_and_the_shipped_file_is_the_default(monkeypatch, tmp_path):
    torch.manual_seed(1)
    model = SLERIR(load_config("tiny")).eval()
    path = save_weights(model, tmp_path / "tiny.safetensors")
    image = smooth_rgb(32)
    expected = Restorer(model).restore(image)
    loaded = Restorer.from_pretrained(path, device="cpu")
    assert not loaded.untrained and loaded.weights == str(path)
    assert np.array_equal(loaded.restore(image), expected)
    monkeypatch.setattr(restore_module, "DEFAULT_WEIGHTS", path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the shipped file is trained: no warning
        default = Restorer.from_pretrained(device="cpu")
    assert default.weights == str(path) and np.array_equal(default.restore(image), expected)


def test_corrupt_or_missing_weights_raise_weights_error(tmp_path):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all")
    with pytest.raises(WeightsError, match=r"bad\.safetensors"):
        Restorer.from_pretrained(bad, device="cpu")
    with pytest.raises(WeightsError, match="does not exist"):
        Restorer.from_pretrained(tmp_path / "missing.safetensors", device="cpu")


def test_a_weights_file_and_a_config_together_are_refused(tmp_path):
    with pytest.raises(ValueError, match="not both"):
        Restorer.from_pretrained(tmp_path / "w.safetensors", config="tiny")


def test_options_fill_in_the_configs_tiling(restorer):
    def tiling(**fields):
        opts = restorer.resolve_options(**fields)
        return opts.routes, opts.tile, opts.overlap

    assert tiling() == (None, 64, 16)  # tiny: tile 64, overlap 16
    assert tiling(tile=128) == (None, 128, 16)  # the config's overlap
    assert tiling(tile=64, overlap=8) == (None, 64, 8)
    assert tiling(tile=0, overlap=50) == (None, 0, 0)  # one piece: overlap is moot


def test_one_options_object_serves_a_batch_and_fields_override_it(restorer):
    image = smooth_rgb(64)
    options = RestoreOptions(tile=0, channels="rgb", routes=[1] * 8)
    assert np.array_equal(
        restorer.restore(image, options), restorer.restore(image, tile=0, channels="rgb", routes=[1] * 8)
    )
    overridden = restorer.restore(image, options, routes=[2] * 8)
    assert np.array_equal(overridden, restorer.restore(image, tile=0, channels="rgb", routes=[2] * 8))
    assert not np.array_equal(overridden, restorer.restore(image, options))


def test_an_unknown_option_is_a_type_error(restorer):
    with pytest.raises(TypeError, match="tiles"):
        restorer.restore(smooth_rgb(32), tiles=64)


def test_device_resolution():
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device(None).type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA"):
            resolve_device("cuda")
    with pytest.raises(ValueError, match="unknown device"):
        resolve_device("gpu")
    restorer = Restorer(SLERIR(load_config("tiny")))
    assert restorer.precision == "auto" and restorer.bf16 == native_bf16(restorer.device)  # where it is native
    assert not Restorer(SLERIR(load_config("tiny")), precision="fp32").bf16
    assert Restorer(SLERIR(load_config("tiny")), precision="bf16").bf16
    with pytest.raises(ValueError, match="precision must be one of auto, fp32, bf16"):
        Restorer(SLERIR(load_config("tiny")), precision="fp16")


@pytest.mark.parametrize(
    ("option", "value"), [("tile", 64.5), ("tile", 64.0), ("tile", True), ("tile", "64"), ("overlap", 8.5)]
)
def test_tile_and_overlap_that_are_not_integers_are_type_errors(restorer, option, value):
    with pytest.raises(TypeError, match=f"{option} must be an integer"):
        restorer.restore(np.zeros((8, 8), np.uint8), **{option: value})


@pytest.mark.parametrize("tile", [16, 17, 32, 63])
def test_tiles_too_small_to_be_efficient_are_refused(restorer, tile):
    """Each tile is a whole pass of the network: below 64 px the fixed cost per pass dominates."""
    with pytest.raises(ValueError, match=f"at least 64 pixels, got {tile}: smaller tiles save no memory"):
        restorer.restore(np.zeros((8, 8), np.uint8), tile=tile)


@pytest.mark.skipif(torch.backends.mps.is_available(), reason="this machine has MPS")
def test_a_device_this_machine_lacks_is_a_one_line_value_error():
    for make in (lambda: resolve_device("mps"), lambda: Restorer(SLERIR(load_config("tiny")), device="mps")):
        with pytest.raises(ValueError, match=r"^device 'mps' asked for, but MPS .* is not available$"):
            make()
    with pytest.raises(ValueError, match=r"^device 'meta' is not usable on this machine: "):
        resolve_device("meta")  # a device of no data: a tensor made there cannot be read back


# -- what the API is given ---------------------------------------------------------------------------


def test_a_tensor_that_requires_grad_and_a_ragged_list_are_clear_errors(restorer):
    with pytest.raises(ImageError, match=r"requires grad; pass image\.detach\(\)"):
        restorer.restore(torch.rand(16, 16, requires_grad=True))
    with pytest.raises(ImageError, match="ragged"):
        restorer.restore([[0.5] * 16] * 15 + [[0.5] * 15])
    image = torch.rand(16, 16)
    assert np.array_equal(restorer.restore(image, tile=0), restorer.restore(image.numpy(), tile=0))


def test_channels_first_input_is_read_as_slices_with_a_warning_and_axes_say_otherwise(restorer, monkeypatch):
    image = np.random.default_rng(8).random((3, 24, 24)).astype(np.float32)
    with pytest.warns(UserWarning, match="axes='CYX'"):
        as_slices = restorer.restore(image, tile=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        as_channels = restorer.restore(image, axes="CYX", tile=0)
    assert as_slices.shape == as_channels.shape == image.shape


@pytest.mark.parametrize(
    ("shape", "axes"),
    [((4, 32, 40), "CYX"), ((3, 32, 40), "CYX"), ((2, 32, 40), "CYX"), ((32, 40, 3), "YXC"), ((32, 40, 4), "YXC")],
)
def test_microscopy_channels_are_restored_each_on_its_own(restorer, shape, axes):
    """A 4-channel uint16 CYX image once came back with channel 3 untouched and 0-2 mixed as RGB."""
    rng = np.random.default_rng(9)
    c_axis = axes.index("C")
    peaks = [4095, 800, 2000, 300][: shape[c_axis]]
    image = np.stack([rng.integers(0, p, (32, 40)) for p in peaks], axis=c_axis).astype(np.uint16)
    restored = restorer.restore(image, axes=axes, tile=0)
    for c in range(shape[c_axis]):
        channel = np.take(image, c, axis=c_axis)
        alone = restorer.restore(channel, tile=0)  # the same channel as a grey image: its own range and plan
        assert np.array_equal(np.take(restored, c, axis=c_axis), alone), c
        assert not np.array_equal(alone, channel)


def test_colour_is_used_when_asked_for_or_for_8_bit_pictures(restorer, monkeypatch):
    backbone = Spy(monkeypatch, restorer.model, "restore_features")
    restorer.restore(u16((32, 40, 3)), channels="rgb", tile=0)
    restorer.restore((smooth_rgb(32) * 255).astype(np.uint8), tile=0)
    restorer.restore(smooth_rgb(32), tile=0)  # float: channels, unless said to be colour
    assert len(backbone.calls) == 1 + 1 + 3


# -- a broken network never yields a plausible image ------------------------------------------------


@pytest.mark.parametrize("image", [np.full((16, 16, 3), 100, np.uint8), smooth_rgb(16), u16((16, 16))])
def test_a_network_that_outputs_nan_raises_instead_of_returning_zeros(image):
    torch.manual_seed(0)
    model = SLERIR(load_config("tiny"))
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(float("nan"))
    restorer = Restorer(model, device="cpu")
    with pytest.raises(ImageError, match="NaN or infinite"):
        restorer.restore(image, routes=[0] * 8, tile=0)
    with pytest.raises(ImageError, match="NaN or infinite"):
        restorer.restore(da.from_array(image[None]), routes=[0] * 8, tile=0).compute()


def test_a_small_tile_warns_with_its_cost_at_the_callers_line(restorer):
    image = smooth_rgb(128)
    with warnings.catch_warnings():
        warnings.simplefilter("error", SmallTileWarning)
        restorer.restore(image, tile=64, channels="rgb")  # the tiny config's own tile: no more passes than usual
    torch.manual_seed(0)
    larger = Restorer(SLERIR(dataclasses.replace(load_config("tiny"), tile=256, overlap=32)), device="cpu")
    with pytest.warns(SmallTileWarning, match="into 9 tiles.* against 1 with the default tile 256") as caught:
        larger.restore(image, tile=64, overlap=16, channels="rgb")
    assert caught[0].filename == __file__  # points at the call, not into the restorer
