"""Planning: what a plan holds, when images are planned, the planning view and the router's windows, and the
checks of manual routes."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from restoring import Spy, smooth_rgb

from slerir_core.config import load_config
from slerir_core.io.layout import make_layout
from slerir_core.io.scaling import Scaling
from slerir_core.model import SLERIR
from slerir_core.model.extractors import window_starts, windows
from slerir_core.plan import PLAN_SIDE, Plan, confident_above, family_probabilities, planning_view, routing_mosaic
from slerir_core.restore import Restorer


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


def with_prototypes(image: np.ndarray) -> Restorer:
    """A tiny model with task prototypes for "noise" (``image``'s own routing direction) and "blur" (its
    opposite)."""
    torch.manual_seed(0)
    model = SLERIR(dataclasses.replace(load_config("tiny"), tasks=("noise", "blur")))
    with torch.no_grad():
        f = model.analyse(torch.from_numpy(image.transpose(2, 0, 1))[None])["embeddings"]
        model.task_prototypes.copy_(torch.stack([f[0], -f[0]]))
    return Restorer(model)


def test_plan_gives_a_label_and_task_map_when_the_model_has_task_prototypes():
    image = smooth_rgb(48)
    restorer = with_prototypes(image)
    plan = restorer.plan(image, channels="rgb")
    assert plan.label == "noise" and plan.confidence > 0.5
    assert restorer.task_routes()["noise"] == plan.routes  # the prototype is this image's routing vector
    assert set(plan.task_probs) == {"noise", "blur"} and sum(plan.task_probs.values()) == pytest.approx(1, abs=1e-5)
    assert plan.task_map.shape == (2, 4, 4) and np.allclose(plan.task_map.sum(axis=0), 1, atol=1e-5)


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


def test_a_plan_with_experts_this_model_lacks_is_refused(restorer):
    plan = restorer.plan(smooth_rgb(32))
    foreign = dataclasses.replace(plan, routes=[5] * 8)  # e.g. from a model with six experts per stage
    with pytest.raises(ValueError, match=r"\[0, 2\]"):
        restorer.restore(smooth_rgb(32), plan=foreign)


def test_plan_is_a_dataclass_with_documented_fields():
    names = {f.name for f in dataclasses.fields(Plan)}
    assert {"routes", "probs", "label", "confidence", "degradation_map", "task_map", "prior"} <= names


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


def test_a_label_is_given_from_halfway_between_chance_and_certainty():
    assert confident_above(5) == pytest.approx(0.6) and confident_above(2) == pytest.approx(0.75)


def test_microscopy_tasks_count_with_their_family():
    probs = {"noise": 0.36, "micro_noise": 0.36, "rain": 0.2, "micro_blur": 0.05, "blur": 0.03}
    assert family_probabilities(probs) == pytest.approx({"noise": 0.72, "rain": 0.2, "blur": 0.08})
    assert list(family_probabilities(probs)) == ["noise", "rain", "blur"]


@pytest.mark.parametrize(
    ("changes", "kind", "text"),
    [
        ({}, "label", "noise (80%)"),
        ({"label": None, "confidence": None, "task_probs": {}}, "none", "none (the model has no task labels)"),
        ({"confidence": 0.5, "task_probs": {"noise": 0.5, "rain": 0.3, "haze": 0.2}}, "uncertain", None),
        ({"grey": True}, "outside", "outside training (grey image)"),
        ({"grey": True, "grey_sigma": 0.1}, "label", "noise (80%)"),  # planned with its noise spread
        # Split between the photo and microscopy cases of one family: that family, summed.
        ({"confidence": 0.4, "task_probs": {"blur": 0.4, "micro_blur": 0.4, "rain": 0.2}}, "label", "blur (80%)"),
        ({"grey": True, "manual_routes": True}, "manual", "manual"),
    ],
)
def test_the_verdict_is_the_label_only_when_it_is_confident_in_a_colour_image_the_router_routed(
    restorer, changes, kind, text
):
    confident = {"label": "noise", "confidence": 0.8, "task_probs": {"noise": 0.8, "rain": 0.15, "haze": 0.05}}
    plan = dataclasses.replace(restorer.plan(smooth_rgb(48), channels="rgb"), **{**confident, **changes})
    verdict = plan.verdict()
    assert verdict.kind == kind and plan.summary()["verdict"] == {"kind": kind, "text": verdict.text}
    assert verdict.family == (text.split()[0] if kind == "label" else None)
    if text is not None:
        assert verdict.text == text
    else:  # the two likeliest tasks, so the reader sees what the model hesitates between
        assert verdict.text == "uncertain (noise 50%, rain 30%)"


def test_a_grey_image_is_planned_as_grey_and_outside_training_unless_its_noise_was_spread():
    image = smooth_rgb(48)
    restorer = with_prototypes(image)
    colour = restorer.plan(image, channels="rgb")
    assert not colour.grey and colour.verdict().kind == "label" and colour.verdict().text.startswith("noise (")
    grey = restorer.plan(image.mean(axis=-1))
    assert grey.grey and grey.label is not None and grey.verdict().text == "outside training (grey image)"
    clean = smooth_rgb(48, noise=0.0)  # each channel is a grey image to the network, too clean to spread
    channels = restorer.plan(clean, axes="YXC", channels="grey")
    assert channels.grey and channels.verdict().kind == "outside"
    noisy = np.clip(image.mean(axis=-1) + np.random.default_rng(0).normal(0, 0.1, image.shape[:2]), 0, 1)
    spread = restorer.plan(noisy.astype(np.float32))
    assert spread.grey and spread.grey_sigma is not None and spread.verdict().kind == "label"
