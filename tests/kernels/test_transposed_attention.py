"""Fused transposed attention: Triton kernel vs its reference twin, the twin vs a float64 naive formula."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import kernels
from kernels import reference, transposed_attention_ref

pytest.importorskip("triton")
from kernels.ops.transposed_attention import override_launch_config, transposed_attention_triton

CUDA = torch.cuda.is_available()
DEVICE_FOR_OPCHECK = "cuda" if CUDA else "cpu"
FP32_TOL = 1e-5
# dtemperature sums terms that nearly cancel (softmax rows sum to one), so fp32 loses more of it: over 300 seeds
# the reference's relative error on (1, 1, 48, 257) reached 2.3e-5 (1.9e-5 written with F.normalize, 2.5e-5 in the
# pixel-major form).
DTEMPERATURE_TOL = 1e-4
HALF_TOL = {torch.float16: 5e-3, torch.bfloat16: 1e-2}
# Shapes: (B, heads, C_h, N, temperature per sample). Odd pixel counts, C_h from 6 to 64 (padded 16/32/64).
SHAPES = [
    (2, 3, 6, 37, False),
    (1, 1, 48, 257, True),
    (3, 2, 20, 130, True),
    (1, 8, 9, 61, False),
    (2, 1, 64, 100, True),
]


def naive_float64(q, k, v, temperature):
    """MDTA written out in float64: explicit norms, clamp, Gram, softmax."""
    q, k, v = q.double(), k.double(), v.double()
    b, h = q.shape[:2]
    t = temperature.double().expand(b, h)[:, :, None, None]
    q_hat = q / q.pow(2).sum(-1, keepdim=True).sqrt().clamp_min(1e-12)
    k_hat = k / k.pow(2).sum(-1, keepdim=True).sqrt().clamp_min(1e-12)
    logits = t * torch.einsum("bhin,bhjn->bhij", q_hat, k_hat)
    weights = torch.exp(logits - logits.amax(-1, keepdim=True))
    weights = weights / weights.sum(-1, keepdim=True)
    return torch.einsum("bhij,bhjn->bhin", weights, v)


def make_inputs(b, h, c, n, per_sample, device, dtype=torch.float32):
    q, k, v = (torch.randn(b, h, c, n, device=device, dtype=dtype) for _ in range(3))
    shape = (b, h) if per_sample else (h,)
    temperature = torch.rand(shape, device=device) * 2 + 0.25
    return q, k, v, temperature


def grads(fn, inputs, dout):
    inputs = [x.detach().requires_grad_() for x in inputs]
    out = fn(*inputs)
    return (out, *torch.autograd.grad(out, inputs, dout))


def float64_twin(q, k, v, temperature, dout):
    """The reference twin run in float64 on the same inputs: the oracle for the kernel."""
    return grads(transposed_attention_ref, [x.double() for x in (q, k, v, temperature)], dout.double())


NAMES = ("out", "dq", "dk", "dv", "dtemperature")


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s[:4])) + ("-tBH" if s[4] else "-tH"))
def test_reference_matches_float64_naive(shape, assert_rel_close):
    q, k, v, temperature = make_inputs(*shape, device="cpu")
    dout = torch.randn_like(q)
    ref = grads(transposed_attention_ref, (q, k, v, temperature), dout)
    naive = grads(naive_float64, [x.double() for x in (q, k, v, temperature)], dout.double())
    for name, a, b in zip(NAMES, ref, naive, strict=True):
        assert_rel_close(a, b, DTEMPERATURE_TOL if name == "dtemperature" else FP32_TOL, name)


@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("min_pixels", [0, 10**9], ids=["pixel-major", "head-major"])
def test_reference_on_channels_last_qkv_views(batch, min_pixels, monkeypatch, assert_rel_close):
    """The CPU path's layout: chunks of a channels_last qkv map (channels innermost) give the float64 loop's
    values and gradients in both forms of the reference; the pixel-major one returns channels innermost, which
    the model reshapes back without a copy."""
    monkeypatch.setattr(reference, "PIXEL_MAJOR_MIN_PIXELS", min_pixels)
    h, c, hw = 2, 8, (7, 9)
    qkv = torch.randn(batch, 3 * h * c, *hw).contiguous(memory_format=torch.channels_last)
    temperature = torch.rand(batch, h) + 0.5
    dout = torch.randn(batch, h, c, hw[0] * hw[1])

    def run(fn, qkv, temperature):
        q, k, v = (x.reshape(batch, h, c, -1) for x in qkv.chunk(3, dim=1))
        return fn(q, k, v, temperature)

    got = grads(lambda x, t: run(transposed_attention_ref, x, t), (qkv, temperature), dout)
    want = grads(lambda x, t: run(naive_float64, x, t), (qkv.double(), temperature.double()), dout.double())
    for name, a, b_ in zip(("out", "dqkv", "dtemperature"), got, want, strict=True):
        assert_rel_close(a, b_, DTEMPERATURE_TOL if name == "dtemperature" else FP32_TOL, name)
    if min_pixels == 0:
        restored = got[0].reshape(batch, h * c, *hw)
        assert got[0].stride(2) == 1 and restored.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s[:4])) + ("-tBH" if s[4] else "-tH"))
def test_kernel_matches_reference(shape, device, assert_rel_close):
    q, k, v, temperature = make_inputs(*shape, device=device)
    dout = torch.randn_like(q)
    got = grads(transposed_attention_triton, (q, k, v, temperature), dout)
    want = float64_twin(q, k, v, temperature, dout)
    for name, a, b in zip(NAMES, got, want, strict=True):
        assert a.dtype == (q.dtype if name != "dtemperature" else temperature.dtype), name
        assert_rel_close(a, b, DTEMPERATURE_TOL if name == "dtemperature" else FP32_TOL, name)


@pytest.mark.parametrize(
    ("block_n", "num_splits", "separate_dq_dk"),
    # 10 splits of 16 pixels: more than KERNEL_SUM_MAX_SPLITS, so torch.sum pre-sums the partials
    [(16, 1, False), (32, 3, True), (64, 100, False), (128, 2, True), (16, 100, False)],
)
def test_kernel_tilings_agree(block_n, num_splits, separate_dq_dk, device, assert_rel_close):
    """Tiles, splits and dq/dk passes change only the summation order: partial tiles, few or many splits."""
    q, k, v, temperature = make_inputs(2, 2, 12, 150, True, device)
    dout = torch.randn_like(q)
    with override_launch_config(block_n=block_n, num_splits=num_splits, separate_dq_dk=separate_dq_dk):
        got = grads(transposed_attention_triton, (q, k, v, temperature), dout)
    for name, a, b in zip(NAMES, got, float64_twin(q, k, v, temperature, dout), strict=True):
        assert_rel_close(a, b, FP32_TOL, name)


def test_self_attention_on_qkv_views(device, assert_rel_close):
    """The model passes ``chunk`` views of one qkv tensor (batch stride 3C·N): read in place, right grads."""
    b, h, c, hw = 2, 2, 8, (7, 9)
    qkv = torch.randn(b, 3 * h * c, *hw, device=device)
    temperature = torch.rand(h, device=device) + 0.5
    dout = torch.randn(b, h, c, hw[0] * hw[1], device=device)

    def run(fn, qkv, temperature):
        q, k, v = (x.reshape(b, h, c, -1) for x in qkv.chunk(3, dim=1))
        assert q.stride(0) == 3 * h * c * hw[0] * hw[1]
        return fn(q, k, v, temperature)

    got = grads(lambda x, t: run(transposed_attention_triton, x, t), (qkv, temperature), dout)
    want = grads(lambda x, t: run(transposed_attention_ref, x, t), (qkv.double(), temperature.double()), dout.double())
    for name, a, b_ in zip(("out", "dqkv", "dtemperature"), got, want, strict=True):
        assert_rel_close(a, b_, FP32_TOL, name)


def test_cross_attention_queries_from_another_tensor(device, assert_rel_close):
    """GLGF injection: queries from the (resized) prior, keys and values from the features; same function."""
    b, h, c, n = 2, 4, 12, 45
    prior = torch.randn(b, h, c, n, device=device)
    features = torch.randn(b, 2 * h * c, n, device=device)
    temperature = torch.rand(b, h, device=device) + 0.5
    dout = torch.randn(b, h, c, n, device=device)

    def run(fn, prior, features, temperature):
        k, v = (x.reshape(b, h, c, n) for x in features.chunk(2, dim=1))
        return fn(prior, k, v, temperature)

    got = grads(lambda *a: run(transposed_attention_triton, *a), (prior, features, temperature), dout)
    want = grads(
        lambda *a: run(transposed_attention_ref, *a),
        (prior.double(), features.double(), temperature.double()),
        dout.double(),
    )
    for name, a, b_ in zip(("out", "dprior", "dfeatures", "dtemperature"), got, want, strict=True):
        assert_rel_close(a, b_, FP32_TOL, name)


def test_zero_rows_follow_f_normalize(device, assert_rel_close):
    """A channel that is zero over all pixels has norm 0 < eps: the clamp's gradient rule, as F.normalize."""
    q, k, v, temperature = make_inputs(1, 2, 10, 33, False, device)
    q[0, 0, 3] = 0
    k[0, 1, 7] = 0
    dout = torch.randn_like(q)
    got = grads(transposed_attention_triton, (q, k, v, temperature), dout)
    for name, a, b in zip(NAMES, got, float64_twin(q, k, v, temperature, dout), strict=True):
        assert_rel_close(a, b, FP32_TOL, name)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
