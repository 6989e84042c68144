"""The SLER-IR network on the tiny config: shapes, routing modes, gradients and GLGF."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from sync_guard import forbid_host_syncs
from torch.utils._python_dispatch import TorchDispatchMode

from kernels.reference import PIXEL_MAJOR_MIN_PIXELS
from slerir_core.config import STAGES
from slerir_core.losses import hyperspherical_contrastive_loss, restoration_loss, routing_consistency_loss
from slerir_core.model import SLERIR, experts, parameter_counts
from slerir_core.model.blocks import from_heads, to_heads
from slerir_core.model.experts import RoutedStage, grouped_forward, make_expert


@pytest.mark.parametrize("size", [(1, 1), (7, 13), (37, 45), (64, 64)])
def test_any_size_round_trips(tiny_model, size):
    x = torch.rand(2, 3, *size)
    with torch.no_grad():
        y, info = tiny_model(x)
    assert y.shape == x.shape and torch.isfinite(y).all()
    assert info["routes"].shape == (2, 8) and info["probs"].shape == (2, 8, 3)
    assert info["degradation_map"].shape == (2, 3, 4, 4)
    assert torch.allclose(info["degradation_map"].sum(dim=1), torch.ones(2, 4, 4), atol=1e-5)


def test_routing_reads_windows_at_the_images_own_scale(tiny_model):
    tiny_model.eval()
    side = tiny_model.degradation_extractor.image_size[0]
    x = torch.rand(2, 3, 2 * side, 2 * side)
    quadrants = [x[..., i * side : (i + 1) * side, j * side : (j + 1) * side] for i in (0, 1) for j in (0, 1)]
    with torch.no_grad():
        expected = torch.stack([tiny_model.degradation_extractor(q)[0] for q in quadrants]).mean(dim=0)
        torch.testing.assert_close(tiny_model.degradation_embedding(x), expected)
        _, probs = tiny_model.router(expected)
        info = tiny_model.analyse(x)
        torch.testing.assert_close(info["probs"], probs)
        # Not the whole image resized to the extractor's input, which would show the pixels at half scale.
        assert not torch.allclose(tiny_model.degradation_embedding(x), tiny_model.degradation_extractor(x)[0])
        one = x[..., :side, :side]
        torch.testing.assert_close(tiny_model.degradation_embedding(one), tiny_model.degradation_extractor(one)[0])


def learnt(stage: RoutedStage) -> list[bool]:
    """Per expert: whether some parameter of it has a nonzero gradient (its slice of the stacks)."""
    grads = [p.grad for p in stage.parameters() if p.grad is not None]
    return [any(bool(g[j].abs().sum() > 0) for g in grads) for j in range(stage.num_experts)]


def expert_grads(model: SLERIR) -> dict[tuple[str, int], bool]:
    return {(name, j): flag for name, stage in model.stages.items() for j, flag in enumerate(learnt(stage))}


def test_soft_routing_grads_reach_argmax_expert_and_router_only(tiny_model):
    tiny_model.train().routing = "soft"
    restored, info = tiny_model(torch.rand(1, 3, 24, 24))
    restored.square().mean().backward()
    chosen = info["probs"].argmax(dim=-1)[0].tolist()
    grads = expert_grads(tiny_model)
    for i, name in enumerate(STAGES):
        for j in range(3):
            assert grads[(name, j)] == (j == chosen[i]), f"{name} expert {j} (chosen {chosen[i]})"
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in tiny_model.router.mlp.parameters())


def test_soft_output_mixes_all_experts(tiny_model):
    tiny_model.routing = "soft"
    x = torch.rand(1, 3, 16, 16)
    with torch.no_grad():
        soft, info = tiny_model(x)
        hard, _ = tiny_model(x, routes=info["routes"])
    assert not torch.allclose(soft, hard, atol=1e-5)


def test_soft_routing_with_all_gradients_trains_every_expert(tiny_config):
    torch.manual_seed(0)
    model = SLERIR(dataclasses.replace(tiny_config, soft_gradients="all")).train()
    model.routing = "soft"
    restored, _ = model(torch.rand(1, 3, 24, 24))
    restored.square().mean().backward()
    assert all(expert_grads(model).values())


def test_soft_skip_drops_only_the_unlikely_experts(tiny_config, monkeypatch):
    torch.manual_seed(0)
    full = SLERIR(tiny_config).train()
    full.routing = "soft"
    x = torch.rand(2, 3, 16, 16)
    probs = full.analyse(x, with_map=False)["probs"].detach()
    threshold = float(probs.flatten().sort().values[probs.numel() // 2])  # about half the (sample, expert) pairs
    skipping = SLERIR(dataclasses.replace(tiny_config, soft_skip=threshold)).train()
    skipping.load_state_dict(full.state_dict())
    skipping.routing = "soft"
    calls = count_calls(skipping, monkeypatch)
    with torch.no_grad():
        out_full, _ = full(x)
        out_skip, info = skipping(x)
    # An expert runs iff some sample chose it or gives it at least the threshold.
    for i, name in enumerate(STAGES):
        for j in range(3):
            needed = bool(((info["routes"][:, i] == j) | (info["probs"][:, i, j] >= threshold)).any())
            assert (calls[(name, j)] > 0) == needed, (name, j)
    assert sum(calls.values()) < 3 * len(STAGES)
    assert not torch.equal(out_full, out_skip)
    assert (out_full - out_skip).abs().max() < 0.5


def count_calls(model: SLERIR, monkeypatch) -> dict[tuple[str, int], int]:
    """Runs of each (stage, expert) alone, counted from then on."""
    calls = {(name, j): 0 for name in model.stages for j in range(model.config.num_experts)}
    names = {id(stage.stacked): name for name, stage in model.stages.items()}
    run = experts.grouped_forward

    def counting(stacked, x, routes=None, expert=None):
        if expert is not None:
            calls[(names[id(stacked)], expert)] += 1
        return run(stacked, x, routes, expert)

    monkeypatch.setattr(experts, "grouped_forward", counting)
    return calls


class ShapeLog(TorchDispatchMode):
    """Input shapes of every convolution and matrix product dispatched while active."""

    OPS = (torch.ops.aten.convolution, torch.ops.aten.bmm, torch.ops.aten.mm, torch.ops.aten.addmm)

    def __init__(self) -> None:
        super().__init__()
        self.shapes: list[tuple[str, tuple[tuple[int, ...], ...]]] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func.overloadpacket in self.OPS:
            shapes = tuple(tuple(a.shape) for a in args if isinstance(a, torch.Tensor))
            self.shapes.append((str(func.overloadpacket), shapes))
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("routing", ["hard", "soft"])
def test_steps_with_other_routes_run_the_same_shapes(tiny_model, routing):
    """However the samples spread over the experts, a training step runs the same convolution and matrix
    product shapes (forward and backward): a GPU meets no new shape to plan for when the routes change."""
    tiny_model.train().routing = routing
    x = torch.rand(4, 3, 16, 16)
    logs = []
    for routes in (torch.zeros(4, 8, dtype=torch.long), torch.tensor([[0, 1, 2, 0, 1, 2, 0, 1]] * 2 + [[2] * 8] * 2)):
        with ShapeLog() as log:
            if routing == "hard":
                restored, _ = tiny_model(x, routes=routes)
            else:  # the router's probabilities, made sure of the routes: argmax = routes
                info = tiny_model.analyse(x, with_map=False)
                probs = (info["probs"] + 2 * torch.nn.functional.one_hot(routes, 3)).softmax(dim=-1)
                restored = tiny_model.restore_features(x, routes, info["prior"], probs=probs)
            restored.mean().backward()
        logs.append(log.shapes)
    assert len(logs[0]) > 50 and logs[0] == logs[1]


def test_mixed_batch_equals_samples_one_by_one(tiny_model):
    x = torch.rand(3, 3, 20, 28)
    routes = torch.randint(0, 3, (3, 8))
    with torch.no_grad():
        batch, _ = tiny_model(x, routes=routes)
        single = torch.cat([tiny_model(x[i : i + 1], routes=routes[i : i + 1])[0] for i in range(3)])
    assert torch.allclose(batch, single, atol=1e-5)


def test_manual_routes_change_output_and_are_honoured_per_sample(tiny_model):
    x = torch.rand(1, 3, 16, 16).expand(2, -1, -1, -1)
    with torch.no_grad():
        a, info = tiny_model(x, routes=[0] * 8)
        b, _ = tiny_model(x, routes=[[0] * 8, [2, 2, 2, 2, 1, 1, 1, 1]])
    assert info["routes"].tolist() == [[0] * 8] * 2
    assert torch.allclose(a[0], b[0], atol=1e-6)
    assert not torch.allclose(b[0], b[1], atol=1e-4)


@pytest.mark.parametrize(
    ("routes", "message"),
    [([0] * 7, "need 8 expert indices"), ([0] * 7 + [3], r"must be in \[0, 2\]"), ([[0] * 8] * 3, "for 3 samples")],
)
def test_bad_routes_are_clear_errors(tiny_model, routes, message):
    with pytest.raises(ValueError, match=message):
        tiny_model(torch.rand(2, 3, 16, 16), routes=routes)


def test_glgf_prior_changes_output_and_can_be_switched_off(tiny_config):
    torch.manual_seed(0)
    model = SLERIR(tiny_config).eval()
    x = torch.rand(1, 3, 16, 16)
    with torch.no_grad():
        _, info = model(x)
        base = model.restore_features(x, info["routes"], info["prior"])
        shifted = model.restore_features(x, info["routes"], info["prior"] + 1.0)
    assert not torch.allclose(base, shifted, atol=1e-4)

    plain = SLERIR(dataclasses.replace(tiny_config, glgf=False)).eval()
    assert plain.glgf is None and plain.content_extractor is None
    with torch.no_grad():
        y, info = plain(x)
    assert y.shape == x.shape and "prior" not in info
    assert sum(p.numel() for p in plain.parameters()) < sum(p.numel() for p in model.parameters())


def test_tiled_box_reads_the_matching_part_of_the_prior(tiny_model):
    for injection in tiny_model.injections:
        torch.nn.init.normal_(injection.film.weight, std=0.5)  # per-pixel use of the prior, as after training
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        info = tiny_model.analyse(x)
        whole = tiny_model.restore_features(x, info["routes"], info["prior"])
        # The right half restored alone, told where it lies, must match the whole image away from the seam.
        half = tiny_model.restore_features(x[..., 16:], info["routes"], info["prior"], box=(0.0, 0.5, 1.0, 1.0))
        wrong = tiny_model.restore_features(x[..., 16:], info["routes"], info["prior"])
    inner = (..., slice(4, 28), slice(12, 16))
    assert (half[inner] - whole[..., 16:][inner]).abs().max() < (wrong[inner] - whole[..., 16:][inner]).abs().max()


def test_tiles_in_one_batch_each_read_their_own_box_of_the_prior(tiny_model):
    """A batch of tiles of one image, sharing its (1, P, h, w) prior, gives what each tile gives alone."""
    for injection in tiny_model.injections:
        torch.nn.init.normal_(injection.film.weight, std=0.5)  # per-pixel use of the prior, as after training
    image = torch.rand(1, 3, 40, 56)
    corners = [(0, 0), (0, 32), (16, 16), (16, 32)]  # 24 x 24 tiles
    tiles = torch.cat([image[..., y : y + 24, x : x + 24] for y, x in corners])
    boxes = torch.tensor([(y / 40, x / 56, (y + 24) / 40, (x + 24) / 56) for y, x in corners], dtype=torch.float64)
    with torch.no_grad():
        info = tiny_model.analyse(image)
        routes = info["routes"].expand(len(corners), -1)
        batched = tiny_model.restore_features(tiles, routes, info["prior"], boxes)
        alone = [
            tiny_model.restore_features(tile[None], info["routes"], info["prior"], tuple(box))
            for tile, box in zip(tiles, boxes.tolist(), strict=True)
        ]
        same_box = tiny_model.restore_features(tiles, routes, info["prior"], boxes[:1].expand(len(corners), -1))
    torch.testing.assert_close(batched, torch.cat(alone), rtol=0, atol=1e-5)
    assert (same_box[1:] - batched[1:]).abs().amax() > 1e-3  # the boxes matter: one box for all differs


def test_task_probabilities_use_prototypes(tiny_config):
    cfg = dataclasses.replace(tiny_config, tasks=("noise", "rain"))
    model = SLERIR(cfg).eval()
    with torch.no_grad():
        x = torch.rand(1, 3, 16, 16)
        f = model.analyse(x)["embeddings"]
        model.task_prototypes.copy_(torch.stack([f[0], -f[0]]))
        info = model.analyse(x)
    assert info["task_probs"].shape == (1, 2)
    assert info["task_probs"][0, 0] > 0.99


@pytest.mark.parametrize("layernorm", ["with_bias", "bias_free"])
def test_grouped_forward_equals_expert_by_expert(tiny_config, layernorm):
    torch.manual_seed(0)
    model = SLERIR(dataclasses.replace(tiny_config, layernorm=layernorm, blocks=(2, 1, 1, 1))).eval()
    stage = model.stages["enc1"]
    for p in stage.parameters():  # make the experts differ in every parameter, norms included
        p.data.add_(0.1 * torch.randn_like(p))
    x = torch.randn(4, 8, 11, 13)
    routes = torch.tensor([2, 0, 2, 1])
    with torch.no_grad():
        grouped = grouped_forward(stage.stacked, x, routes)
        one_by_one = torch.cat([stage.expert(int(r))(x[i : i + 1]) for i, r in enumerate(routes)])
    assert torch.allclose(grouped, one_by_one, atol=1e-5)


def test_stacked_experts_save_and_load_as_one_entry_per_expert():
    """Weights files name each expert's tensors apart (``experts.<j>.<name>``), as the stage stores them."""
    stage = perturbed_stage()
    state = stage.state_dict()
    for j in range(3):
        for name, value in stage.expert(j).state_dict().items():
            assert torch.equal(state.pop(f"experts.{j}.{name}"), value), (j, name)
    assert state == {}
    fresh = RoutedStage([make_expert(8, 2, 2, 2.0, True, True) for _ in range(3)])
    fresh.load_state_dict(stage.state_dict())
    x, routes = torch.randn(3, 8, 5, 6), torch.tensor([1, 2, 0])
    assert torch.equal(fresh(x, routes), stage(x, routes))
    partial = {k: v for k, v in stage.state_dict().items() if not k.startswith("experts.2.0.attn.qkv.")}
    with pytest.raises(RuntimeError, match=r"Missing key\(s\).*stacked\.0\.attn\.qkv\.weight"):
        fresh.load_state_dict(partial)


