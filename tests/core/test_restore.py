"""The Restorer on the tiny config: plans, tiling without seams, dtypes and stacks, dask, bad input, weights."""

from __future__ import annotations

import dataclasses
import itertools
import warnings

import cloudpickle
import dask.array as da
import numpy as np
import pytest
import torch

from slerir_core import restore as restore_module
from slerir_core.checkpoint import save_weights
from slerir_core.config import load_config
from slerir_core.device import native_bf16, resolve_device
from slerir_core.errors import ImageError, WeightsError
from slerir_core.io.layout import make_layout
from slerir_core.io.scaling import Scaling
from slerir_core.model import SLERIR
from slerir_core.model.extractors import windows
from slerir_core.restore import RestoreOptions, Restorer
from slerir_core.tiling import (
    PLAN_SIDE,
    TileGrid,
    blend_weights,
    planning_view,
    routing_mosaic,
    tile_spans,
    window_starts,
)

# Tiled and untiled results differ because MDTA attends over all pixels of what it is given (a tile or the
# image): measured mean |difference| ~0.015 of the range for the untrained tiny model, whose output differs
# from its input by ~0.1. The bound below leaves room for seeds, not for a misplaced tile or prior crop.
TILED_MEAN_TOLERANCE = 0.03


@pytest.fixture(scope="module")
def restorer() -> Restorer:
    torch.manual_seed(0)
    return Restorer(SLERIR(load_config("tiny")), device="cpu")


def smooth_rgb(size: int = 96, noise: float = 0.03) -> np.ndarray:
    """A smooth colour image with a little noise, float32 in [0, 1]: seams would stand out on it."""
    yy, xx = np.mgrid[0:size, 0:size] / size
    image = np.stack([0.5 + 0.3 * np.sin(6 * xx + 2 * yy), 0.5 + 0.3 * np.cos(5 * yy), 0.2 + 0.6 * xx * yy], -1)
    image = image + np.random.default_rng(0).normal(0, noise, image.shape)
    return np.clip(image, 0, 1).astype(np.float32)


class Spy:
    """Records the calls of a model method while still running it."""

    def __init__(self, monkeypatch, model: SLERIR, name: str) -> None:
        self.calls: list[tuple] = []
        original = getattr(model, name)

        def spy(*args, **kwargs):
            self.calls.append((args, kwargs))
            return original(*args, **kwargs)

        monkeypatch.setattr(model, name, spy)


# -- tiling geometry ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("length", "tile", "overlap"),
    [(96, 48, 16), (113, 64, 16), (64, 64, 8), (65, 64, 8), (1000, 256, 32), (7, 64, 16), (300, 32, 0)],
)
def test_tile_spans_cover_the_axis_with_the_overlap(length, tile, overlap):
    spans = tile_spans(length, tile, overlap)
    assert spans[0][0] == 0 and spans[-1][1] == length
    assert all(stop - start == min(tile, length) for start, stop in spans)
    for (_, stop), (start, _) in itertools.pairwise(spans):
        assert stop - start >= overlap  # neighbours overlap at least as asked, and never leave a gap
    if len(spans) > 1:  # the fewest tiles: one fewer would not reach the end with that overlap
        assert (len(spans) - 1) * (tile - overlap) + overlap < length


@pytest.mark.parametrize(("length", "tile", "overlap"), [(96, 48, 16), (113, 64, 16), (65, 64, 8), (300, 32, 0)])
def test_blend_weights_are_positive_and_sum_to_one(length, tile, overlap):
    spans = tile_spans(length, tile, overlap)
    total = np.zeros(length)
    for (start, stop), w in zip(spans, blend_weights(spans, length), strict=True):
        assert np.all(w > 0)
        total[start:stop] += w
    assert np.allclose(total, 1.0, atol=1e-6)


def test_tile_zero_means_one_piece():
    assert len(TileGrid.build(500, 300, 0, 0)) == 1


# -- plans --------------------------------------------------------------------------------------------


