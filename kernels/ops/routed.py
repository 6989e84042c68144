"""Routed-expert 1x1 convolution in Triton: a grouped (MoE-style) GEMM, one launch for a mixed-route batch.

``y[b] = W[e_b] x[b] (+ bias[e_b])`` with x (B, K, N), W (E, M, K), e (B,) the expert of each sample. Each
program loads its sample's expert index and reads that expert's weight tile, so samples that chose different
experts share one launch instead of a Python loop over experts.

Backward:

    dx[b] = W[e_b]ᵀ dy[b]                  the forward kernel, with W's strides swapped
    dW[e] = Σ_{b: e_b = e} dy[b] x[b]ᵀ     _dweight_partial_kernel: per-sample, per-pixel-split partials,
                                           then _expert_sum_kernel: per expert, over its samples in a fixed
                                           order (no atomics: deterministic)
    dbias[e] = Σ_{b: e_b = e} Σ_n dy[b]    the same two kernels

The depthwise 3x3 routed conv needs no kernel of its own: ``reference.routed_depthwise3x3_ref`` is one grouped
``conv2d`` launch already.
"""

# Triton convention: sizes and compile-time constants in kernel signatures are capitalised (C, N, BLOCK_N).
# ruff: noqa: N803

import dataclasses

import torch
import triton
import triton.language as tl

from kernels._dispatch import GRID_AXIS_LIMIT, debug_enabled, empty, sm_count
from kernels.ops._launch import LaunchConfig, LaunchOverrides, dot_size, dot_types, split_tiles
from kernels.reference import check_pointwise_args, compute_dtype

# ----------------------------------------------------------------------------------------------------------
# Triton kernels
# ----------------------------------------------------------------------------------------------------------


@triton.jit
def _routed_matmul_kernel(
    x_ptr,  # (B, K, N), strides (stride_xb, stride_xk, 1)
    w_ptr,  # (E, M, K), strides (stride_we, stride_wm, stride_wk); for Wᵀ the launcher swaps the last two
    bias_ptr,  # (E, M), strides (stride_be, 1); read only if HAS_BIAS
    index_ptr,  # (B,) int64: expert of each sample
    y_ptr,  # (B, M, N) contiguous out
    M,
    K,
    N,
    stride_xb,
    stride_xk,
    stride_we,
    stride_wm,
    stride_wk,
    stride_be,
    HAS_BIAS: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    DOT_DTYPE: tl.constexpr,
    PRECISION: tl.constexpr,
):
    # Axis 0 is (pixel tile, row tile) with the row tiles fastest: programs sharing an x tile run together,
    # so x is read from HBM once and re-read from L2 by the other row tiles.
    pid = tl.program_id(0)
    num_m = tl.cdiv(M, BLOCK_M)
    pid_m = pid % num_m
    pid_n = pid // num_m
    sample = tl.program_id(1).to(tl.int64)
    expert = tl.load(index_ptr + sample).to(tl.int64)

    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_k = tl.arange(0, BLOCK_K)
    mask_m = offs_m < M
    mask_n = offs_n < N
    w_rows = w_ptr + expert * stride_we + offs_m[:, None] * stride_wm
    x_cols = x_ptr + sample * stride_xb + offs_n[None, :]

    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        kk = k0 + offs_k
        mask_k = kk < K
        w = tl.load(w_rows + kk[None, :] * stride_wk, mask=mask_m[:, None] & mask_k[None, :], other=0.0)
        x_tile = x_cols + kk[:, None].to(tl.int64) * stride_xk  # channel * N can pass 2^31 elements
        x = tl.load(x_tile, mask=mask_k[:, None] & mask_n[None, :], other=0.0)
        acc = tl.dot(w.to(DOT_DTYPE), x.to(DOT_DTYPE), acc, input_precision=PRECISION)
    if HAS_BIAS:
        acc += tl.load(bias_ptr + expert * stride_be + offs_m, mask=mask_m, other=0.0).to(tl.float32)[:, None]
    y = y_ptr + sample * M * N + offs_m[:, None].to(tl.int64) * N + offs_n[None, :]
    tl.store(y, acc.to(y_ptr.dtype.element_ty), mask=mask_m[:, None] & mask_n[None, :])