def test_parameter_counts_split_the_model_into_its_parts(tiny_model):
    n = parameter_counts(tiny_model)
    assert n["total"] == sum(p.numel() for p in tiny_model.parameters())
    assert n["experts_on_path"] == sum(n[f"expert_{stage}"] for stage in STAGES)
    # Every routed stage holds C experts of one size: the other C - 1 per stage are what one path leaves out.
    assert n["total"] - n["one_path"] == (tiny_model.config.num_experts - 1) * n["experts_on_path"]
    assert n["router"] == sum(p.numel() for p in tiny_model.router.parameters())


@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_from_heads_inverts_to_heads_and_keeps_the_layout(layout):
    x = torch.randn(1, 12, 5, 7).contiguous(memory_format=layout)
    back = from_heads(to_heads(x, 3), 5, 7)
    assert torch.equal(back, x)
    # What oneDNN sees: a convolution of a channels_last map answers channels_last, else it copied to NCHW.
    y = torch.nn.functional.conv2d(back, torch.randn(4, 12, 1, 1))
    assert y.is_contiguous(memory_format=torch.channels_last) is (layout == torch.channels_last)


def test_large_maps_run_channels_last_through_every_backbone_convolution(tiny_model):
    """A mix of layouts made oneDNN copy whole maps between NCHW and NHWC. Wherever the attention runs
    pixel-major, every backbone convolution (stages, injections, resampling, output) answers channels_last,
    also for a single image. (Smaller maps take the plain attention, whose output is NCHW.)"""
    answers = {}
    hooks = [
        m.register_forward_hook(lambda mod, args, out, name=name: answers.update({name: out}))
        for name, m in tiny_model.named_modules()
        if isinstance(m, torch.nn.Conv2d)
        and not name.startswith(("degradation_extractor", "content_extractor", "glgf"))
        and not name.endswith(("align", "film"))  # on the small prior map, before sampling
    ]
    with torch.no_grad():
        tiny_model(torch.rand(1, 3, 128, 128))
    for hook in hooks:
        hook.remove()
    large = {name: out for name, out in answers.items() if out.shape[-2:].numel() >= PIXEL_MAJOR_MIN_PIXELS}
    assert len(large) > 10
    assert [name for name, out in large.items() if not out.is_contiguous(memory_format=torch.channels_last)] == []