def test_plan_holds_routes_probabilities_maps_and_prior(restorer):
    plan = restorer.plan(smooth_rgb(64))
    c = restorer.config.num_experts
    assert len(plan.routes) == 8 and all(isinstance(r, int) and 0 <= r < c for r in plan.routes)
    assert plan.probs.shape == (8, c) and np.allclose(plan.probs.sum(axis=1), 1, atol=1e-5)
    assert plan.routes == plan.probs.argmax(axis=1).tolist()
    assert plan.degradation_map.shape == (c, 4, 4) and np.allclose(plan.degradation_map.sum(axis=0), 1, atol=1e-5)
    assert plan.expert_map.shape == (4, 4)
    assert plan.prior is not None and plan.prior.shape[:2] == (1, restorer.config.prior_dim)
    assert plan.label is None and plan.task_map is None  # no task prototypes in an untrained model
    assert restorer.task_routes() == {}
    summary = plan.summary()
    assert summary["routes"] == plan.routes and "prior" not in summary


def test_plan_gives_a_label_and_task_map_when_the_model_has_task_prototypes():
    torch.manual_seed(0)
    config = dataclasses.replace(load_config("tiny"), tasks=("noise", "blur"))
    model = SLERIR(config)
    image = smooth_rgb(48)
    with torch.no_grad():
        f = model.analyse(torch.from_numpy(image.transpose(2, 0, 1))[None])["embeddings"]
        model.task_prototypes.copy_(torch.stack([f[0], -f[0]]))  # "noise" is this image's own direction
    restorer = Restorer(model)
    plan = restorer.plan(image, channels="rgb")
    assert plan.label == "noise" and plan.confidence > 0.5
    assert restorer.task_routes()["noise"] == plan.routes  # the prototype is this image's routing vector
    assert set(plan.task_probs) == {"noise", "blur"} and sum(plan.task_probs.values()) == pytest.approx(1, abs=1e-5)
    assert plan.task_map.shape == (2, 4, 4) and np.allclose(plan.task_map.sum(axis=0), 1, atol=1e-5)


def test_the_plan_is_computed_once_per_image_and_tiles_get_their_prior_box(restorer, monkeypatch):
    analyse = Spy(monkeypatch, restorer.model, "analyse")
    backbone = Spy(monkeypatch, restorer.model, "restore_features")
    restorer.restore(smooth_rgb(112), tile=64, overlap=16, channels="rgb")
    assert len(analyse.calls) == 1
    grid = TileGrid.build(112, 112, 64, 16)
    expected = {(y0 / 112, x0 / 112, y1 / 112, x1 / 112) for y0, y1 in grid.rows for x0, x1 in grid.cols}
    boxes = {args[3] for args, _ in backbone.calls}
    assert len(backbone.calls) == len(grid) == 4 and boxes == expected


def test_manual_routes_replace_the_plans_and_change_the_output(restorer, monkeypatch):
    image = smooth_rgb(48)
    plan = restorer.plan(image, channels="rgb")
    other = [(r + 1) % 3 for r in plan.routes]
    backbone = Spy(monkeypatch, restorer.model, "restore_features")
    routed = restorer.restore(image, plan=plan, tile=0, channels="rgb")
    manual = restorer.restore(image, plan=plan, routes=other, tile=0, channels="rgb")
    used = [args[1][0].tolist() for args, _ in backbone.calls]
    assert used == [plan.routes, other]
    assert np.abs(routed - manual).mean() > 1e-3
    assert plan.with_routes(other).routes == other and plan.with_routes(other).manual_routes


def test_a_given_plan_skips_the_analysis(restorer, monkeypatch):
    image = smooth_rgb(48)
    plan = restorer.plan(image)
    analyse = Spy(monkeypatch, restorer.model, "analyse")
    restorer.restore(np.stack([image, image]), plan=plan, axes="ZYXC")
    assert analyse.calls == []


def test_stacks_plan_each_slice_or_once_on_the_middle_slice(restorer, monkeypatch):
    stack = np.stack([smooth_rgb(40)[..., 0] * (0.5 + 0.2 * z) for z in range(5)])
    seen: list[tuple[str, str]] = []
    analyse = Spy(monkeypatch, restorer.model, "analyse")
    restorer.restore(stack, on_plan=lambda what, plan: seen.append((what, plan.source)))
    assert len(analyse.calls) == 5 and [w for w, _ in seen] == [f"Z={z}" for z in range(5)]
    seen.clear()
    restorer.restore(stack, plan_per="stack", on_plan=lambda what, plan: seen.append((what, plan.source)))
    assert len(analyse.calls) == 6 and seen == [("all", "Z=2")]