@triton.jit
def _dweight_partial_kernel(
    dy_ptr,  # (B, M, N), strides (stride_db, stride_dm, 1)
    x_ptr,  # (B, K, N), strides (stride_xb, stride_xk, 1)
    dw_part_ptr,  # (B, S, M, K) fp32 contiguous out: this sample's and split's Σ_n dy_mn x_kn
    db_part_ptr,  # (B, S, M) fp32 contiguous out: Σ_n dy_mn, written if HAS_BIAS
    M,
    K,
    N,
    S,
    tiles_per_split,
    stride_db,
    stride_dm,
    stride_xb,
    stride_xk,
    HAS_BIAS: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_K: tl.constexpr,
    BLOCK_N: tl.constexpr,
    DOT_DTYPE: tl.constexpr,
    PRECISION: tl.constexpr,
):
    pid = tl.program_id(0)
    num_k = tl.cdiv(K, BLOCK_K)
    pid_m = pid // num_k
    pid_k = pid % num_k
    split = tl.program_id(1)
    sample = tl.program_id(2).to(tl.int64)

    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_k = pid_k * BLOCK_K + tl.arange(0, BLOCK_K)
    mask_m = offs_m < M
    mask_k = offs_k < K
    dy_rows = dy_ptr + sample * stride_db + offs_m[:, None].to(tl.int64) * stride_dm
    x_rows = x_ptr + sample * stride_xb + offs_k[:, None].to(tl.int64) * stride_xk

    acc = tl.zeros((BLOCK_M, BLOCK_K), dtype=tl.float32)
    dbias = tl.zeros((BLOCK_M,), dtype=tl.float32)
    n_start = split * tiles_per_split * BLOCK_N
    for t in range(tiles_per_split):
        offs_n = n_start + t * BLOCK_N + tl.arange(0, BLOCK_N)
        mask_n = offs_n < N
        dy = tl.load(dy_rows + offs_n[None, :], mask=mask_m[:, None] & mask_n[None, :], other=0.0)
        x = tl.load(x_rows + offs_n[None, :], mask=mask_k[:, None] & mask_n[None, :], other=0.0)
        acc = tl.dot(dy.to(DOT_DTYPE), tl.trans(x.to(DOT_DTYPE)), acc, input_precision=PRECISION)
        if HAS_BIAS:
            dbias += tl.sum(dy.to(tl.float32), axis=1)

    part = sample * S + split
    dw = dw_part_ptr + part * M * K + offs_m[:, None] * K + offs_k[None, :]
    tl.store(dw, acc, mask=mask_m[:, None] & mask_k[None, :])
    if HAS_BIAS:  # noqa: SIM102 - a compile-time branch around a run-time one
        if pid_k == 0:  # one column block writes Σ dy
            tl.store(db_part_ptr + part * M + offs_m, dbias, mask=mask_m)


@triton.jit
def _expert_sum_kernel(
    part_ptr,  # (B, S, F) fp32 contiguous: per-sample, per-split partials
    order_ptr,  # (B,) int64: samples sorted by expert (stable)
    offsets_ptr,  # (E + 1,) int64: expert e's samples are order[offsets[e]:offsets[e + 1]]
    out_ptr,  # (E, F) contiguous out, in the weight's dtype
    F,
    S,
    BLOCK: tl.constexpr,
):
    pid_f = tl.program_id(0)
    expert = tl.program_id(1)
    offs = pid_f * BLOCK + tl.arange(0, BLOCK)
    mask = offs < F
    start = tl.load(offsets_ptr + expert)
    stop = tl.load(offsets_ptr + expert + 1)
    acc = tl.zeros((BLOCK,), dtype=tl.float32)
    for i in range(start, stop):  # fixed order: deterministic; an expert with no samples gets zeros
        sample = tl.load(order_ptr + i)
        for s in range(S):
            acc += tl.load(part_ptr + (sample * S + s) * F + offs, mask=mask, other=0.0)
    tl.store(out_ptr + expert.to(tl.int64) * F + offs, acc.to(out_ptr.dtype.element_ty), mask=mask)


# ----------------------------------------------------------------------------------------------------------
# Launch configuration
# ----------------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, kw_only=True)
class RoutedLaunchConfig(LaunchConfig):
    """Tiles of one routed kernel, beside the shared fields (``block_n``: pixels per tile).

    Attributes:
        block_m: output-channel rows per tile (dweight: rows of dW).
        block_k: input channels per tile (dweight: columns of dW).
    """

    block_m: int
    block_k: int


_overrides = LaunchOverrides(RoutedLaunchConfig, kinds=("matmul", "dweight"))
override_launch_config = _overrides.override


def launch_config(m: int, k: int, dtype: torch.dtype, device: torch.device, kind: str = "matmul") -> RoutedLaunchConfig:
    """Tiles for an (M x K) expert weight; the model's K (48-400) fits one to seven K tiles.

    Picked offline from sm_90 compiles (``python benchmarks/kernel_speed.py --compile-report``): no register
    spills. fp32 operands are split into tf32 hi and lo parts (tf32x3), which doubles registers and shared
    memory.
    """
    block_m = dot_size(m, 64)
    if device.type != "cuda":
        tiles = dict(block_n=32, block_k=dot_size(k, 64), num_warps=4, num_stages=1, fp32_precision="ieee")
    elif dtype == torch.bfloat16 or dtype == torch.float16:
        tiles = dict(block_n=128, block_k=dot_size(k, 64), num_warps=4, num_stages=3)
    elif kind == "matmul":
        tiles = dict(block_n=128, block_k=dot_size(k, 32), num_warps=8, num_stages=3)
    else:
        tiles = dict(block_n=64, block_k=dot_size(k, 32), num_warps=8, num_stages=3)
    return _overrides.apply(RoutedLaunchConfig(block_m=block_m, **tiles), kind)