def perturbed_stage(channels: int = 8, blocks: int = 2, ln_bias: bool = True) -> RoutedStage:
    """A routed stage whose three experts differ in every parameter, norms and temperatures included."""
    stage = RoutedStage([make_expert(channels, 2, blocks, 2.0, True, ln_bias) for _ in range(3)])
    with torch.no_grad():
        for p in stage.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return stage


def outputs_and_grads(x: torch.Tensor, run, *leaves: torch.Tensor) -> list[torch.Tensor]:
    """``run(x)`` and the gradients of a fixed random projection of it: of x, then of ``leaves``."""
    x = x.detach().requires_grad_()
    out = run(x)
    weights = torch.randn(out.shape, generator=torch.Generator().manual_seed(1))
    return [out, *torch.autograd.grad(out, [x, *leaves], weights, allow_unused=True, materialize_grads=True)]


@pytest.mark.parametrize("ln_bias", [True, False])
def test_grouped_hard_routing_equals_running_each_group_through_its_expert(ln_bias):
    """Outputs and gradients (of the input and of every expert's parameters: zero for an expert no sample
    chose) within 1e-5 in fp32."""
    torch.manual_seed(0)
    stage = perturbed_stage(ln_bias=ln_bias)
    x = torch.randn(5, 8, 9, 7)
    routes = torch.tensor([2, 0, 2, 2, 0])  # expert 1 unused

    alone = [stage.expert(j) for j in range(3)]

    def per_group(x):
        out = torch.zeros_like(x)
        for j in (0, 2):
            idx = (routes == j).nonzero().squeeze(1)
            out = out.index_copy(0, idx, alone[j](x.index_select(0, idx)))
        return out

    got = outputs_and_grads(x, lambda x: stage(x, routes), *stage.parameters())
    out, dx, *by_expert = outputs_and_grads(x, per_group, *(p for e in alone for p in e.parameters()))
    stacks = len(got) - 2  # by_expert holds expert 0's parameters, then expert 1's, ...: restack them
    want = [out, dx, *(torch.stack(by_expert[i::stacks]) for i in range(stacks))]
    for a, b in zip(got, want, strict=True):
        assert torch.allclose(a, b, atol=1e-5, rtol=1e-5)
    assert all(not g[1].any() and g[0].any() and g[2].any() for g in got[2:]), "expert 1 unused"
    assert stage.trained_experts.tolist() == [True, False, True]


