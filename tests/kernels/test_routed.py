"""Routed-expert ops: the grouped Triton GEMM vs its reference twin, the twins vs float64 per-sample loops."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import kernels
from kernels import routed_depthwise3x3_ref, routed_pointwise_ref

pytest.importorskip("triton")
from kernels.ops.routed import override_launch_config, routed_pointwise_triton

CUDA = torch.cuda.is_available()
FP32_TOL = 1e-5
HALF_TOL = {torch.float16: 5e-3, torch.bfloat16: 1e-2}
NAMES = ("y", "dx", "dweight", "dbias")
# (B, E, C_in, C_out, spatial, bias): mixed routes, unused experts, one expert, odd sizes, 2-D spatial.
CASES = [
    (3, 4, 6, 10, (37,), True),
    (5, 3, 48, 20, (61,), False),
    (2, 1, 17, 33, (5, 7), True),
    (4, 2, 64, 96, (129,), True),
    (1, 3, 8, 8, (200,), False),
]


def case_id(case):
    b, e, c_in, c_out, spatial, bias = case
    return f"B{b}E{e}-{c_in}to{c_out}-{'x'.join(map(str, spatial))}" + ("-bias" if bias else "")


def routes(b, e, device):
    """Random experts per sample, with at least two distinct routes whenever b, e >= 2."""
    index = torch.randint(0, e, (b,), device=device)
    if b >= 2 and e >= 2:
        index[0], index[1] = 0, e - 1
    return index[torch.randperm(b, device=device)]


def make_inputs(case, device, dtype=torch.float32):
    b, e, c_in, c_out, spatial, with_bias = case
    x = torch.randn(b, c_in, *spatial, device=device, dtype=dtype)
    weight = torch.randn(e, c_out, c_in, device=device) / c_in**0.5
    bias = torch.randn(e, c_out, device=device) if with_bias else None
    return x, weight, routes(b, e, device), bias


def grads(fn, x, weight, index, bias, dy):
    leaves = [t.detach().requires_grad_() for t in (x, weight) + ((bias,) if bias is not None else ())]
    y = fn(leaves[0], leaves[1], index, leaves[2] if bias is not None else None)
    return (y, *torch.autograd.grad(y, leaves, dy))


def pointwise_naive_float64(x, weight, index, bias):
    out = []
    for b in range(x.shape[0]):
        y = weight[index[b]].double() @ x[b].double().reshape(x.shape[1], -1)
        if bias is not None:
            y = y + bias[index[b]].double()[:, None]
        out.append(y.reshape(-1, *x.shape[2:]))
    return torch.stack(out)


def float64_twin(x, weight, index, bias, dy):
    bias64 = None if bias is None else bias.double()
    return grads(routed_pointwise_ref, x.double(), weight.double(), index, bias64, dy.double())


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_pointwise_reference_matches_float64_naive(case, assert_rel_close):
    x, weight, index, bias = make_inputs(case, "cpu")
    dy = torch.randn(x.shape[0], weight.shape[1], *x.shape[2:])
    ref = grads(routed_pointwise_ref, x, weight, index, bias, dy)
    bias64 = None if bias is None else bias.double()
    naive = grads(pointwise_naive_float64, x.double(), weight.double(), index, bias64, dy.double())
    for name, a, b in zip(NAMES[: len(ref)], ref, naive, strict=True):
        assert_rel_close(a, b, FP32_TOL, name)


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_pointwise_kernel_matches_reference(case, device, assert_rel_close):
    x, weight, index, bias = make_inputs(case, device)
    dy = torch.randn(x.shape[0], weight.shape[1], *x.shape[2:], device=device)
    got = grads(routed_pointwise_triton, x, weight, index, bias, dy)
    want = float64_twin(x, weight, index, bias, dy)
    for name, a, b in zip(NAMES[: len(got)], got, want, strict=True):
        assert a.dtype == torch.float32
        assert_rel_close(a, b, FP32_TOL, name)
    unused = [e for e in range(weight.shape[0]) if e not in index.tolist()]
    assert (got[2][unused] == 0).all(), "experts no sample chose get zero weight gradients"


@pytest.mark.parametrize(("block_m", "block_n", "block_k"), [(16, 16, 16), (32, 64, 16)])
def test_pointwise_tilings_agree(block_m, block_n, block_k, device, assert_rel_close):
    """Several row, pixel and channel tiles per program (K loop, dW splits, partial tiles)."""
    x, weight, index, bias = make_inputs((4, 3, 40, 50, (77,), True), device)
    dy = torch.randn(x.shape[0], weight.shape[1], *x.shape[2:], device=device)
    tiles = {"block_m": block_m, "block_n": block_n, "block_k": block_k}
    with override_launch_config(**tiles):  # both kinds: matmul (forward, dx) and dweight
        got = grads(routed_pointwise_triton, x, weight, index, bias, dy)
    for name, a, b in zip(NAMES, got, float64_twin(x, weight, index, bias, dy), strict=True):
        assert_rel_close(a, b, FP32_TOL, name)


def test_pointwise_strided_input_and_conv_weights(device, assert_rel_close):
    """x a channel slice of a bigger map (batch stride > C·N); weights stacked Conv2d ones (E, O, I, 1, 1)."""
    b, e, c_in, c_out, hw = 3, 2, 12, 7, (6, 11)
    big = torch.randn(b, 2 * c_in, *hw, device=device)
    weight = torch.randn(e, c_out, c_in, 1, 1, device=device)
    index = routes(b, e, device)
    dy = torch.randn(b, c_out, *hw, device=device)

    def run(fn, big, weight):
        return fn(big[:, c_in:], weight, index)

    got = grads(lambda x, w, i, _: run(routed_pointwise_triton, x, w), big, weight, index, None, dy)
    want = grads(
        lambda x, w, i, _: run(routed_pointwise_ref, x, w),
        big.double(),
        weight.double(),
        index,
        None,
        dy.double(),
    )
    for name, a, b_ in zip(("y", "dbig", "dweight"), got, want, strict=True):
        assert_rel_close(a, b_, FP32_TOL, name)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
def test_pointwise_half_precision(dtype, device, assert_rel_close):
    """16-bit activations, fp32 weights (as under autocast): outputs and dx in 16 bits, weight grads in fp32."""
    x, weight, index, bias = make_inputs((4, 3, 24, 40, (90,), True), device, dtype)
    dy = torch.randn(x.shape[0], weight.shape[1], *x.shape[2:], device=device, dtype=dtype)
    got = grads(routed_pointwise_triton, x, weight, index, bias, dy)
    want = float64_twin(x, weight, index, bias, dy)
    for name, a, b, want_dtype in zip(NAMES, got, want, (dtype, dtype, torch.float32, torch.float32), strict=True):
        assert a.dtype == want_dtype, name
        assert_rel_close(a, b, HALF_TOL[dtype], f"{dtype} {name}")


def test_pointwise_only_needed_grads(device, assert_rel_close):
    """Frozen weights: only dx; frozen input: only dweight."""
    x, weight, index, _ = make_inputs((3, 2, 10, 12, (40,), False), device)
    y = routed_pointwise_triton(x.requires_grad_(), weight, index)
    (dx,) = torch.autograd.grad(y, x, torch.ones_like(y))
    assert_rel_close(
        dx, torch.autograd.grad(routed_pointwise_ref(x, weight, index), x, torch.ones_like(y))[0], FP32_TOL
    )
    x = x.detach()
    y = routed_pointwise_triton(x, weight.requires_grad_(), index)
    (dw,) = torch.autograd.grad(y, weight, torch.ones_like(y))
    assert_rel_close(
        dw,
        torch.autograd.grad(routed_pointwise_ref(x, weight, index), weight, torch.ones_like(y))[0],
        FP32_TOL,
    )


def test_pointwise_deterministic(device):
    x, weight, index, bias = make_inputs((6, 3, 16, 16, (300,), True), device)
    dy = torch.randn(x.shape[0], weight.shape[1], *x.shape[2:], device=device)
    first = grads(routed_pointwise_triton, x, weight, index, bias, dy)
    second = grads(routed_pointwise_triton, x, weight, index, bias, dy)
    for a, b in zip(first, second, strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize("with_bias", [False, True])
def test_custom_op_registration(with_bias, device):
    """Schema, fake (meta) implementation and autograd registration agree (torch.compile relies on them)."""
    from kernels.ops.routed import _routed_pointwise_op

    x, weight, index, bias = make_inputs((3, 2, 5, 4, (20,), with_bias), device)
    args = (x.requires_grad_(), weight.requires_grad_(), index, bias.requires_grad_() if with_bias else None)
    torch.library.opcheck(_routed_pointwise_op, args)


def test_pointwise_errors(device):
    x, weight, index, _ = make_inputs((2, 3, 4, 5, (9,), False), device)
    with pytest.raises(ValueError, match="C_in"):
        routed_pointwise_triton(x[:, :3], weight, index)
    with pytest.raises(ValueError, match="expert_index"):
        routed_pointwise_triton(x, weight, index[:1])
    with pytest.raises(IndexError, match="out of range"):  # checked in debug mode (the conftest turns it on)
        routed_pointwise_triton(x, weight, torch.tensor([0, 3], device=device))


def depthwise_naive_float64(x, weight, index, bias):
    out = []
    for b in range(x.shape[0]):
        shift = None if bias is None else bias[index[b]].double()
        out.append(F.conv2d(x[b : b + 1].double(), weight[index[b]].double(), shift, padding=1, groups=x.shape[1]))
    return torch.cat(out)


@pytest.mark.parametrize("with_bias", [False, True])
def test_depthwise_reference_matches_float64_naive(with_bias, assert_rel_close):
    b, e, c, hw = 5, 3, 7, (9, 13)
    x = torch.randn(b, c, *hw)
    weight = torch.randn(e, c, 1, 3, 3)
    bias = torch.randn(e, c) if with_bias else None
    index = routes(b, e, "cpu")
    dy = torch.randn_like(x)
    ref = grads(routed_depthwise3x3_ref, x, weight, index, bias, dy)
    bias64 = None if bias is None else bias.double()
    naive = grads(depthwise_naive_float64, x.double(), weight.double(), index, bias64, dy.double())
    for name, a, b_ in zip(NAMES[: len(ref)], ref, naive, strict=True):
        assert_rel_close(a, b_, FP32_TOL, name)
    torch.testing.assert_close(kernels.routed_depthwise3x3(x, weight, index, bias), ref[0], rtol=0, atol=0)


def test_public_dispatch(monkeypatch, device, assert_rel_close):
    """CPU: the twin; CUDA (or SLERIR_KERNELS=triton in the interpreter): the kernel; float64: the twin."""
    import kernels.functional as functional

    calls = []
    monkeypatch.setattr(functional, "routed_pointwise_ref", lambda *a: calls.append("ref") or routed_pointwise_ref(*a))
    x, weight, index, bias = make_inputs((3, 2, 5, 6, (11,), True), "cpu")
    torch.testing.assert_close(
        kernels.routed_pointwise(x, weight, index, bias), routed_pointwise_ref(x, weight, index, bias), rtol=0, atol=0
    )
    assert calls == ["ref"]
    if device.type == "cpu":
        monkeypatch.setenv("SLERIR_KERNELS", "triton")  # TRITON_INTERPRET=1 is set by the root conftest
    x, weight, index, bias = (t.to(device) for t in (x, weight, index, bias))
    assert_rel_close(
        kernels.routed_pointwise(x, weight, index, bias), routed_pointwise_ref(x, weight, index, bias), 1e-5
    )
    assert calls == ["ref"]  # the kernel ran
    with kernels.use_reference():
        kernels.routed_pointwise(x, weight, index, bias)
    assert calls == ["ref", "ref"]
    kernels.routed_pointwise(x.double(), weight.double(), index, bias.double())
    assert calls == ["ref", "ref", "ref"]


def test_autocast_matches_reference(device, assert_rel_close):
    """Under bf16 autocast fp32 activations run in bf16: kernel and twin both return bf16 (the twin's fp32 bias
    must not promote it), dx in x's fp32, weight grads in fp32; values as float64 on the bf16-rounded inputs."""
    c_in, c_out, hw = (48, 144, (64, 64)) if device.type == "cuda" else (12, 20, (5, 7))
    x, weight, index, bias = make_inputs((4, 3, c_in, c_out, hw, True), device)
    dy = torch.randn(4, c_out, *hw, device=device, dtype=torch.bfloat16)
    with torch.autocast(device.type, dtype=torch.bfloat16):
        got = grads(routed_pointwise_triton, x, weight, index, bias, dy)
        twin = grads(routed_pointwise_ref, x, weight, index, bias, dy)
    assert [t.dtype for t in got] == [torch.bfloat16, torch.float32, torch.float32, torch.float32]
    assert [t.dtype for t in twin] == [t.dtype for t in got]
    for name, a, b in zip(NAMES, got, float64_twin(x.bfloat16(), weight, index, bias, dy), strict=True):
        assert_rel_close(a, b, 2e-2, name)


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize(("c_in", "c_out", "hw"), [(48, 144, 128), (96, 254, 64), (127, 48, 128)], ids=str)
def test_gpu_real_sizes(c_in, c_out, hw, dtype, assert_rel_close):
    case = (8, 4, c_in, c_out, (hw, hw), True)
    x, weight, index, bias = make_inputs(case, "cuda", dtype)
    dy = torch.randn(x.shape[0], c_out, hw, hw, device="cuda", dtype=dtype)
    got = grads(kernels.routed_pointwise, x, weight, index, bias, dy)
    want = float64_twin(x, weight, index, bias, dy)
    tol = 1e-4 if dtype == torch.float32 else 2e-2
    for name, a, b in zip(NAMES[: len(got)], got, want, strict=True):
        assert_rel_close(a, b, tol, f"{dtype} {name}")
