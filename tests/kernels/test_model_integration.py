"""The model's modules run through the kernels (Triton's interpreter on CPU) and through the twins: same results.

Covers what the op tests do not: the model's call patterns (``chunk`` views of qkv, the GLGF cross attention
with queries from the sampled prior, the grouped routed stage with 5-D stacked conv weights, biases and
(B, heads) temperatures), forward and gradients.
"""

from __future__ import annotations

import pytest
import torch

import kernels

pytest.importorskip("triton")
pytest.importorskip("open_clip")  # slerir_core.model imports the extractors
from slerir_core.model.blocks import TransformerBlock
from slerir_core.model.experts import RoutedStage, make_expert
from slerir_core.model.glgf import PriorInjection


@pytest.fixture
def kernels_on(monkeypatch, device):
    """The public functions run the Triton kernels (on CPU in the interpreter); checks at the end that they did."""
    from kernels.ops import routed, transposed_attention

    if device.type == "cpu":
        monkeypatch.setenv("SLERIR_KERNELS", "triton")  # TRITON_INTERPRET=1 is set by the root conftest
    calls: set[str] = set()
    for module, name in ((transposed_attention, "transposed_attention_triton"), (routed, "routed_pointwise_triton")):
        fn = getattr(module, name)
        monkeypatch.setattr(module, name, lambda *a, _fn=fn, _name=name: calls.add(_name) or _fn(*a))
    yield device, calls
    assert "transposed_attention_triton" in calls, "the attention kernel did not run"


def perturb(module: torch.nn.Module) -> torch.nn.Module:
    """Make every parameter (norms, temperatures) differ from its default."""
    with torch.no_grad():
        for p in module.parameters():
            p.add_(0.2 * torch.randn_like(p))
    return module


def forward_and_grads(module, inputs, run):
    """Output and gradients of inputs and parameters, with the kernels (default) or the twins."""
    inputs = [x.detach().requires_grad_() for x in inputs]
    out = run(module, *inputs)
    leaves = inputs + list(module.parameters())
    dout = torch.randn(out.shape, generator=torch.Generator().manual_seed(1)).to(out)  # the same for both runs
    return (out, *torch.autograd.grad(out, leaves, dout))


def compare(module, inputs, run, assert_rel_close):
    got = forward_and_grads(module, inputs, run)
    with kernels.use_reference():
        want = forward_and_grads(module, inputs, run)
    names = ["out"] + [f"d input {i}" for i in range(len(inputs))] + [n for n, _ in module.named_parameters()]
    for name, a, b in zip(names, got, want, strict=True):
        assert_rel_close(a, b, 1e-5, name)


def test_transformer_block(kernels_on, assert_rel_close):
    device, _ = kernels_on
    block = perturb(TransformerBlock(12, 2, 2.0, bias=True, ln_bias=False)).to(device)
    compare(block, [torch.randn(2, 12, 5, 7, device=device)], lambda m, x: m(x), assert_rel_close)


def test_prior_injection_cross_attention(kernels_on, assert_rel_close):
    device, _ = kernels_on
    injection = perturb(PriorInjection(prior_dim=5, channels=12, heads=3)).to(device)
    x = torch.randn(2, 12, 9, 7, device=device)
    prior = torch.randn(2, 5, 3, 3, device=device)
    compare(injection, [x, prior], lambda m, x, p: m(x, p, (0.0, 0.0, 1.0, 1.0)), assert_rel_close)


def test_grouped_routed_stage(kernels_on, assert_rel_close):
    """Mixed routes in one batch: each sample reads its expert's weights by index, as expert by expert."""
    device, calls = kernels_on
    assert not torch.backends.cudnn.allow_tf32, "the reference convolutions must run in full fp32, as the kernel"
    experts = torch.nn.ModuleList(perturb(make_expert(12, 2, 2, 2.0, True, True)) for _ in range(3)).to(device)
    stage = RoutedStage(list(experts))
    x = torch.randn(4, 12, 5, 7, device=device)
    routes = torch.tensor([2, 0, 2, 1], device=device)
    with torch.no_grad():
        got = stage(x, routes)
        with kernels.use_reference():
            want = torch.cat([experts[int(r)](x[i : i + 1]) for i, r in enumerate(routes)])
    assert_rel_close(got, want, 1e-5)
    assert "routed_pointwise_triton" in calls, "the routed kernel did not run"