@pytest.mark.parametrize("gradients", ["argmax", "all"])
def test_soft_routing_without_host_reads_equals_expert_by_expert(gradients):
    """The fixed-shape soft mix against the expert-by-expert one (the CPU's, with a threshold that skips
    nothing): outputs and gradients of the input, the probabilities and every expert's parameters."""
    torch.manual_seed(0)
    stage = perturbed_stage()
    x = torch.randn(4, 8, 9, 7)
    logits = torch.randn(4, 3, requires_grad=True)
    results = []
    for skip in (0.0, 1e-30):

        def run(x, skip=skip):
            probs = logits.softmax(dim=-1)
            return stage(x, probs.argmax(dim=-1), probs, gradients, skip)

        results.append(outputs_and_grads(x, run, logits, *stage.parameters()))
    for a, b in zip(*results, strict=True):
        assert torch.allclose(a, b, atol=1e-5, rtol=1e-5)


def test_soft_argmax_gradients_reach_each_samples_chosen_expert_only():
    torch.manual_seed(0)
    stage = perturbed_stage()
    probs = torch.tensor([[0.2, 0.7, 0.1], [0.5, 0.3, 0.2], [0.1, 0.8, 0.1]])  # experts 1, 0, 1: 2 unchosen
    stage(torch.randn(3, 8, 6, 6), probs.argmax(-1), probs).square().sum().backward()
    assert learnt(stage) == [True, True, False]
    assert stage.trained_experts.tolist() == learnt(stage)