def test_half_precision(dtype, device, assert_rel_close):
    """16-bit inputs and outputs, fp32 accumulation; dtemperature in fp32. (In the interpreter, whose bf16
    tl.dot is wrong, bf16 operands are widened to fp32; the GPU runs the bf16 dot.)"""
    q, k, v, temperature = make_inputs(2, 2, 24, 77, True, device, dtype)
    dout = torch.randn_like(q)
    got = grads(transposed_attention_triton, (q, k, v, temperature), dout)
    for name, a, b in zip(NAMES, got, float64_twin(q, k, v, temperature, dout), strict=True):
        assert a.dtype == (dtype if name != "dtemperature" else torch.float32)
        assert_rel_close(a, b, HALF_TOL[dtype], f"{dtype} {name}")


def test_mixed_dtypes_promote(device):
    q, k, v, temperature = make_inputs(1, 1, 8, 20, False, device)
    out = transposed_attention_triton(q.half(), k, v.half(), temperature)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, transposed_attention_ref(q.half(), k, v.half(), temperature), rtol=1e-4, atol=1e-5)


def test_deterministic(device):
    """Per-split partials summed in a fixed order: bitwise identical results run to run."""
    q, k, v, temperature = make_inputs(2, 2, 16, 200, True, device)
    dout = torch.randn_like(q)
    with override_launch_config(block_n=16, num_splits=5):  # 13 tiles in 5 splits, kernel-summed
        first = grads(transposed_attention_triton, (q, k, v, temperature), dout)
        second = grads(transposed_attention_triton, (q, k, v, temperature), dout)
    for a, b in zip(first, second, strict=True):
        assert torch.equal(a, b)
    with override_launch_config(block_n=16, num_splits=13):  # pre-summed by torch.sum
        first = grads(transposed_attention_triton, (q, k, v, temperature), dout)
        second = grads(transposed_attention_triton, (q, k, v, temperature), dout)
    for a, b in zip(first, second, strict=True):
        assert torch.equal(a, b)


