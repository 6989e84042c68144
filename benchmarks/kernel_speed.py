"""Benchmark the kernels against the byte floor and the eager reference: ``python benchmarks/kernel_speed.py``.

On a CUDA GPU, for the paper config's stage shapes (dim 48; level l has 48·2^(l-1) channels in 2^(l-1)
heads, so C_h = 48 at every level, at (S / 2^(l-1))² pixels; dec1 and refine have 96 channels in 1 head) at
image sizes S = 256, 512, 1024, 2048, batch 1, it prints per op: the median time (``triton.testing.do_bench``,
which flushes L2 before every run; and ``do_bench_cudagraph``, which hides launch gaps), the byte floor (q, k,
v read once and out written once, plus q, k, v, dO read and dq, dk, dv written for forward+backward, at the
device-to-device copy bandwidth measured in the same run), the ratio to the floor and the speed-up over the
eager reference, for forward and forward+backward in fp32 and bf16, and the relative error against the
reference. Then the same for the routed 1x1 projections of a mixed-route training batch.

Other modes:
    --compile-report   compile every kernel for sm_90 offline (no GPU needed; TRITON_INTERPRET unset) and
                       print registers, spill stack and shared memory per launch configuration.
    --sweep            on a GPU, time transposed-attention launch configurations at one size; print the best.

Without a GPU (and without --compile-report) it says so and runs a tiny interpreter sanity check.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import itertools
import json
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch

SIZES = (256, 512, 1024, 2048)
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclasses.dataclass(frozen=True)
class AttentionShape:
    """One transposed-attention call of the network: B=1 image of size S, one stage."""

    stage: str
    heads: int
    head_channels: int
    pixels: int


def attention_shapes(size: int, dim: int = 48) -> list[AttentionShape]:
    """The paper config's MDTA shapes at image size ``size`` (heads [1, 2, 4, 8] at levels 1-4)."""
    shapes = [AttentionShape(f"level{lv}", 2 ** (lv - 1), dim, (size >> (lv - 1)) ** 2) for lv in range(1, 5)]
    return [*shapes, AttentionShape("dec1/refine", 1, 2 * dim, size * size)]


def routed_shapes(dim: int = 48, ffn_factor: float = 2.66) -> list[tuple[str, int, int, int]]:
    """(name, C_in, C_out, level) of the routed 1x1 projections per level: qkv, proj, FFN in and out."""
    out = []
    for level in range(1, 5):
        c = dim * 2 ** (level - 1)
        hidden = int(c * ffn_factor)
        out += [("qkv", c, 3 * c, level), ("proj", c, c, level), ("ffn_in", c, 2 * hidden, level),
                ("ffn_out", hidden, c, level)]  # fmt: skip
    return out


# ----------------------------------------------------------------------------------------------------------
# Timing helpers (GPU)
# ----------------------------------------------------------------------------------------------------------


def _median_ms(fn: Callable[[], object], grads: list | None = None, graph: bool = False) -> float:
    """Median ms of ``fn``: events around each run with L2 flushed, or CUDA-graph replays; NaN on error."""
    from triton.testing import do_bench, do_bench_cudagraph

    try:
        if graph:
            return do_bench_cudagraph(fn, rep=100, grad_to_none=grads, return_mode="median")
        return do_bench(fn, warmup=25, rep=100, grad_to_none=grads, return_mode="median")
    except Exception as exc:  # one failed measurement (e.g. graph capture) must not end the run
        print(f"  timing failed ({'graph' if graph else 'events'}): {type(exc).__name__}: {str(exc)[:160]}")
        torch.cuda.synchronize()
        return float("nan")


def _kernel_and_eager_ms(kernel: Callable[[], object], eager: Callable[[], object], grads: list | None) -> dict:
    """Median ms of the kernel (launched, and replayed as a CUDA graph) and of its eager twin."""
    return {
        "triton": _median_ms(kernel, grads),
        "graph": _median_ms(kernel, grads, graph=True),
        "eager": _median_ms(eager, grads),
    }


