"""Fused transposed attention (Restormer's MDTA, self and cross) in Triton.

Math, per (sample, head), with q, k, v of shape (C, N) (channels x pixels) and t the temperature:

    G = q kᵀ                     Gram matrix, C x C, one pass over the pixels
    n_q = ‖q_i‖, n_k = ‖k_j‖     row norms, accumulated in the same pass
    r_q = max(n_q, eps), r_k = max(n_k, eps)     (eps = 1e-12, as F.normalize)
    Ĝ = G / (r_q r_kᵀ)           = normalize(q) normalize(k)ᵀ, without normalised copies of q and k
    P = softmax_rows(t Ĝ)
    out = P v

Backward, given dO:

    dP = dO vᵀ                    a second pass over the pixels (same Gram kernel)
    dv = Pᵀ dO
    dS = P ⊙ (dP − rowsum(dP ⊙ P))
    dt = Σ_ij dS_ij Ĝ_ij          (summed over the batch by autograd when t is (heads,))
    dĜ = t dS,  dG = dĜ / (r_q r_kᵀ)
    d r_q,i = −Σ_j dĜ_ij Ĝ_ij / r_q,i     d r_k,j = −Σ_i dĜ_ij Ĝ_ij / r_k,j
    a_i = d r_q,i / n_q,i  if n_q,i ≥ eps else 0   (clamp_min passes gradients where n ≥ eps; ∂n/∂q = q/n)
    b_j = d r_k,j / n_k,j  if n_k,j ≥ eps else 0
    dq = dG k + a ⊙ q,  dk = dGᵀ q + b ⊙ k

Kernels (B·H programs on grid axis 1, pixel splits/tiles on axis 0, which has no GRID_AXIS_LIMIT cap):

    forward:  _gram_partial_kernel (G, n_q², n_k² per pixel split) → _softmax_forward_kernel (sums the
              splits in a fixed order, P) → _matmul_pixels_kernel (P v)
    backward: _gram_partial_kernel (dO vᵀ) → _softmax_backward_kernel (dG, a, column sums for b, dt)
              → _dqk_kernel (dq, dk) and _matmul_pixels_kernel with Pᵀ (dv)

Splitting the pixel reduction into per-split partials plus a finishing sum (instead of atomics) keeps results
bitwise deterministic. Channel counts are padded to a power of two ≥ 16 (tl.dot) with masks; the C x C
matrices are stored padded (CP x CP) with zeros outside C x C.
"""

# Triton convention: sizes and compile-time constants in kernel signatures are capitalised (C, N, BLOCK_N).
# ruff: noqa: N803

import dataclasses

import torch
import triton
import triton.language as tl

from kernels._dispatch import GRID_AXIS_LIMIT, MAX_HEAD_CHANNELS, empty, sm_count
from kernels.ops._launch import LaunchConfig, LaunchOverrides, dot_size, dot_types, split_tiles
from kernels.reference import NORM_EPS, check_attention_args, compute_dtype

# ----------------------------------------------------------------------------------------------------------
# Triton kernels
# ----------------------------------------------------------------------------------------------------------