def test_custom_op_registration():
    """Schema, fake (meta) implementation and autograd registration agree (torch.compile relies on them)."""
    from kernels.ops.transposed_attention import _transposed_attention_op

    q, k, v, temperature = make_inputs(2, 2, 6, 37, True, DEVICE_FOR_OPCHECK)
    args = [x.requires_grad_() for x in (q, k, v, temperature)]
    torch.library.opcheck(_transposed_attention_op, args)


def test_torch_compile_fullgraph(monkeypatch, device, assert_rel_close):
    """The public function traces into one graph: dispatch, the lazy import and the custom op, no breaks."""
    if device.type == "cpu":
        monkeypatch.setenv("SLERIR_KERNELS", "triton")  # the interpreter (TRITON_INTERPRET=1 from conftest)
    q, k, v, temperature = make_inputs(1, 2, 8, 40, False, device)
    dout = torch.randn_like(q)
    compiled = torch.compile(kernels.transposed_attention, backend="aot_eager", fullgraph=True)
    got = grads(compiled, (q, k, v, temperature), dout)
    for name, a, b in zip(NAMES, got, float64_twin(q, k, v, temperature, dout), strict=True):
        assert_rel_close(a, b, FP32_TOL, name)


def test_shape_errors():
    q = torch.randn(2, 3, 4, 5)
    with pytest.raises(ValueError, match="one shape"):
        transposed_attention_triton(q, q[:, :, :3], q, torch.ones(3))
    with pytest.raises(ValueError, match="temperature"):
        transposed_attention_triton(q, q, q, torch.ones(2))
    with pytest.raises(ValueError, match="temperature"):
        transposed_attention_ref(q, q, q, torch.ones(3, 2))
    wide = torch.randn(1, 1, 129, 8)
    with pytest.raises(ValueError, match="C_h"):
        transposed_attention_triton(wide, wide, wide, torch.ones(1))