# ----------------------------------------------------------------------------------------------------------
# Host launchers
# ----------------------------------------------------------------------------------------------------------


def routed_matmul(
    x: torch.Tensor,
    weight: torch.Tensor,
    expert_index: torch.Tensor,
    bias: torch.Tensor | None = None,
    transpose_weight: bool = False,
) -> torch.Tensor:
    """y[b] = W[e_b] x[b] (+ bias), or W[e_b]ᵀ x[b]; x (B, K, N), unit pixel stride; weight (E, M, K)."""
    bsz, _, n = x.shape
    stride_we, stride_wm, stride_wk = weight.stride()
    m, kdim = weight.shape[1], weight.shape[2]
    if transpose_weight:
        m, kdim, stride_wm, stride_wk = kdim, m, stride_wk, stride_wm
    config = launch_config(m, kdim, x.dtype, x.device)
    dot_dtype, precision = dot_types(x.dtype, config, x.device)
    y = empty((bsz, m, n), x.dtype, x.device)
    grid = (triton.cdiv(n, config.block_n) * triton.cdiv(m, config.block_m), bsz)
    _routed_matmul_kernel[grid](
        x, weight, bias if bias is not None else weight, expert_index, y,
        m, kdim, n, x.stride(0), x.stride(1), stride_we, stride_wm, stride_wk,
        bias.stride(0) if bias is not None else 0,
        HAS_BIAS=bias is not None, BLOCK_M=config.block_m, BLOCK_N=config.block_n, BLOCK_K=config.block_k,
        DOT_DTYPE=dot_dtype, PRECISION=precision, num_warps=config.num_warps, num_stages=config.num_stages,
    )  # fmt: skip
    return y