def copy_bandwidth(device: torch.device, nbytes: int = 1 << 30) -> float:
    """Device-to-device copy bandwidth in bytes/s (bytes read plus bytes written), median of do_bench."""
    src = torch.randn(nbytes // 4, device=device)
    ms = _median_ms(functools.partial(torch.empty_like(src).copy_, src))
    return 2 * nbytes / (ms * 1e-3)


def _rel(out: torch.Tensor, ref: torch.Tensor) -> float:
    out, ref = out.detach().double(), ref.detach().double()
    return float((out - ref).norm() / ref.norm().clamp_min(1e-30))


def _fmt_table(rows: list[dict[str, object]], columns: list[str]) -> str:
    def cell(v: object) -> str:
        if isinstance(v, float):
            return f"{v:.3g}" if (abs(v) < 1e-2 or abs(v) >= 1e4) and v != 0 else f"{v:.3f}".rstrip("0").rstrip(".")
        return str(v)

    body = [[cell(r.get(c, "")) for c in columns] for r in rows]
    widths = [max(len(c), *(len(b[i]) for b in body)) if body else len(c) for i, c in enumerate(columns)]
    lines = ["  ".join(c.rjust(w) for c, w in zip(columns, widths, strict=True))]
    lines += ["  ".join(v.rjust(w) for v, w in zip(b, widths, strict=True)) for b in body]
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------------------
# Transposed attention
# ----------------------------------------------------------------------------------------------------------


def _attention_inputs(shape: AttentionShape, dtype: torch.dtype, device: torch.device):
    """q, k, v as the model passes them: views into one (1, 3·heads·C_h, N) qkv tensor, feature-scaled."""
    c = shape.heads * shape.head_channels
    qkv = (torch.randn(1, 3 * c, shape.pixels, device=device) * 2).to(dtype).requires_grad_()
    temperature = (torch.rand(shape.heads, device=device) + 0.5).requires_grad_()
    return qkv, temperature


def _split_heads(qkv: torch.Tensor, shape: AttentionShape) -> list[torch.Tensor]:
    return [x.view(1, shape.heads, shape.head_channels, shape.pixels) for x in qkv.chunk(3, dim=1)]


def _attention_step(fn, qkv, shape, temperature, dout=None) -> None:
    """One forward (dout None, no autograd) or forward+backward of ``fn`` on the model's qkv views."""
    if dout is None:
        with torch.no_grad():
            fn(*_split_heads(qkv, shape), temperature)
    else:
        fn(*_split_heads(qkv, shape), temperature).backward(dout)


def bench_attention(sizes: tuple[int, ...], dtypes: list[str], device: torch.device, bandwidth: float) -> list[dict]:
    """Rows of the transposed-attention table."""
    from kernels.ops.transposed_attention import transposed_attention_triton
    from kernels.reference import transposed_attention_ref

    rows = []
    for size, dtype_name in itertools.product(sizes, dtypes):
        dtype = DTYPES[dtype_name]
        for shape in attention_shapes(size):
            qkv, temperature = _attention_inputs(shape, dtype, device)
            elems = shape.heads * shape.head_channels * shape.pixels
            dout = torch.randn(1, shape.heads, shape.head_channels, shape.pixels, device=device, dtype=dtype)
            with torch.no_grad():
                q, k, v = _split_heads(qkv, shape)
                out = transposed_attention_triton(q, k, v, temperature)
                err = _rel(out, transposed_attention_ref(q.float(), k.float(), v.float(), temperature))
            for mode in ("fwd", "fwd+bwd"):
                nbytes = (4 if mode == "fwd" else 11) * elems * qkv.element_size()
                grads = None if mode == "fwd" else [qkv, temperature]
                step_dout = None if mode == "fwd" else dout
                kernel = functools.partial(
                    _attention_step, transposed_attention_triton, qkv, shape, temperature, step_dout
                )
                eager = functools.partial(_attention_step, transposed_attention_ref, qkv, shape, temperature, step_dout)
                times = _kernel_and_eager_ms(kernel, eager, grads)
                floor = nbytes / bandwidth * 1e3
                rows.append({
                    "size": size, "stage": shape.stage, "C_h": shape.head_channels, "heads": shape.heads,
                    "N": shape.pixels, "dtype": dtype_name, "mode": mode, "triton ms": times["triton"],
                    "graph ms": times["graph"], "eager ms": times["eager"], "floor ms": floor,
                    "x floor": times["graph"] / floor, "speed-up": times["eager"] / times["triton"],
                    "rel err": err,
                })  # fmt: skip
                print(_fmt_table(rows[-1:], list(rows[-1])).splitlines()[-1], flush=True)
            torch.cuda.empty_cache()
    return rows


# ----------------------------------------------------------------------------------------------------------
# Routed projections
# ----------------------------------------------------------------------------------------------------------


def _routed_step(fn, x, weight, index, dy=None) -> None:
    """One forward (dy None, no autograd) or forward+backward of a routed op."""
    if dy is None:
        with torch.no_grad():
            fn(x, weight, index)
    else:
        fn(x, weight, index).backward(dy)


def bench_routed(dtypes: list[str], device: torch.device, bandwidth: float, batch: int = 8, crop: int = 128,
                 experts: int = 4) -> list[dict]:  # fmt: skip
    """Rows of the routed 1x1 table: a mixed-route training batch (batch crops of crop², 4 experts)."""
    from kernels.ops.routed import routed_pointwise_triton
    from kernels.reference import routed_pointwise_ref

    rows = []
    index = torch.arange(batch, device=device) % experts
    for dtype_name in dtypes:
        dtype = DTYPES[dtype_name]
        for name, c_in, c_out, level in routed_shapes():
            n = (crop >> (level - 1)) ** 2
            x = torch.randn(batch, c_in, n, device=device, dtype=dtype, requires_grad=True)
            weight = (torch.randn(experts, c_out, c_in, device=device) / c_in**0.5).requires_grad_()
            dy = torch.randn(batch, c_out, n, device=device, dtype=dtype)
            with torch.no_grad():
                err = _rel(routed_pointwise_triton(x, weight, index), routed_pointwise_ref(x.float(), weight, index))
            for mode in ("fwd", "fwd+bwd"):
                # forward: x read, y written; backward adds dy and x read, dx written (weights are tiny)
                channels = c_in + c_out if mode == "fwd" else 3 * c_in + 2 * c_out
                nbytes = channels * batch * n * x.element_size()
                grads = None if mode == "fwd" else [x, weight]
                step_dy = None if mode == "fwd" else dy
                kernel = functools.partial(_routed_step, routed_pointwise_triton, x, weight, index, step_dy)
                eager = functools.partial(_routed_step, routed_pointwise_ref, x, weight, index, step_dy)
                times = _kernel_and_eager_ms(kernel, eager, grads)
                floor = nbytes / bandwidth * 1e3
                rows.append({
                    "op": name, "C_in": c_in, "C_out": c_out, "B": batch, "N": n, "dtype": dtype_name,
                    "mode": mode,
                    "triton ms": times["triton"], "graph ms": times["graph"], "eager ms": times["eager"],
                    "floor ms": floor, "x floor": times["graph"] / floor,
                    "speed-up": times["eager"] / times["triton"], "rel err": err,
                })  # fmt: skip
                print(_fmt_table(rows[-1:], list(rows[-1])).splitlines()[-1], flush=True)
    return rows


# ----------------------------------------------------------------------------------------------------------
# Launch-configuration sweep (GPU)
# ----------------------------------------------------------------------------------------------------------


def sweep_attention(size: int, dtypes: list[str], device: torch.device, bandwidth: float) -> list[dict]:
    """Time forward and forward+backward of level 1 and dec1 at ``size`` over tiles, warps, stages, splits."""
    from kernels.ops.transposed_attention import override_launch_config, transposed_attention_triton

    rows = []
    for dtype_name in dtypes:
        dtype = DTYPES[dtype_name]
        precisions = ("tf32x3", "ieee") if dtype == torch.float32 else ("tf32",)
        for shape in (attention_shapes(size)[0], attention_shapes(size)[-1]):
            qkv, temperature = _attention_inputs(shape, dtype, device)
            dout = torch.randn(1, shape.heads, shape.head_channels, shape.pixels, device=device, dtype=dtype)
            nbytes = shape.heads * shape.head_channels * shape.pixels * qkv.element_size()
            fwd = functools.partial(_attention_step, transposed_attention_triton, qkv, shape, temperature)
            both = functools.partial(fwd, dout)
            # 12 compiles (block_n, warps, stages) per shape and dtype: a few minutes on a fresh machine
            for block_n, warps, stages, per_sm, precision in itertools.product(
                (64, 128, 256), (4, 8), (2, 3), (1, 2, 4), precisions
            ):
                config = dict(block_n=block_n, num_warps=warps, num_stages=stages,
                              reduce_programs_per_sm=per_sm, fp32_precision=precision)  # fmt: skip
                try:
                    with override_launch_config(**config):
                        fwd_ms, both_ms = _median_ms(fwd), _median_ms(both, [qkv, temperature])
                except Exception as exc:  # configurations that do not fit (shared memory, registers)
                    print(f"  skip {config}: {type(exc).__name__}: {str(exc)[:80]}")
                    continue
                rows.append({"stage": shape.stage, "dtype": dtype_name, **config, "fwd ms": fwd_ms,
                             "fwd+bwd ms": both_ms, "fwd x floor": fwd_ms / (4 * nbytes / bandwidth * 1e3),
                             "fwd+bwd x floor": both_ms / (11 * nbytes / bandwidth * 1e3)})  # fmt: skip
            best = sorted((r for r in rows if r["stage"] == shape.stage and r["dtype"] == dtype_name),
                          key=lambda r: r["fwd+bwd ms"])[:5]  # fmt: skip
            print(f"\nbest for {shape.stage} {dtype_name} at {size}²:")
            print(_fmt_table(best, list(best[0])) if best else "  none ran")
    return rows


# ----------------------------------------------------------------------------------------------------------
# Offline compile report (no GPU)
# ----------------------------------------------------------------------------------------------------------


def _cuobjdump() -> str | None:
    import triton

    path = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump"
    return str(path) if path.exists() else None


def _compile(kernel, pointers: dict[str, str], constexprs: dict[str, object], num_warps: int, num_stages: int,
             arch: int, aligned: bool = True) -> dict[str, int]:  # fmt: skip
    """Compile one kernel for sm_<arch> as the JIT would for 16-aligned pointers, strides and N; resources."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    names = kernel.arg_names

    def arg_type(name: str) -> str:
        if name in constexprs:
            return "constexpr"
        return pointers.get(name, "*fp32" if name.endswith("_ptr") else "fp32" if name == "eps" else "i32")

    signature = {n: arg_type(n) for n in names}
    # The JIT marks pointers and integers divisible by 16 (the model's N = H·W and strides are); without it
    # the loads are not vectorised and the kernel looks far worse than it will run.
    attrs = {(i,): [["tt.divisibility", 16]] for i, n in enumerate(names)
             if n.endswith("_ptr") or (aligned and (n in ("N", "C") or n.startswith("stride")))}  # fmt: skip
    src = ASTSource(kernel, signature, constexprs, attrs)
    compiled = triton.compile(src, target=GPUTarget("cuda", arch, 32),
                              options={"num_warps": num_warps, "num_stages": num_stages})  # fmt: skip
    result = {"shared B": compiled.metadata.shared, "regs": -1, "stack B": -1}
    tool = _cuobjdump()
    if tool:
        with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
            f.write(compiled.asm["cubin"])
            f.flush()
            usage = subprocess.run([tool, "-res-usage", f.name], capture_output=True, text=True).stdout
        match = re.search(r"REG:(\d+) STACK:(\d+)", usage)
        if match:
            result["regs"], result["stack B"] = int(match[1]), int(match[2])
    return result


def compile_report(arch: int = 90, aligned: bool = True) -> list[dict]:
    """Registers, spill stack and shared memory of every kernel at the launch configurations chosen."""
    from kernels.ops import routed as rt
    from kernels.ops import transposed_attention as ta
    from kernels.ops._launch import dot_types

    cuda = torch.device("cuda")
    io_types = {"fp32": "*fp32", "bf16": "*bf16", "fp16": "*fp16"}
    rows = []

    def add(op: str, kernel, variant: str, dtype_name: str, pointers, constexprs, warps, stages, **info):
        try:
            res = _compile(kernel, pointers, constexprs, warps, stages, arch, aligned)
        except Exception as exc:
            res = {"error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:100]}"}
        fits = "error" not in res and res["stack B"] == 0 and res["shared B"] <= 227 * 1024
        name = kernel.fn.__name__.strip("_").removesuffix("_kernel")
        rows.append({"op": op, "kernel": name, "variant": variant, "dtype": dtype_name, **info,
                     "warps": warps, "stages": stages, **res, "ok": "yes" if fits else "NO"})  # fmt: skip
        print(_fmt_table(rows[-1:], list(rows[-1])).splitlines()[-1], flush=True)

    for dtype_name, cp in itertools.product(("fp32", "bf16", "fp16"), (64, 128)):
        dtype = DTYPES[dtype_name]
        cfg = ta.launch_config(cp, dtype, cuda)
        dot, precision = dot_types(dtype, cfg, cuda)
        io = io_types[dtype_name]
        info = {"size": f"CP{cp} N{cfg.block_n}", "precision": precision}
        pix = {"CP": cp, "BLOCK_N": cfg.block_n, "DOT_DTYPE": dot, "PRECISION": precision}
        w, s = cfg.num_warps, cfg.num_stages
        ab = {"a_ptr": io, "b_ptr": io}
        xy = {"x_ptr": io, "y_ptr": io}
        add(
            "attention",
            ta._gram_partial_kernel,
            "q kᵀ+norms",
            dtype_name,
            ab,
            {**pix, "WITH_NORMS": True},
            w,
            s,
            **info,
        )
        add(
            "attention",
            ta._gram_partial_kernel,
            "dO vᵀ",
            dtype_name,
            ab,
            {**pix, "WITH_NORMS": False},
            w,
            s,
            **info,
        )
        add(
            "attention",
            ta._matmul_pixels_kernel,
            "P v",
            dtype_name,
            xy,
            {**pix, "TRANS_M": False},
            w,
            s,
            **info,
        )
        add(
            "attention",
            ta._matmul_pixels_kernel,
            "Pᵀ dO",
            dtype_name,
            xy,
            {**pix, "TRANS_M": True},
            w,
            s,
            **info,
        )
        qk = {n: io for n in ("q_ptr", "k_ptr", "dq_ptr", "dk_ptr")}
        passes = ((True, False), (False, True)) if cfg.separate_dq_dk else ((True, True),)
        for dq, dk in passes:
            variant = "dq+dk" if dq and dk else "dq" if dq else "dk"
            add(
                "attention",
                ta._dqk_kernel,
                variant,
                dtype_name,
                qk,
                {**pix, "WRITE_DQ": dq, "WRITE_DK": dk},
                w,
                s,
                **info,
            )
        if dtype_name == "fp32":
            small = {"CP": cp, "BLOCK_R": min(cp, 16)}
            add("attention", ta._softmax_forward_kernel, "", "fp32", {}, small, 4, 1, size=f"CP{cp}")
            add("attention", ta._softmax_backward_kernel, "", "fp32", {}, small, 4, 1, size=f"CP{cp}")

    shapes = (
        (144, 48),
        (48, 144),
        (254, 48),
        (48, 127),
        (1152, 384),
    )  # (M, K): qkv, its dx, ffn_in, ..., level 4
    for dtype_name, (m, k) in itertools.product(("fp32", "bf16"), shapes):
        dtype = DTYPES[dtype_name]
        io = io_types[dtype_name]
        for kind, kernel, pointers in (
            ("matmul", rt._routed_matmul_kernel, {"x_ptr": io, "y_ptr": io, "index_ptr": "*i64"}),
            ("dweight", rt._dweight_partial_kernel, {"dy_ptr": io, "x_ptr": io}),
        ):
            cfg = rt.launch_config(m, k, dtype, cuda, kind)
            dot, precision = dot_types(dtype, cfg, cuda)
            tiles = {"BLOCK_M": cfg.block_m, "BLOCK_N": cfg.block_n, "BLOCK_K": cfg.block_k}
            constexprs = {**tiles, "DOT_DTYPE": dot, "PRECISION": precision, "HAS_BIAS": True}
            size = f"{cfg.block_m}x{cfg.block_n}x{cfg.block_k}"
            add("routed", kernel, f"M{m} K{k}", dtype_name, pointers, constexprs, cfg.num_warps,
                cfg.num_stages, size=size, precision=precision)  # fmt: skip
    add(
        "routed",
        rt._expert_sum_kernel,
        "",
        "fp32",
        {"order_ptr": "*i64", "offsets_ptr": "*i64"},
        {"BLOCK": 256},
        4,
        1,
    )
    return rows


# ----------------------------------------------------------------------------------------------------------
# Interpreter sanity (no GPU)
# ----------------------------------------------------------------------------------------------------------


def interpreter_sanity() -> list[dict]:
    """Tiny forward+backward runs of each kernel in Triton's interpreter against the float64 reference."""
    from kernels.ops.routed import routed_pointwise_triton
    from kernels.ops.transposed_attention import transposed_attention_triton
    from kernels.reference import routed_pointwise_ref, transposed_attention_ref

    result = []
    for dtype_name in ("fp32", "bf16"):
        dtype = DTYPES[dtype_name]
        q, k, v = (torch.randn(2, 2, 12, 37).to(dtype).requires_grad_() for _ in range(3))
        temperature = (torch.rand(2, 2) + 0.5).requires_grad_()
        dout = torch.randn(2, 2, 12, 37)
        rows = []
        for fn, args in (
            (transposed_attention_triton, (q, k, v, temperature)),
            (transposed_attention_ref, [x.detach().double().requires_grad_() for x in (q, k, v, temperature)]),
        ):
            out = fn(*args)
            rows.append((out, *torch.autograd.grad(out, args, dout.to(out.dtype))))
        errs = [_rel(a, b) for a, b in zip(rows[0], rows[1], strict=True)]
        result.append({"op": "transposed_attention", "dtype": dtype_name, "max rel err (out and grads)": max(errs)})

        x = torch.randn(3, 10, 5, 7).to(dtype).requires_grad_()
        weight = torch.randn(4, 6, 10, requires_grad=True)
        index = torch.tensor([3, 0, 3])
        dy = torch.randn(3, 6, 5, 7)
        outs = []
        for fn, args in ((routed_pointwise_triton, (x, weight)), (routed_pointwise_ref, (x.double(), weight.double()))):
            args = [a.detach().requires_grad_() for a in args]
            y = fn(args[0], args[1], index)
            outs.append((y, *torch.autograd.grad(y, args, dy.to(y.dtype))))
        errs = [_rel(a, b) for a, b in zip(outs[0], outs[1], strict=True)]
        result.append({"op": "routed_pointwise", "dtype": dtype_name, "max rel err (out and grads)": max(errs)})
    return result


# ----------------------------------------------------------------------------------------------------------
# Entry point
# ----------------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark (see the module docstring); returns the exit status."""
    parser = argparse.ArgumentParser(prog="python benchmarks/kernel_speed.py", description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=list(SIZES), help="image sizes S (S x S pixels)")
    parser.add_argument("--dtypes", nargs="+", default=["fp32", "bf16"], choices=sorted(DTYPES))
    parser.add_argument("--ops", nargs="+", default=["attention", "routed"], choices=["attention", "routed"])
    parser.add_argument("--json", type=Path, help="also write all rows to this JSON file")
    parser.add_argument("--compile-report", action="store_true", help="offline sm_90 compile: registers, spills")
    parser.add_argument("--arch", type=int, default=90, help="compute capability for --compile-report")
    parser.add_argument(
        "--unaligned",
        action="store_true",
        help="--compile-report for N and strides not multiples of 16 (the slow, unvectorised path)",
    )
    parser.add_argument("--sweep", action="store_true", help="time launch configurations (GPU)")
    parser.add_argument("--sweep-size", type=int, default=1024)
    args = parser.parse_args(argv)
    results: dict[str, object] = {}
    status = 0

    if args.compile_report:
        if os.environ.get("TRITON_INTERPRET", "0") == "1":
            print("--compile-report compiles for the GPU: unset TRITON_INTERPRET")
            return 2
        results["compile"] = rows = compile_report(args.arch, aligned=not args.unaligned)
        columns = list(dict.fromkeys(c for r in rows for c in r))
        print(f"\nsm_{args.arch} resources (spills show as stack bytes; ok: no spills, shared <= 227 KiB):")
        print(_fmt_table(rows, columns))
        return 0 if args.unaligned or all(r["ok"] == "yes" for r in rows) else 1
    elif not torch.cuda.is_available():
        print("No CUDA GPU here: the benchmark needs one (run `python benchmarks/kernel_speed.py` on a GPU machine).")
        print("Running a tiny forward+backward sanity check of the kernels in Triton's interpreter instead.\n")
        os.environ.setdefault("TRITON_INTERPRET", "1")
        if "triton" in sys.modules and not _interpreting():
            print("triton was imported before TRITON_INTERPRET was set; skipping the interpreter check.")
            return 0
        results["sanity"] = rows = interpreter_sanity()
        print(_fmt_table(rows, list(rows[0])))
        tolerance = {"fp32": 1e-5, "bf16": 1e-2}
        if any(not r["max rel err (out and grads)"] <= tolerance[r["dtype"]] for r in rows):
            print(f"FAILED: an error above the tolerance {tolerance}")
            status = 1
    else:
        device = torch.device("cuda")
        torch.backends.cuda.matmul.allow_tf32 = False  # the eager fp32 baseline in true fp32, like the kernels
        bandwidth = copy_bandwidth(device)
        props = torch.cuda.get_device_properties(device)
        print(f"{props.name}, {props.multi_processor_count} SMs; device-to-device copy: "
              f"{bandwidth / 1e9:.0f} GB/s (read + write); torch {torch.__version__}, "
              f"triton {__import__('triton').__version__}\n")  # fmt: skip
        results["device"] = {"name": props.name, "copy GB/s": bandwidth / 1e9}
        if args.sweep:
            results["sweep"] = sweep_attention(args.sweep_size, args.dtypes, device, bandwidth)
        else:
            if "attention" in args.ops:
                results["attention"] = rows = bench_attention(tuple(args.sizes), args.dtypes, device, bandwidth)
                print("\ntransposed attention (B=1; graph ms = CUDA-graph replay; x floor uses graph ms):")
                print(_fmt_table(rows, list(rows[0])))
            if "routed" in args.ops:
                results["routed"] = rows = bench_routed(args.dtypes, device, bandwidth)
                print("\nrouted 1x1 projections (8 crops of 128², 4 experts, mixed routes):")
                print(_fmt_table(rows, list(rows[0])))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1, default=str))
    return status


def _interpreting() -> bool:
    import triton.language as tl
    from triton.runtime.jit import JITFunction

    return not isinstance(tl.zeros, JITFunction)


if __name__ == "__main__":
    sys.exit(main())