def test_dispatch(monkeypatch, assert_rel_close):
    """CPU: reference unless SLERIR_KERNELS=triton and TRITON_INTERPRET=1; CUDA: kernel; use_reference wins"""
    import kernels.functional as functional

    calls = []
    monkeypatch.setattr(
        functional, "transposed_attention_ref", lambda *a: calls.append("ref") or transposed_attention_ref(*a)
    )
    q, k, v, temperature = make_inputs(1, 2, 6, 20, False, "cpu")
    kernels.transposed_attention(q, k, v, temperature)
    assert calls == ["ref"]
    if CUDA:
        q, k, v, temperature = (x.cuda() for x in (q, k, v, temperature))
    else:
        monkeypatch.setenv("SLERIR_KERNELS", "triton")  # TRITON_INTERPRET=1 is set by conftest
    out = kernels.transposed_attention(q, k, v, temperature)
    assert calls == ["ref"]  # the kernel ran
    assert_rel_close(out, transposed_attention_ref(q, k, v, temperature), FP32_TOL)
    with kernels.use_reference():
        kernels.transposed_attention(q, k, v, temperature)
    assert calls == ["ref", "ref"]
    kernels.transposed_attention(q, k, v, temperature)
    assert calls == ["ref", "ref"]
    monkeypatch.setenv("SLERIR_KERNELS", "reference")
    kernels.transposed_attention(q, k, v, temperature)
    assert calls == ["ref", "ref", "ref"]


def test_dispatch_unsupported_dtype_takes_reference(monkeypatch, device):
    """float64 (gradcheck) has no kernel: the public function runs the twin instead of raising."""
    if device.type == "cpu":
        monkeypatch.setenv("SLERIR_KERNELS", "triton")
    q, k, v, temperature = (x.double().requires_grad_() for x in make_inputs(1, 2, 6, 11, True, device))
    torch.autograd.gradcheck(kernels.transposed_attention, (q, k, v, temperature))


def test_import_is_cheap_and_triton_free():
    """``import kernels`` and CPU calls do not import triton (the model imports kernels everywhere)."""
    code = (
        "import sys, torch\n"
        "before = 'triton' in sys.modules  # some torch builds may import it themselves\n"
        "import kernels\n"
        "q = torch.randn(1, 1, 4, 9)\n"
        "kernels.transposed_attention(q, q, q, torch.ones(1))\n"
        "kernels.routed_pointwise(torch.randn(2, 3, 5), torch.randn(2, 4, 3), torch.tensor([1, 0]))\n"
        "assert before or 'triton' not in sys.modules, 'kernels imported triton'\n"
        "assert 'kernels.ops' not in sys.modules\n"
        "assert callable(kernels.transposed_attention)\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("SLERIR_KERNELS", "TRITON_INTERPRET")}
    env["CUDA_VISIBLE_DEVICES"] = ""
    subprocess.run([sys.executable, "-c", code], check=True, env=env, cwd=Path(kernels.__file__).parents[1])


@pytest.mark.parametrize("min_pixels", [0, 10**9], ids=["pixel-major", "head-major"])
def test_autocast_matches_reference(min_pixels, device, monkeypatch, assert_rel_close):
    """Under bf16 autocast fp32 inputs run in bf16: kernel and twin (both of its forms) return bf16, grads in the
    inputs' fp32. The values are held to float64 on what the kernel sees: bf16-rounded inputs and output
    gradient (autograd rounds dO to the output's dtype; an fp32 dO oracle put dtemperature, a sum that nearly
    cancels, 1e-2 off)."""
    monkeypatch.setattr(reference, "PIXEL_MAJOR_MIN_PIXELS", min_pixels)
    c, n = (48, 64 * 64) if device.type == "cuda" else (12, 40)
    q, k, v, temperature = make_inputs(2, 2, c, n, False, device)
    dout = torch.randn_like(q)
    with torch.autocast(device.type, dtype=torch.bfloat16):
        got = grads(transposed_attention_triton, (q, k, v, temperature), dout)
        twin = grads(transposed_attention_ref, (q, k, v, temperature), dout)
    assert [t.dtype for t in got] == [torch.bfloat16] + [torch.float32] * 4
    assert [t.dtype for t in twin] == [t.dtype for t in got]
    rounded = (x.bfloat16() for x in (q, k, v))
    for name, a, b in zip(NAMES, got, float64_twin(*rounded, temperature, dout.bfloat16()), strict=True):
        assert_rel_close(a, b, 2e-2, name)


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize(
    ("b", "h", "c", "n"),
    [(2, 1, 48, 256 * 256), (2, 8, 48, 32 * 32), (1, 1, 96, 256 * 256), (4, 4, 48, 64 * 64)],
    ids=lambda x: str(x),
)
def test_gpu_real_sizes(b, h, c, n, dtype, assert_rel_close):
    q, k, v, temperature = make_inputs(b, h, c, n, True, "cuda", dtype)
    q, k, v = (x * 3 for x in (q, k, v))  # not unit-scale, like real features
    dout = torch.randn_like(q)
    got = grads(kernels.transposed_attention, (q, k, v, temperature), dout)
    want = float64_twin(q, k, v, temperature, dout)
    tol = FP32_TOL * 10 if dtype == torch.float32 else 2e-2
    for name, a, b_ in zip(NAMES, got, want, strict=True):
        assert_rel_close(a, b_, tol, f"{dtype} {name}")