@pytest.mark.parametrize("routing", ["soft", "hard"])
def test_training_forward_loss_and_backward_read_nothing_back(tiny_config, routing):
    """Phase 1 (soft routing, with the contrastive and routing-consistency terms) and phase 2 (hard routing
    on mixed routes, routing modules frozen): no op that would make the host wait for a GPU."""
    torch.manual_seed(0)
    model = SLERIR(dataclasses.replace(tiny_config, tasks=("noise", "rain", "haze"))).train()
    model.routing = routing
    x, labels = torch.rand(4, 3, 16, 16), torch.tensor([0, 1, 2, 1])
    targets = torch.tensor([[0] * 8, [1] * 8, [-1] * 8])
    mixed = torch.tensor([[0, 1, 2, 0, 1, 2, 0, 1], [2] * 8, [1, 0, 0, 2, 2, 1, 1, 0], [0] * 8])
    if routing == "hard":
        for module in model.routing_modules():
            module.requires_grad_(False)
    with forbid_host_syncs():
        if routing == "soft":
            restored, info = model(x)
            loss = restoration_loss(restored, x) + hyperspherical_contrastive_loss(info["embeddings"], labels, 0.5)
            loss = loss + routing_consistency_loss(info["probs"], labels, targets)
        else:  # the forward of hard routing with the router's routes replaced by mixed ones
            info = model.analyse(x, with_map=False)
            loss = restoration_loss(model.restore_features(x, mixed, info["prior"]), x)
        loss.backward()
    flags = torch.stack([stage.trained_experts for stage in model.stages.values()])
    if routing == "hard":
        assert torch.equal(flags, (mixed.T[..., None] == torch.arange(3)).any(dim=1))
    else:
        assert torch.equal(flags, (info["routes"].T[..., None] == torch.arange(3)).any(dim=1))