def test_planning_view_block_averages_large_images():
    plane = np.random.default_rng(0).random((50, 40, 3)).astype(np.float32)
    layout = make_layout(plane.shape)
    scaling = Scaling.fit(layout.canonical(plane), layout)
    view = planning_view(plane, scaling, (0, 3), side=16)  # blocks of 4 rows x 3 columns
    expected = scaling.to_unit(plane[:48, :39], (0, 3)).reshape(12, 4, 13, 3, 3).mean(axis=(1, 3))
    assert view.shape == (12, 13, 3) and np.allclose(view, expected, atol=1e-6)


def test_routing_mosaic_gives_back_the_windows_at_full_resolution():
    plane = np.random.default_rng(1).random((100, 150, 3)).astype(np.float32)
    scaling = Scaling.fit(plane, make_layout(plane.shape))
    mosaic = routing_mosaic(plane, scaling, (0, 3), (32, 32))
    assert mosaic.shape == (128, 160, 3)  # 4 x 5 windows
    again, n = windows(torch.from_numpy(mosaic.transpose(2, 0, 1))[None], (32, 32))
    direct, m = windows(torch.from_numpy(scaling.to_unit(plane, (0, 3)).transpose(2, 0, 1))[None], (32, 32))
    assert n == m == 20 and torch.equal(again, direct)
    assert window_starts(1000, 32) == [0, 138, 277, 415, 553, 691, 830, 968]  # at most eight a side


def test_a_large_image_is_routed_on_windows_at_full_resolution(restorer):
    side = PLAN_SIDE + 64
    checkerboard = np.indices((side, side)).sum(axis=0) % 2  # one-pixel squares, which block averages erase
    image = np.repeat(0.3 + 0.4 * checkerboard[..., None], 3, axis=2).astype(np.float32)
    plan = restorer.plan(image, channels="rgb")
    view = planning_view(image, Scaling.fit(image, make_layout(image.shape)), (0, 3))
    assert view.shape[0] < side and np.allclose(view, 0.5, atol=1e-6)
    # Routed on the view, the plan would be that of flat grey; the router sees the squares.
    assert not np.allclose(plan.probs, restorer.plan(view, channels="rgb").probs, atol=1e-4)


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


# -- arrays of every kind keep shape and dtype -------------------------------------------------------


def _u16(shape):
    return np.random.default_rng(3).integers(500, 4000, shape).astype(np.uint16)