@triton.jit
def _gram_partial_kernel(
    a_ptr,  # (B, H, C, N), strides (stride_ab, stride_ah, stride_ac, 1)
    b_ptr,  # (B, H, C, N), strides (stride_bb, stride_bh, stride_bc, 1)
    part_ptr,  # (B*H, S, PART) fp32 contiguous: this split's [Σ_n a_in b_jn (CP x CP) | Σ a_in² | Σ b_jn²]
    # (the two norm blocks of CP only if WITH_NORMS)
    H,
    C,
    N,
    S,
    tiles_per_split,
    stride_ab,
    stride_ah,
    stride_ac,
    stride_bb,
    stride_bh,
    stride_bc,
    CP: tl.constexpr,
    PART: tl.constexpr,
    BLOCK_N: tl.constexpr,
    WITH_NORMS: tl.constexpr,
    DOT_DTYPE: tl.constexpr,
    PRECISION: tl.constexpr,
):
    pid_s = tl.program_id(0)
    pid_bh = tl.program_id(1)
    batch = (pid_bh // H).to(tl.int64)  # int64: batch strides times B can pass 2^31 elements
    head = (pid_bh % H).to(tl.int64)
    offs_c = tl.arange(0, CP)
    mask_c = offs_c < C
    rows64 = offs_c[:, None].to(tl.int64)  # channel * N passes 2^31 elements at 4096² pixels
    a_rows = a_ptr + batch * stride_ab + head * stride_ah + rows64 * stride_ac
    b_rows = b_ptr + batch * stride_bb + head * stride_bh + rows64 * stride_bc

    gram = tl.zeros((CP, CP), dtype=tl.float32)
    na = tl.zeros((CP,), dtype=tl.float32)
    nb = tl.zeros((CP,), dtype=tl.float32)
    n_start = pid_s * tiles_per_split * BLOCK_N
    for t in range(tiles_per_split):
        offs_n = n_start + t * BLOCK_N + tl.arange(0, BLOCK_N)
        mask = mask_c[:, None] & (offs_n < N)[None, :]
        a = tl.load(a_rows + offs_n[None, :], mask=mask, other=0.0)
        b = tl.load(b_rows + offs_n[None, :], mask=mask, other=0.0)
        gram = tl.dot(a.to(DOT_DTYPE), tl.trans(b.to(DOT_DTYPE)), gram, input_precision=PRECISION)
        if WITH_NORMS:
            af = a.to(tl.float32)
            bf = b.to(tl.float32)
            na += tl.sum(af * af, axis=1)
            nb += tl.sum(bf * bf, axis=1)

    out = part_ptr + (pid_bh.to(tl.int64) * S + pid_s) * PART
    tl.store(out + offs_c[:, None] * CP + offs_c[None, :], gram)
    if WITH_NORMS:
        tl.store(out + CP * CP + offs_c, na)
        tl.store(out + CP * CP + CP + offs_c, nb)


@triton.jit
def _softmax_forward_kernel(
    part_ptr,  # (B*H, S, PART) fp32: split partials [q kᵀ (CP x CP) | Σ q² (CP) | Σ k² (CP)]
    temp_ptr,  # (B, H), strides (stride_tb, stride_th); stride_tb is 0 for a (heads,) temperature
    p_ptr,  # (B*H, CP, CP) fp32 out: P = softmax(t Ĝ), zero outside C x C
    g_ptr,  # (B*H, CP, CP) fp32 out: G, kept for the backward pass
    nq_ptr,  # (B*H, CP) fp32 out: ‖q_i‖
    nk_ptr,  # (B*H, CP) fp32 out: ‖k_j‖, written by the first row block
    H,
    C,
    S,
    stride_tb,
    stride_th,
    eps,
    CP: tl.constexpr,
    PART: tl.constexpr,
    BLOCK_R: tl.constexpr,
):
    # One program per block of BLOCK_R rows: the softmax is row-wise, so row blocks are independent and the
    # finishing reduction over splits runs CP / BLOCK_R programs wide instead of one.
    pid_r = tl.program_id(0)
    pid_bh = tl.program_id(1).to(tl.int64)
    rows = pid_r * BLOCK_R + tl.arange(0, BLOCK_R)
    cols = tl.arange(0, CP)
    tile = rows[:, None] * CP + cols[None, :]

    gram = tl.zeros((BLOCK_R, CP), dtype=tl.float32)
    nq = tl.zeros((BLOCK_R,), dtype=tl.float32)
    nk = tl.zeros((CP,), dtype=tl.float32)
    for s in range(S):  # fixed order: deterministic (the launcher pre-sums long runs of splits)
        split = part_ptr + (pid_bh * S + s) * PART
        gram += tl.load(split + tile)
        nq += tl.load(split + CP * CP + rows)
        nk += tl.load(split + CP * CP + CP + cols)
    nq = tl.sqrt(nq)
    nk = tl.sqrt(nk)
    rq = tl.maximum(nq, eps)
    rk = tl.maximum(nk, eps)

    temp = tl.load(temp_ptr + (pid_bh // H) * stride_tb + (pid_bh % H) * stride_th).to(tl.float32)
    logits = temp * (gram / (rq[:, None] * rk[None, :]))
    logits = tl.where(cols[None, :] < C, logits, float("-inf"))
    row_max = tl.max(logits, axis=1)
    e = tl.exp(logits - row_max[:, None])
    p = e / tl.sum(e, axis=1)[:, None]
    p = tl.where(rows[:, None] < C, p, 0.0)  # padded rows: zero, so Pᵀ dO needs no row mask

    tl.store(p_ptr + pid_bh * CP * CP + tile, p)
    tl.store(g_ptr + pid_bh * CP * CP + tile, gram)
    tl.store(nq_ptr + pid_bh * CP + rows, nq)
    if pid_r == 0:
        tl.store(nk_ptr + pid_bh * CP + cols, nk)


@triton.jit
def _matmul_pixels_kernel(
    m_ptr,  # (B*H, CP, CP) fp32 contiguous: the C x C matrix (P), used transposed if TRANS_M
    x_ptr,  # (B, H, C, N), strides (stride_xb, stride_xh, stride_xc, 1)
    y_ptr,  # (B, H, C, N) contiguous out: M x (or Mᵀ x) per (sample, head)
    H,
    C,
    N,
    tiles_per_prog,
    stride_xb,
    stride_xh,
    stride_xc,
    CP: tl.constexpr,
    BLOCK_N: tl.constexpr,
    TRANS_M: tl.constexpr,
    DOT_DTYPE: tl.constexpr,
    PRECISION: tl.constexpr,
):
    pid_n = tl.program_id(0)
    pid_bh = tl.program_id(1).to(tl.int64)
    batch = pid_bh // H
    head = pid_bh % H
    offs_c = tl.arange(0, CP)
    mask_c = offs_c < C
    if TRANS_M:  # noqa: SIM108 - plain if/else: a compile-time branch, as every Triton version reads it
        m_tile = offs_c[None, :] * CP + offs_c[:, None]
    else:
        m_tile = offs_c[:, None] * CP + offs_c[None, :]
    # Loaded once per program and reused for all its pixel tiles: the matrix comes from L2, tiles from HBM.
    mat = tl.load(m_ptr + pid_bh * CP * CP + m_tile).to(DOT_DTYPE)
    rows64 = offs_c[:, None].to(tl.int64)  # channel * N passes 2^31 elements at 4096² pixels
    x_rows = x_ptr + batch * stride_xb + head * stride_xh + rows64 * stride_xc
    y_rows = y_ptr + pid_bh * C * N + rows64 * N

    n_start = pid_n * tiles_per_prog * BLOCK_N
    for t in range(tiles_per_prog):
        offs_n = n_start + t * BLOCK_N + tl.arange(0, BLOCK_N)
        mask = mask_c[:, None] & (offs_n < N)[None, :]
        x = tl.load(x_rows + offs_n[None, :], mask=mask, other=0.0)
        y = tl.dot(mat, x.to(DOT_DTYPE), input_precision=PRECISION)
        tl.store(y_rows + offs_n[None, :], y.to(y_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _softmax_backward_kernel(
    dp_part_ptr,  # (B*H, S, CP * CP) fp32: split partials of dO vᵀ
    p_ptr,  # (B*H, CP, CP) fp32: P
    g_ptr,  # (B*H, CP, CP) fp32: G
    nq_ptr,  # (B*H, CP) fp32: ‖q_i‖
    nk_ptr,  # (B*H, CP) fp32: ‖k_j‖
    temp_ptr,  # (B, H), strides (stride_tb, stride_th)
    dg_ptr,  # (B*H, CP, CP) fp32 out: dG
    a_ptr,  # (B*H, CP) fp32 out: a, the coefficient of q in dq
    colpart_ptr,  # (B*H, R, CP) fp32 out: this row block's Σ_i dĜ_ij Ĝ_ij (b needs all rows)
    dtpart_ptr,  # (B*H, R) fp32 out: this row block's Σ_ij dS_ij Ĝ_ij
    H,
    S,
    R,
    stride_tb,
    stride_th,
    eps,
    CP: tl.constexpr,
    BLOCK_R: tl.constexpr,
):
    pid_r = tl.program_id(0)
    pid_bh = tl.program_id(1).to(tl.int64)
    rows = pid_r * BLOCK_R + tl.arange(0, BLOCK_R)
    cols = tl.arange(0, CP)
    tile = rows[:, None] * CP + cols[None, :]

    dp = tl.zeros((BLOCK_R, CP), dtype=tl.float32)
    for s in range(S):  # fixed order: deterministic (the launcher pre-sums long runs of splits)
        dp += tl.load(dp_part_ptr + (pid_bh * S + s) * CP * CP + tile)
    p = tl.load(p_ptr + pid_bh * CP * CP + tile)
    gram = tl.load(g_ptr + pid_bh * CP * CP + tile)
    nq = tl.load(nq_ptr + pid_bh * CP + rows)
    nk = tl.load(nk_ptr + pid_bh * CP + cols)
    rq = tl.maximum(nq, eps)
    rk = tl.maximum(nk, eps)
    temp = tl.load(temp_ptr + (pid_bh // H) * stride_tb + (pid_bh % H) * stride_th).to(tl.float32)

    ghat = gram / (rq[:, None] * rk[None, :])
    # P is zero outside C x C, so dS, dĜ and everything below are too: no masks needed.
    ds = p * (dp - tl.sum(dp * p, axis=1)[:, None])
    dghat = temp * ds
    dg = dghat / (rq[:, None] * rk[None, :])
    weighted = dghat * ghat
    a = tl.where(nq >= eps, -tl.sum(weighted, axis=1) / (rq * rq), 0.0)

    tl.store(dg_ptr + pid_bh * CP * CP + tile, dg)
    tl.store(a_ptr + pid_bh * CP + rows, a)
    tl.store(colpart_ptr + (pid_bh * R + pid_r) * CP + cols, tl.sum(weighted, axis=0))
    tl.store(dtpart_ptr + pid_bh * R + pid_r, tl.sum(tl.sum(ds * ghat, axis=1), axis=0))


@triton.jit
def _dqk_kernel(
    q_ptr,  # (B, H, C, N), strides (stride_qb, stride_qh, stride_qc, 1)
    k_ptr,  # (B, H, C, N), strides (stride_kb, stride_kh, stride_kc, 1)
    dg_ptr,  # (B*H, CP, CP) fp32: dG
    a_ptr,  # (B*H, CP) fp32: a
    colpart_ptr,  # (B*H, R, CP) fp32: row-block partials of Σ_i dĜ_ij Ĝ_ij
    nk_ptr,  # (B*H, CP) fp32: ‖k_j‖
    dq_ptr,  # (B, H, C, N) contiguous out: dG k + a ⊙ q, written if WRITE_DQ
    dk_ptr,  # (B, H, C, N) contiguous out: dGᵀ q + b ⊙ k, written if WRITE_DK
    H,
    C,
    N,
    R,
    tiles_per_prog,
    eps,
    stride_qb,
    stride_qh,
    stride_qc,
    stride_kb,
    stride_kh,
    stride_kc,
    CP: tl.constexpr,
    BLOCK_N: tl.constexpr,
    WRITE_DQ: tl.constexpr,
    WRITE_DK: tl.constexpr,
    DOT_DTYPE: tl.constexpr,
    PRECISION: tl.constexpr,
):
    # Both outputs read both q and k, so one pass writing both moves the fewest bytes; with fp32 operands at
    # CP = 128 the two C x C operands (dG, dGᵀ; hi and lo parts for tf32x3) exceed shared memory, and the
    # launcher runs one pass per output instead.
    pid_n = tl.program_id(0)
    pid_bh = tl.program_id(1).to(tl.int64)
    batch = pid_bh // H
    head = pid_bh % H
    offs_c = tl.arange(0, CP)
    mask_c = offs_c < C

    dg = tl.load(dg_ptr + pid_bh * CP * CP + offs_c[:, None] * CP + offs_c[None, :])
    if WRITE_DQ:
        dg_n = dg.to(DOT_DTYPE)
        a = tl.load(a_ptr + pid_bh * CP + offs_c)
    if WRITE_DK:
        dg_t = tl.trans(dg).to(DOT_DTYPE)
        col = tl.zeros((CP,), dtype=tl.float32)
        for r in range(R):  # fixed order: deterministic
            col += tl.load(colpart_ptr + (pid_bh * R + r) * CP + offs_c)
        nk = tl.load(nk_ptr + pid_bh * CP + offs_c)
        rk = tl.maximum(nk, eps)
        b = tl.where(nk >= eps, -col / (rk * rk), 0.0)

    rows64 = offs_c[:, None].to(tl.int64)  # channel * N passes 2^31 elements at 4096² pixels
    q_rows = q_ptr + batch * stride_qb + head * stride_qh + rows64 * stride_qc
    k_rows = k_ptr + batch * stride_kb + head * stride_kh + rows64 * stride_kc
    out_rows = pid_bh * C * N + rows64 * N
    n_start = pid_n * tiles_per_prog * BLOCK_N
    for t in range(tiles_per_prog):
        offs_n = n_start + t * BLOCK_N + tl.arange(0, BLOCK_N)
        mask = mask_c[:, None] & (offs_n < N)[None, :]
        q = tl.load(q_rows + offs_n[None, :], mask=mask, other=0.0)
        k = tl.load(k_rows + offs_n[None, :], mask=mask, other=0.0)
        if WRITE_DQ:
            dq = tl.dot(dg_n, k.to(DOT_DTYPE), input_precision=PRECISION) + a[:, None] * q.to(tl.float32)
            tl.store(dq_ptr + out_rows + offs_n[None, :], dq.to(dq_ptr.dtype.element_ty), mask=mask)
        if WRITE_DK:
            dk = tl.dot(dg_t, q.to(DOT_DTYPE), input_precision=PRECISION) + b[:, None] * k.to(tl.float32)
            tl.store(dk_ptr + out_rows + offs_n[None, :], dk.to(dk_ptr.dtype.element_ty), mask=mask)


# ----------------------------------------------------------------------------------------------------------
# Launch configuration
# ----------------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, kw_only=True)
class TransposedAttentionLaunchConfig(LaunchConfig):
    """Grid shape of the transposed-attention kernels, beside the shared fields.

    Attributes:
        reduce_programs_per_sm: programs per SM the pixel-split reductions (Gram, dO vᵀ) aim for.
        map_programs_per_sm: programs per SM the per-pixel passes (P v, dq/dk, dv) aim for.
        num_splits: if > 0, exactly this many pixel splits per (sample, head) in the reductions (capped by the
            tile count); tests use it to exercise the split sum.
        separate_dq_dk: compute dq and dk in two passes (each reads q and k) instead of one.
        fp16_operands: fp32, in tf32: the same 10-bit mantissa as fp16, but the fp32 matrices P and dG keep
            their range.
    """

    reduce_programs_per_sm: int = 2
    map_programs_per_sm: int = 4
    num_splits: int = 0
    separate_dq_dk: bool = False
    fp16_operands: tl.dtype = tl.float32


_overrides = LaunchOverrides(TransposedAttentionLaunchConfig)
override_launch_config = _overrides.override


def launch_config(cp: int, dtype: torch.dtype, device: torch.device) -> TransposedAttentionLaunchConfig:
    """Choose block sizes for CP padded channels.

    Picked offline from sm_90 compiles (``python benchmarks/kernel_speed.py --compile-report``): every pixel
    kernel without register spills and within 227 KiB of shared memory. 16-bit inputs take wide tiles; fp32
    inputs split each operand into tf32 hi and lo parts in registers and shared memory (tf32x3), so they take
    narrow ones, and at CP = 128 compute dq and dk in separate passes.
    """
    if device.type != "cuda":  # Triton's interpreter: moderate tiles keep the numpy emulation quick
        tiles = dict(block_n=64, num_warps=4, num_stages=1, fp32_precision="ieee")
    elif dtype == torch.bfloat16:
        tiles = dict(block_n=128 if cp <= 64 else 64, num_warps=8, num_stages=3)
    elif cp <= 64:  # fp32 (tf32x3) and fp16 (fp32 operands in tf32)
        tiles = dict(block_n=64, num_warps=8, num_stages=2)
    else:
        tiles = dict(block_n=32, num_warps=8, num_stages=2, separate_dq_dk=dtype == torch.float32)
    return _overrides.apply(TransposedAttentionLaunchConfig(**tiles))


# A finishing kernel walks at most this many split partials itself; longer runs (a few (sample, head) pairs
# split many ways to fill the GPU) are first summed by torch.sum over the split axis, which is parallel,
# deterministic (no atomics) and one launch, instead of a serial loop of dependent loads in a few programs.
KERNEL_SUM_MAX_SPLITS = 8


def _presum(part: torch.Tensor, splits: int) -> tuple[torch.Tensor, int]:
    """Sum (B*H, S, X) split partials to (B*H, 1, X) when S is long; returns the partials and their count."""
    if splits <= KERNEL_SUM_MAX_SPLITS:
        return part, splits
    return part.sum(dim=1, keepdim=True), 1


# ----------------------------------------------------------------------------------------------------------
# Host launchers
# ----------------------------------------------------------------------------------------------------------


def _strides3(x: torch.Tensor) -> tuple[int, int, int]:
    return x.stride(0), x.stride(1), x.stride(2)


def transposed_attention_forward(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, temperature: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Launch the forward kernels. q, k, v: (B, H, C, N) with unit pixel stride; temperature: (B, H).

    Returns:
        out (B, H, C, N) in q's dtype, and for the backward pass P and G (B*H, CP, CP) and ‖q‖, ‖k‖
        (B*H, CP), fp32.
    """
    bsz, heads, c, n = q.shape
    bh, cp, dev = bsz * heads, dot_size(c), q.device
    config = launch_config(cp, q.dtype, dev)
    dot_dtype, precision = dot_types(q.dtype, config, dev)
    n_tiles = triton.cdiv(n, config.block_n)
    sms = sm_count(dev)
    f32 = torch.float32

    splits, per_split = split_tiles(n_tiles, bh, sms * config.reduce_programs_per_sm, config.num_splits)
    part_size = cp * cp + 2 * cp
    part = empty((bh, splits, part_size), f32, dev)
    _gram_partial_kernel[(splits, bh)](
        q, k, part, heads, c, n, splits, per_split, *_strides3(q), *_strides3(k),
        CP=cp, PART=part_size, BLOCK_N=config.block_n, WITH_NORMS=True, DOT_DTYPE=dot_dtype,
        PRECISION=precision, num_warps=config.num_warps, num_stages=config.num_stages,
    )  # fmt: skip
    part, splits = _presum(part, splits)

    block_r = min(cp, 16)
    p = empty((bh, cp, cp), f32, dev)
    g = empty((bh, cp, cp), f32, dev)
    nq = empty((bh, cp), f32, dev)
    nk = empty((bh, cp), f32, dev)
    _softmax_forward_kernel[(cp // block_r, bh)](
        part, temperature, p, g, nq, nk,
        heads, c, splits, temperature.stride(0), temperature.stride(1), NORM_EPS,
        CP=cp, PART=part_size, BLOCK_R=block_r, num_warps=4,
    )  # fmt: skip

    out = empty((bsz, heads, c, n), q.dtype, dev)
    progs, per_prog = split_tiles(n_tiles, bh, sms * config.map_programs_per_sm)
    _matmul_pixels_kernel[(progs, bh)](
        p, v, out, heads, c, n, per_prog, *_strides3(v),
        CP=cp, BLOCK_N=config.block_n, TRANS_M=False, DOT_DTYPE=dot_dtype, PRECISION=precision,
        num_warps=config.num_warps, num_stages=config.num_stages,
    )  # fmt: skip
    return out, p, g, nq, nk


def transposed_attention_backward(
    dout: torch.Tensor,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    temperature: torch.Tensor,
    p: torch.Tensor,
    g: torch.Tensor,
    nq: torch.Tensor,
    nk: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Launch the backward kernels; returns dq, dk, dv (B, H, C, N) and dtemperature (B, H) fp32."""
    bsz, heads, c, n = q.shape
    bh, cp, dev = bsz * heads, dot_size(c), q.device
    config = launch_config(cp, q.dtype, dev)
    dot_dtype, precision = dot_types(q.dtype, config, dev)
    n_tiles = triton.cdiv(n, config.block_n)
    sms = sm_count(dev)
    f32 = torch.float32

    splits, per_split = split_tiles(n_tiles, bh, sms * config.reduce_programs_per_sm, config.num_splits)
    dp_part = empty((bh, splits, cp * cp), f32, dev)
    _gram_partial_kernel[(splits, bh)](
        dout, v, dp_part, heads, c, n, splits, per_split, *_strides3(dout), *_strides3(v),
        CP=cp, PART=cp * cp, BLOCK_N=config.block_n, WITH_NORMS=False, DOT_DTYPE=dot_dtype,
        PRECISION=precision, num_warps=config.num_warps, num_stages=config.num_stages,
    )  # fmt: skip
    dp_part, splits = _presum(dp_part, splits)

    block_r = min(cp, 16)
    rblocks = cp // block_r
    dg = empty((bh, cp, cp), f32, dev)
    a = empty((bh, cp), f32, dev)
    colpart = empty((bh, rblocks, cp), f32, dev)
    dtpart = empty((bh, rblocks), f32, dev)
    _softmax_backward_kernel[(rblocks, bh)](
        dp_part, p, g, nq, nk, temperature, dg, a, colpart, dtpart,
        heads, splits, rblocks, temperature.stride(0), temperature.stride(1), NORM_EPS,
        CP=cp, BLOCK_R=block_r, num_warps=4,
    )  # fmt: skip

    progs, per_prog = split_tiles(n_tiles, bh, sms * config.map_programs_per_sm)
    dq = empty((bsz, heads, c, n), q.dtype, dev)
    dk = empty((bsz, heads, c, n), k.dtype, dev)
    passes = ((True, False), (False, True)) if config.separate_dq_dk else ((True, True),)
    for write_dq, write_dk in passes:
        _dqk_kernel[(progs, bh)](
            q, k, dg, a, colpart, nk, dq, dk,
            heads, c, n, rblocks, per_prog, NORM_EPS, *_strides3(q), *_strides3(k),
            CP=cp, BLOCK_N=config.block_n, WRITE_DQ=write_dq, WRITE_DK=write_dk, DOT_DTYPE=dot_dtype,
            PRECISION=precision, num_warps=config.num_warps, num_stages=config.num_stages,
        )  # fmt: skip
    dv = empty((bsz, heads, c, n), v.dtype, dev)
    _matmul_pixels_kernel[(progs, bh)](
        p, dout, dv, heads, c, n, per_prog, *_strides3(dout),
        CP=cp, BLOCK_N=config.block_n, TRANS_M=True, DOT_DTYPE=dot_dtype, PRECISION=precision,
        num_warps=config.num_warps, num_stages=config.num_stages,
    )  # fmt: skip
    return dq, dk, dv, dtpart.sum(dim=1).view(bsz, heads)


# ----------------------------------------------------------------------------------------------------------
# Autograd: custom ops (opaque to torch.compile, which then needs only the fake implementations below)
# ----------------------------------------------------------------------------------------------------------


@torch.library.custom_op("slerir_kernels::transposed_attention_forward", mutates_args=())
def _transposed_attention_op(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, temperature: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    return transposed_attention_forward(q, k, v, temperature)


@_transposed_attention_op.register_fake
def _(q, k, v, temperature):
    bsz, heads, c, _ = q.shape
    cp = dot_size(c)
    mat = q.new_empty((bsz * heads, cp, cp), dtype=torch.float32)
    vec = q.new_empty((bsz * heads, cp), dtype=torch.float32)
    return (
        torch.empty_like(q, memory_format=torch.contiguous_format),
        mat,
        torch.empty_like(mat),
        vec,
        torch.empty_like(vec),
    )


@torch.library.custom_op("slerir_kernels::transposed_attention_backward", mutates_args=())
def _transposed_attention_backward_op(
    dout: torch.Tensor,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    temperature: torch.Tensor,
    p: torch.Tensor,
    g: torch.Tensor,
    nq: torch.Tensor,
    nk: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    return transposed_attention_backward(dout, q, k, v, temperature, p, g, nq, nk)


@_transposed_attention_backward_op.register_fake
def _(dout, q, k, v, temperature, p, g, nq, nk):
    like = {"memory_format": torch.contiguous_format}
    dt = temperature.new_empty(temperature.shape, dtype=torch.float32)
    return torch.empty_like(q, **like), torch.empty_like(k, **like), torch.empty_like(v, **like), dt


def _setup_context(ctx, inputs, output):
    q, k, v, temperature = inputs
    _, p, g, nq, nk = output
    ctx.save_for_backward(q, k, v, temperature, p, g, nq, nk)


def _backward(ctx, dout, *_unused_grads):
    q, k, v, temperature, p, g, nq, nk = ctx.saved_tensors
    dout = dout.to(q.dtype)
    if dout.stride(-1) != 1:
        dout = dout.contiguous()
    dq, dk, dv, dt = _transposed_attention_backward_op(dout, q, k, v, temperature, p, g, nq, nk)
    return dq, dk, dv, dt.to(temperature.dtype)


_transposed_attention_op.register_autograd(_backward, setup_context=_setup_context)


# ----------------------------------------------------------------------------------------------------------
# Entry point
# ----------------------------------------------------------------------------------------------------------


def transposed_attention_triton(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, temperature: torch.Tensor
) -> torch.Tensor:
    """Fused transposed attention with the Triton kernels (CUDA tensors, or CPU under TRITON_INTERPRET=1).

    Same contract as ``kernels.transposed_attention``. Any strides are accepted; only a non-unit pixel stride
    costs a copy (the model's ``chunk`` views of the qkv tensor are read in place). Under autocast the inputs
    are cast to the autocast dtype (``compute_dtype``), the dtype of the twin's matmuls.

    Args:
        q: (B, heads, C_h, N) queries.
        k: (B, heads, C_h, N) keys.
        v: (B, heads, C_h, N) values.
        temperature: (heads,) or (B, heads).

    Returns:
        (B, heads, C_h, N) in the common dtype of q, k and v.
    """
    bsz, heads, _, _ = check_attention_args(q, k, v, temperature)
    if bsz * heads > GRID_AXIS_LIMIT:
        raise ValueError(f"B * heads = {bsz * heads} exceeds the grid limit {GRID_AXIS_LIMIT}")
    if q.shape[2] > MAX_HEAD_CHANNELS:
        raise ValueError(f"C_h = {q.shape[2]} > {MAX_HEAD_CHANNELS} channels per head: use transposed_attention_ref")
    dtype = compute_dtype(q.device.type, torch.promote_types(torch.promote_types(q.dtype, k.dtype), v.dtype))
    if dtype not in (torch.float32, torch.float16, torch.bfloat16):
        raise TypeError(f"transposed_attention_triton supports fp32, fp16 and bf16, got {dtype}")
    q, k, v = (x.to(dtype) if x.stride(-1) == 1 else x.to(dtype).contiguous() for x in (q, k, v))
    out, *_ = _transposed_attention_op(q, k, v, temperature.expand(bsz, heads))
    return out