def routed_weight_grad(
    dy: torch.Tensor,
    x: torch.Tensor,
    expert_index: torch.Tensor,
    num_experts: int,
    dtype: torch.dtype,
    with_bias: bool,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """dW (E, M, K) and, if with_bias, dbias (E, M), summed per expert in a fixed order; in ``dtype``."""
    bsz, m, n = dy.shape
    kdim = x.shape[1]
    dev = dy.device
    config = launch_config(m, kdim, dy.dtype, dev, kind="dweight")
    dot_dtype, precision = dot_types(dy.dtype, config, dev)
    tiles = triton.cdiv(m, config.block_m) * triton.cdiv(kdim, config.block_k)
    # Split the pixels so that B * tiles * S programs fill the GPU, 2 per SM; S is on grid axis 1.
    n_tiles = triton.cdiv(n, config.block_n)
    splits, per_split = split_tiles(n_tiles, bsz * tiles, 2 * sm_count(dev), most=GRID_AXIS_LIMIT)

    dw_part = empty((bsz, splits, m, kdim), torch.float32, dev)
    db_part = empty((bsz, splits, m), torch.float32, dev) if with_bias else dw_part
    _dweight_partial_kernel[(tiles, splits, bsz)](
        dy, x, dw_part, db_part, m, kdim, n, splits, per_split,
        dy.stride(0), dy.stride(1), x.stride(0), x.stride(1),
        HAS_BIAS=with_bias, BLOCK_M=config.block_m, BLOCK_K=config.block_k, BLOCK_N=config.block_n,
        DOT_DTYPE=dot_dtype, PRECISION=precision, num_warps=config.num_warps, num_stages=config.num_stages,
    )  # fmt: skip

    # Group the samples by expert on the device (no host sync, no atomics): a stable sort gives a fixed
    # summation order, and expert e's samples are order[offsets[e]:offsets[e + 1]].
    sorted_index, order = torch.sort(expert_index, stable=True)
    offsets = torch.searchsorted(sorted_index, torch.arange(num_experts + 1, device=dev))

    def expert_sum(part: torch.Tensor, features: int) -> torch.Tensor:
        out = empty((num_experts, features), dtype, dev)
        block = 256
        _expert_sum_kernel[(triton.cdiv(features, block), num_experts)](
            part, order, offsets, out, features, splits, BLOCK=block, num_warps=4
        )
        return out

    dw = expert_sum(dw_part, m * kdim).view(num_experts, m, kdim)
    db = expert_sum(db_part, m) if with_bias else None
    return dw, db


# ----------------------------------------------------------------------------------------------------------
# Autograd: custom ops (opaque to torch.compile)
# ----------------------------------------------------------------------------------------------------------


@torch.library.custom_op("slerir_kernels::routed_pointwise_forward", mutates_args=())
def _routed_pointwise_op(
    x: torch.Tensor, weight: torch.Tensor, expert_index: torch.Tensor, bias: torch.Tensor | None
) -> torch.Tensor:
    return routed_matmul(x, weight, expert_index, bias)


@_routed_pointwise_op.register_fake
def _(x, weight, expert_index, bias):
    return x.new_empty((x.shape[0], weight.shape[1], x.shape[2]))


@torch.library.custom_op("slerir_kernels::routed_pointwise_backward", mutates_args=())
def _routed_pointwise_backward_op(
    dy: torch.Tensor,
    x: torch.Tensor,
    weight: torch.Tensor,
    expert_index: torch.Tensor,
    with_bias: bool,
    need_dx: bool,
    need_dweight: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    # Unneeded gradients come back as empty (0,) tensors: custom ops can't return None.
    dx = routed_matmul(dy, weight, expert_index, transpose_weight=True) if need_dx else x.new_empty(0)
    dw, db = weight.new_empty(0), weight.new_empty(0)
    if need_dweight or with_bias:
        dw_full, db_full = routed_weight_grad(dy, x, expert_index, weight.shape[0], weight.dtype, with_bias)
        dw = dw_full if need_dweight else dw
        db = db_full if with_bias else db
    return dx, dw, db


@_routed_pointwise_backward_op.register_fake
def _(dy, x, weight, expert_index, with_bias, need_dx, need_dweight):
    dx = torch.empty_like(x, memory_format=torch.contiguous_format) if need_dx else x.new_empty(0)
    dw = weight.new_empty(weight.shape) if need_dweight else weight.new_empty(0)
    db = weight.new_empty(weight.shape[:2]) if with_bias else weight.new_empty(0)
    return dx, dw, db


def _setup_context(ctx, inputs, output):
    x, weight, expert_index, bias = inputs
    ctx.save_for_backward(x, weight, expert_index)
    ctx.bias_dtype = None if bias is None else bias.dtype


def _backward(ctx, dy):
    x, weight, expert_index = ctx.saved_tensors
    need_dx, need_dw, _, need_db = ctx.needs_input_grad
    dy = dy.to(x.dtype)
    if dy.stride(-1) != 1:
        dy = dy.contiguous()
    with_bias = bool(need_db) and ctx.bias_dtype is not None
    dx, dw, db = _routed_pointwise_backward_op(dy, x, weight, expert_index, with_bias, need_dx, need_dw)
    return (
        dx if need_dx else None,
        dw if need_dw else None,
        None,
        db.to(ctx.bias_dtype) if with_bias else None,
    )


_routed_pointwise_op.register_autograd(_backward, setup_context=_setup_context)


# ----------------------------------------------------------------------------------------------------------
# Entry point
# ----------------------------------------------------------------------------------------------------------


def routed_pointwise_triton(
    x: torch.Tensor, weight: torch.Tensor, expert_index: torch.Tensor, bias: torch.Tensor | None = None
) -> torch.Tensor:
    """Per-sample expert 1x1 convolution with the grouped Triton GEMM (CUDA, or CPU under TRITON_INTERPRET=1).

    Same contract as ``kernels.routed_pointwise``. Expert indices are not range-checked on the device (that
    would need a host sync); in debug mode (``kernels.debug_mode``) they are. Under autocast x is cast to the
    autocast dtype, as the twin casts it (``compute_dtype``); the weights are cast in the kernel.
    """
    weight = check_pointwise_args(x, weight, expert_index, bias)
    x = x.to(compute_dtype(x.device.type, x.dtype))
    if x.dtype not in (torch.float32, torch.float16, torch.bfloat16):
        raise TypeError(f"routed_pointwise_triton supports fp32, fp16 and bf16, got {x.dtype}")
    bsz, c_in = x.shape[:2]
    if bsz > GRID_AXIS_LIMIT:
        raise ValueError(f"batch {bsz} exceeds the grid limit {GRID_AXIS_LIMIT}")
    index = expert_index.long()
    if debug_enabled() and bsz > 0 and not bool(((index >= 0) & (index < weight.shape[0])).all()):
        raise IndexError(f"expert_index out of range [0, {weight.shape[0]}): {index.tolist()}")
    if bias is not None and bias.stride(-1) != 1:
        bias = bias.contiguous()
    x3 = x.reshape(bsz, c_in, -1)
    if x3.stride(-1) != 1:
        x3 = x3.contiguous()
    y = _routed_pointwise_op(x3, weight, index, bias)
    return y.view(bsz, -1, *x.shape[2:])