@pytest.mark.parametrize(
    ("name", "make", "axes"),
    [
        ("uint8 grey", lambda: (smooth_rgb(40)[..., 0] * 255).astype(np.uint8), None),
        ("uint8 rgb", lambda: (smooth_rgb(40) * 255).astype(np.uint8), None),
        ("uint16 yxc", lambda: _u16((40, 36, 3)), None),
        ("float32 grey", lambda: smooth_rgb(40)[..., 1] * 1000 - 200, None),
        (
            "float32 rgba",
            lambda: np.concatenate([smooth_rgb(40), np.linspace(0, 1, 40 * 40).reshape(40, 40, 1)], -1).astype(
                np.float32
            ),
            None,
        ),
        ("uint16 zyx", lambda: _u16((3, 40, 36)), "ZYX"),
        ("uint16 tzyx", lambda: _u16((2, 2, 24, 20)), None),
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
    image = _u16((32, 32))
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
        image, tile=64, overlap=16, channels="rgb", progress=lambda d, t: calls.append((d, t))
    )
    yielded = []
    while True:
        try:
            yielded.append(next(steps))
        except StopIteration as stop:
            result = stop.value
            break
    assert yielded == calls == [(i, 4) for i in range(5)]
    assert result.shape == image.shape and result.dtype == image.dtype


def test_closing_restore_steps_stops_between_tiles(restorer, monkeypatch):
    backbone = Spy(monkeypatch, restorer.model, "restore_features")
    steps = restorer.restore_steps(smooth_rgb(112), tile=64, overlap=16, channels="rgb")
    assert next(steps) == (0, 4) and next(steps) == (1, 4)
    steps.close()  # what a napari worker's quit does between yields
    assert len(backbone.calls) == 1


# -- dask ---------------------------------------------------------------------------------------------


def test_dask_stack_matches_the_in_memory_result(restorer):
    stack = _u16((4, 40, 36))
    expected = restorer.restore(stack, axes="ZYX", plan_per="stack", tile=64, overlap=16)
    lazy = restorer.restore(da.from_array(stack, chunks=(1, 40, 36)), axes="ZYX", tile=64, overlap=16)
    assert isinstance(lazy, da.Array) and lazy.shape == stack.shape and lazy.dtype == stack.dtype
    assert np.array_equal(lazy.compute(), expected)


@pytest.mark.parametrize(
    ("chunks", "tile"),
    [
        ((1, 75, 85, 3), 64),  # chunks across Y and X, each crossed by tiles
        ((1, 40, 50, 3), 64),  # chunks smaller than a tile: merged to a tile
        ((2, 100, 64, 3), 64),
        ((1, 75, 85, 3), 0),  # one piece: each chunk needs the whole image
    ],
)
def test_dask_chunks_across_the_image_give_the_in_memory_values(restorer, chunks, tile):
    """Each chunk runs the whole image's tiles that touch it, with the same weights: not a bound, equality."""
    stack = (np.stack([smooth_rgb(150)[:, :170], smooth_rgb(150)[:, :170] ** 2]) * 255).astype(np.uint8)
    expected = restorer.restore(stack, axes="ZYXC", plan_per="stack", tile=tile, overlap=16)
    lazy = restorer.restore(da.from_array(stack, chunks=chunks), axes="ZYXC", tile=tile, overlap=16)
    got = lazy.compute()
    assert got.shape == stack.shape and got.dtype == np.uint8
    assert np.array_equal(got, expected)


def test_lazy_restoration_can_be_shipped_to_a_cluster(restorer):
    """A dask.distributed worker receives the graph pickled: restorer, plan and scaling included."""
    stack = _u16((2, 24, 24))
    lazy = restorer.restore(da.from_array(stack, chunks=(1, 24, 24)), axes="ZYX", tile=64, overlap=16)
    shipped = cloudpickle.loads(cloudpickle.dumps(lazy))
    assert np.array_equal(shipped.compute(), lazy.compute())


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


def test_a_plan_with_experts_this_model_lacks_is_refused(restorer):
    plan = restorer.plan(smooth_rgb(32))
    foreign = dataclasses.replace(plan, routes=[5] * 8)  # e.g. from a model with six experts per stage
    with pytest.raises(ValueError, match=r"\[0, 2\]"):
        restorer.restore(smooth_rgb(32), plan=foreign)


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
    assert restorer.autocast == native_bf16(restorer.device)  # bf16 where the hardware computes it natively
    assert not Restorer(SLERIR(load_config("tiny")), autocast=False).autocast


# -- options are integers, devices exist -------------------------------------------------------------


@pytest.mark.parametrize(
    "routes",
    [[1.5] + [0] * 7, [True] * 8, [0.0] * 8, np.zeros(8), torch.zeros(8), "01201201", 3],
)
def test_routes_that_are_not_integers_are_type_errors(restorer, routes):
    with pytest.raises(TypeError, match=r"integer|sequence"):
        restorer.restore(np.zeros((8, 8), np.uint8), routes=routes)


def test_integer_routes_of_any_kind_are_taken(restorer):
    for routes in (
        [0, 1, 2, 0, 1, 2, 0, 1],
        np.array([0, 1, 2, 0, 1, 2, 0, 1]),
        torch.tensor([0, 1, 2, 0, 1, 2, 0, 1]),
    ):
        assert restorer.resolve_options(routes=routes).routes == [0, 1, 2, 0, 1, 2, 0, 1]


def test_a_route_list_of_the_wrong_length_says_how_many_it_got(restorer):
    with pytest.raises(ValueError, match=r"routes need 8 expert indices \(.*\), got 2: \[1, 3\]$"):
        restorer.restore(np.zeros((8, 8), np.uint8), routes=[1, 3])


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
    restorer.restore(_u16((32, 40, 3)), channels="rgb", tile=0)
    restorer.restore((smooth_rgb(32) * 255).astype(np.uint8), tile=0)
    restorer.restore(smooth_rgb(32), tile=0)  # float: channels, unless said to be colour
    assert len(backbone.calls) == 1 + 1 + 3


# -- a broken network never yields a plausible image ------------------------------------------------


@pytest.mark.parametrize("image", [np.full((16, 16, 3), 100, np.uint8), smooth_rgb(16), _u16((16, 16))])
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
