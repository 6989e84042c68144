"""Launch choices: the ops' chosen tiles (pinned: the sm_90 compile report vetted them), the shared overrides,
tl.dot operand types and pixel splits."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("triton")
import triton.language as tl

from kernels.ops import routed, transposed_attention
from kernels.ops._launch import dot_size, dot_types, split_tiles

CPU, CUDA = torch.device("cpu"), torch.device("cuda")  # launch choices need no device, only its type


@pytest.mark.parametrize(
    ("m", "k", "dtype", "device", "kind", "want"),
    [
        (144, 48, torch.float32, CUDA, "matmul", (64, 128, 32, 8, 3, "tf32x3")),
        (144, 48, torch.float32, CUDA, "dweight", (64, 64, 32, 8, 3, "tf32x3")),
        (1152, 384, torch.bfloat16, CUDA, "matmul", (64, 128, 64, 4, 3, "tf32x3")),
        (7, 5, torch.float16, CUDA, "dweight", (16, 128, 16, 4, 3, "tf32x3")),
        (48, 127, torch.float32, CPU, "matmul", (64, 32, 64, 4, 1, "ieee")),
    ],
)
def test_routed_launch_choices(m, k, dtype, device, kind, want):
    config = routed.launch_config(m, k, dtype, device, kind)
    fields = (config.block_m, config.block_n, config.block_k, config.num_warps, config.num_stages)
    assert (*fields, config.fp32_precision) == want


@pytest.mark.parametrize(
    ("cp", "dtype", "device", "want"),
    [
        (64, torch.bfloat16, CUDA, (128, 8, 3, False, "tf32x3")),
        (128, torch.bfloat16, CUDA, (64, 8, 3, False, "tf32x3")),
        (64, torch.float32, CUDA, (64, 8, 2, False, "tf32x3")),
        (128, torch.float32, CUDA, (32, 8, 2, True, "tf32x3")),
        (128, torch.float16, CUDA, (32, 8, 2, False, "tf32x3")),
        (64, torch.float32, CPU, (64, 4, 1, False, "ieee")),
    ],
)
def test_transposed_attention_launch_choices(cp, dtype, device, want):
    config = transposed_attention.launch_config(cp, dtype, device)
    fields = (config.block_n, config.num_warps, config.num_stages, config.separate_dq_dk, config.fp32_precision)
    assert fields == want


def test_override_every_kind_then_restore():
    before = [routed.launch_config(48, 48, torch.float32, CUDA, kind) for kind in ("matmul", "dweight")]
    with routed.override_launch_config(block_n=16, block_k=16):
        for kind in ("matmul", "dweight"):
            config = routed.launch_config(48, 48, torch.float32, CUDA, kind)
            assert (config.block_n, config.block_k, config.block_m) == (16, 16, 64)
    assert [routed.launch_config(48, 48, torch.float32, CUDA, kind) for kind in ("matmul", "dweight")] == before


def test_override_one_kind_and_nest():
    with routed.override_launch_config("dweight", num_warps=2):
        assert routed.launch_config(48, 48, torch.float32, CUDA, "dweight").num_warps == 2
        assert routed.launch_config(48, 48, torch.float32, CUDA, "matmul").num_warps == 8
        with routed.override_launch_config("dweight", num_stages=1):
            config = routed.launch_config(48, 48, torch.float32, CUDA, "dweight")
            assert (config.num_warps, config.num_stages) == (2, 1)
        assert routed.launch_config(48, 48, torch.float32, CUDA, "dweight").num_stages == 3


def test_override_restores_after_an_error():
    with pytest.raises(RuntimeError), transposed_attention.override_launch_config(num_splits=3):
        raise RuntimeError
    assert transposed_attention.launch_config(64, torch.float32, CUDA).num_splits == 0


def test_override_rejects_unknown_fields_and_kinds():
    with pytest.raises(ValueError, match="unknown launch config fields"), routed.override_launch_config(num_splits=2):
        pass  # a transposed-attention field
    with pytest.raises(ValueError, match="unknown launch kind 'dx'"), routed.override_launch_config("dx", block_n=16):
        pass


@pytest.mark.parametrize(
    ("dtype", "device", "op", "want"),
    [
        (torch.bfloat16, CUDA, routed, (tl.bfloat16, "tf32")),
        (torch.bfloat16, CPU, routed, (tl.float32, "ieee")),  # the interpreter's bf16 tl.dot is wrong
        (torch.float16, CUDA, routed, (tl.float16, "tf32")),
        (torch.float16, CUDA, transposed_attention, (tl.float32, "tf32")),  # P and dG keep fp32's range
        (torch.float32, CUDA, transposed_attention, (tl.float32, "tf32x3")),
    ],
)
def test_dot_types(dtype, device, op, want):
    config = routed.launch_config(48, 48, dtype, device) if op is routed else op.launch_config(64, dtype, device)
    assert dot_types(dtype, config, device) == want


def test_dot_size():
    assert [dot_size(n) for n in (1, 16, 17, 48, 96)] == [16, 16, 32, 64, 128]
    assert [dot_size(n, 32) for n in (5, 48, 400)] == [16, 32, 32]


@pytest.mark.parametrize("n_tiles", [1, 7, 13, 100])
@pytest.mark.parametrize(
    ("parallel", "target", "forced", "most"), [(1, 264, 0, None), (4, 16, 0, None), (2, 264, 5, None), (1, 264, 0, 3)]
)
def test_split_tiles_covers_every_tile_without_empty_runs(n_tiles, parallel, target, forced, most):
    splits, per_split = split_tiles(n_tiles, parallel, target, forced, most)
    assert (splits - 1) * per_split < n_tiles <= splits * per_split
    wanted = forced if forced else -(-target // parallel)
    assert splits <= min(n_tiles, wanted, most or n_tiles)
