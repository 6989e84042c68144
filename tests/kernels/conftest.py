"""Kernel tests: Triton kernels against their PyTorch twins, in Triton's interpreter when there is no GPU.

The root conftest sets ``TRITON_INTERPRET=1`` on machines without a GPU, before triton is first imported.
The tests call the Triton entry points (``kernels.ops.*.<op>_triton``) directly.
"""

from __future__ import annotations

import os
import random

import pytest
import torch

from kernels import debug_mode

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")


def pytest_configure(config: pytest.Config) -> None:
    # Also declared in pyproject.toml; repeated for `pytest -c /dev/null tests/kernels` (GPU machines without
    # the project's dev dependencies).
    config.addinivalue_line("markers", "gpu: needs a CUDA device")


@pytest.fixture(autouse=True)
def _seed(request: pytest.FixtureRequest) -> int:
    """A fresh seed per test (``SLERIR_TEST_SEED`` pins it); printed, so a failure shows how to replay it."""
    seed = int(os.environ.get("SLERIR_TEST_SEED", random.SystemRandom().randrange(2**31)))
    torch.manual_seed(seed)
    print(f"seed: SLERIR_TEST_SEED={seed}")
    request.node.user_properties.append(("seed", seed))
    return seed


@pytest.fixture(autouse=True)
def _poison_outputs():
    """Launchers fill outputs and scratch buffers with NaN first, so unwritten elements fail the checks."""
    with debug_mode(True):
        yield
    if DEVICE.type == "cuda":
        torch.cuda.empty_cache()


@pytest.fixture(autouse=True)
def _full_fp32():
    """torch's fp32 matmuls and convolutions in full fp32, as the kernels' (tf32x3) are, so that the references
    compared with them are exact to fp32; cuDNN convolutions default to TF32, which put a reference 1x1
    convolution 1.4e-4 off on a GPU. Restored after the test."""
    matmul, cudnn = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = matmul, cudnn


@pytest.fixture
def device() -> torch.device:
    """The GPU if there is one, else the CPU (Triton's interpreter)."""
    return DEVICE


def relative_error(out: torch.Tensor, ref: torch.Tensor) -> float:
    """‖out − ref‖ / ‖ref‖ in float64 (‖out‖ when ref is zero)."""
    out, ref = out.detach().double(), ref.detach().double()
    scale = ref.norm()
    return float((out - ref).norm() / (scale if scale > 0 else 1.0))


@pytest.fixture
def assert_rel_close():
    """Assert finite values and ‖out − ref‖ / ‖ref‖ ≤ tol; on failure name the worst elements."""

    def check(out: torch.Tensor, ref: torch.Tensor, tol: float, name: str = "output") -> None:
        assert out.shape == ref.shape, f"{name}: shape {tuple(out.shape)} != {tuple(ref.shape)}"
        bad = ~torch.isfinite(out)
        assert not bad.any(), (
            f"{name}: {int(bad.sum())} non-finite elements (unwritten?) at {bad.nonzero()[:5].tolist()}"
        )
        err = relative_error(out, ref)
        if not err <= tol:
            diff = (out.detach().double() - ref.detach().double()).abs().flatten()
            worst = diff.topk(min(5, diff.numel())).indices
            rows = []
            for i in worst.tolist():
                where = tuple(int(j) for j in torch.unravel_index(torch.tensor(i), out.shape))
                rows.append(f"  {where}: {out.flatten()[i].item():.6g} vs {ref.flatten()[i].item():.6g}")
            raise AssertionError(f"{name}: relative error {err:.3g} > {tol:g}; worst:\n" + "\n".join(rows))

    return check
