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
from slerir_core.checkpoint import WeightsError, save_weights
from slerir_core.config import load_config
from slerir_core.io import ImageError, Scaling, make_layout
from slerir_core.model import SLERIR
from slerir_core.restore import (
    Plan,
    Restorer,
    TileGrid,
    blend_weights,
    planning_view,
    resolve_device,
    tile_spans,
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
    plan = restorer.plan(image)
    assert plan.label == "noise" and plan.confidence > 0.5
    assert restorer.task_routes()["noise"] == plan.routes  # the prototype is this image's routing vector
    assert set(plan.task_probs) == {"noise", "blur"} and sum(plan.task_probs.values()) == pytest.approx(1, abs=1e-5)
    assert plan.task_map.shape == (2, 4, 4) and np.allclose(plan.task_map.sum(axis=0), 1, atol=1e-5)


def test_the_plan_is_computed_once_per_image_and_tiles_get_their_prior_box(restorer, monkeypatch):
    analyse = Spy(monkeypatch, restorer.model, "analyse")
    backbone = Spy(monkeypatch, restorer.model, "restore_features")
    restorer.restore(smooth_rgb(80), tile=48, overlap=16)
    assert len(analyse.calls) == 1
    grid = TileGrid.build(80, 80, 48, 16)
    expected = {(y0 / 80, x0 / 80, y1 / 80, x1 / 80) for y0, y1 in grid.rows for x0, x1 in grid.cols}
    boxes = {args[3] for args, _ in backbone.calls}
    assert len(backbone.calls) == len(grid) == 4 and boxes == expected


def test_manual_routes_replace_the_plans_and_change_the_output(restorer, monkeypatch):
    image = smooth_rgb(48)
    plan = restorer.plan(image)
    other = [(r + 1) % 3 for r in plan.routes]
    backbone = Spy(monkeypatch, restorer.model, "restore_features")
    routed = restorer.restore(image, plan=plan, tile=0)
    manual = restorer.restore(image, plan=plan, routes=other, tile=0)
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


# -- tiles agree with the whole image, without seams -------------------------------------------------


def seam_ratio(restorer: Restorer, image: np.ndarray, whole: np.ndarray, tile: int, overlap: int) -> float:
    """Gradient energy of (tiled - whole) across tile edges, over its median elsewhere (1 = no seam)."""
    tiled = restorer.restore(image, tile=tile, overlap=overlap)
    diff = (tiled - whole).mean(axis=2)
    grid = TileGrid.build(*image.shape[:2], tile, overlap)
    edges = sorted({s for s, _ in grid.cols[1:]} | {e for _, e in grid.cols[:-1]})
    across = np.abs(np.diff(diff, axis=1)).mean(axis=0)  # across[i] is between columns i and i + 1
    at_edges = across[[e - 1 for e in edges]].mean()
    return float(at_edges / np.median(across))


def test_tiled_and_untiled_restoration_agree(restorer):
    image = smooth_rgb(96)
    whole = restorer.restore(image, tile=0)
    tiled = restorer.restore(image, tile=48, overlap=16)
    assert np.abs(tiled - whole).mean() < TILED_MEAN_TOLERANCE
    assert np.abs(tiled - whole).mean() < 0.5 * np.abs(whole - image).mean()  # small next to the model's effect


def test_feathered_tiles_leave_no_seam_and_the_test_sees_hard_ones(restorer):
    image = smooth_rgb(96)
    whole = restorer.restore(image, tile=0)
    assert seam_ratio(restorer, image, whole, 48, 16) < 2.0
    assert seam_ratio(restorer, image, whole, 48, 0) > 3.0  # hard edges without overlap: the measure works


# -- arrays of every kind keep shape and dtype -------------------------------------------------------


def _u16(shape):
    return np.random.default_rng(3).integers(500, 4000, shape).astype(np.uint16)


@pytest.mark.parametrize(
    ("name", "make", "axes"),
    [
        ("uint8 grey", lambda: (smooth_rgb(40)[..., 0] * 255).astype(np.uint8), None),
        ("uint8 rgb", lambda: (smooth_rgb(40) * 255).astype(np.uint8), None),
        ("uint16 rgb", lambda: _u16((40, 36, 3)), None),
        ("float32 grey", lambda: smooth_rgb(40)[..., 1] * 1000 - 200, None),
        (
            "float32 rgba",
            lambda: np.concatenate([smooth_rgb(40), np.linspace(0, 1, 40 * 40).reshape(40, 40, 1)], -1).astype(
                np.float32
            ),
            None,
        ),
        ("uint16 zyx", lambda: _u16((3, 40, 36)), None),
        ("uint16 tzyx", lambda: _u16((2, 2, 24, 20)), None),
        ("float32 cyx", lambda: np.random.default_rng(4).random((2, 30, 30)).astype(np.float32), "CYX"),
        ("uint8 5-D", lambda: np.random.default_rng(5).integers(0, 255, (2, 1, 2, 20, 20)).astype(np.uint8), "TZCYX"),
    ],
)
def test_round_trips_keep_shape_and_dtype(restorer, name, make, axes):
    image = make()
    out = restorer.restore(image, tile=32, overlap=8, axes=axes)
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


@pytest.mark.parametrize("shape", [(8, 8), (8, 9, 3), (8, 50), (2, 8, 8)])
def test_small_and_thin_images_are_restored(restorer, shape):
    image = np.random.default_rng(7).integers(0, 255, shape).astype(np.uint8)
    out = restorer.restore(image, tile=16, overlap=4)
    assert out.shape == image.shape and out.dtype == np.uint8


@pytest.mark.parametrize("shape", [(1, 1), (1, 1, 3), (1, 50), (5, 7, 3)])
def test_images_under_eight_pixels_a_side_are_refused(restorer, shape):
    with pytest.raises(ImageError, match="at least 8×8"):
        restorer.restore(np.zeros(shape, np.uint8))


# -- progress and cancelling -------------------------------------------------------------------------


def test_restore_steps_yields_progress_and_returns_the_array(restorer):
    image = smooth_rgb(80)
    calls: list[tuple[int, int]] = []
    steps = restorer.restore_steps(image, tile=48, overlap=16, progress=lambda d, t: calls.append((d, t)))
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
    steps = restorer.restore_steps(smooth_rgb(80), tile=48, overlap=16)
    assert next(steps) == (0, 4) and next(steps) == (1, 4)
    steps.close()  # what a napari worker's quit does between yields
    assert len(backbone.calls) == 1


# -- dask ---------------------------------------------------------------------------------------------


def test_dask_stack_matches_the_in_memory_result(restorer):
    stack = _u16((4, 40, 36))
    expected = restorer.restore(stack, plan_per="stack", tile=32, overlap=8)
    lazy = restorer.restore(da.from_array(stack, chunks=(1, 40, 36)), tile=32, overlap=8)
    assert isinstance(lazy, da.Array) and lazy.shape == stack.shape and lazy.dtype == stack.dtype
    assert np.array_equal(lazy.compute(), expected)


def test_dask_chunks_across_the_image_blend_like_tiles(restorer):
    stack = (np.stack([smooth_rgb(64)] * 2) * 255).astype(np.uint8)
    expected = restorer.restore(stack, axes="ZYXC", plan_per="stack", tile=32, overlap=8)
    lazy = restorer.restore(da.from_array(stack, chunks=(1, 32, 40, 3)), axes="ZYXC", tile=32, overlap=8)
    got = lazy.compute()
    assert got.shape == stack.shape and got.dtype == np.uint8
    assert np.abs(got.astype(float) - expected).mean() / 255 < TILED_MEAN_TOLERANCE


def test_lazy_restoration_can_be_shipped_to_a_cluster(restorer):
    """A dask.distributed worker receives the graph pickled: restorer, plan and scaling included."""
    stack = _u16((2, 24, 24))
    lazy = restorer.restore(da.from_array(stack, chunks=(1, 24, 24)), tile=16, overlap=4)
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
        (np.zeros((8, 8), np.uint8), {"tile": 32, "overlap": 16}, "overlap"),
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
    assert restorer.resolve_options() == (None, 64, 16)  # tiny: tile 64, overlap 16
    assert restorer.resolve_options(tile=32) == (None, 32, 8)  # the config's overlap, at most a quarter tile
    assert restorer.resolve_options(tile=0, overlap=50) == (None, 0, 0)  # one piece: overlap is moot


def test_device_resolution():
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device(None).type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA"):
            resolve_device("cuda")
    with pytest.raises(ValueError, match="unknown device"):
        resolve_device("gpu")
    restorer = Restorer(SLERIR(load_config("tiny")))
    assert restorer.autocast == (restorer.device.type == "cuda")  # bf16 on CUDA only


def test_plan_is_a_dataclass_with_documented_fields():
    names = {f.name for f in dataclasses.fields(Plan)}
    assert {"routes", "probs", "label", "confidence", "degradation_map", "task_map", "prior"} <= names
