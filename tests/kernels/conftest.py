"""Kernel tests: Triton kernels against their PyTorch twins, in Triton's interpreter when there is no GPU.

Triton reads ``TRITON_INTERPRET`` when a function is decorated with ``@triton.jit``, so it is set here, at
import, before any test imports ``kernels.ops`` (``import kernels`` does not import ``kernels.ops``). It only
matters to the Triton launchers: the public dispatch keeps the reference on CPU unless
``SLERIR_KERNELS=triton`` is also set, so the rest of the suite is unaffected. The tests call the Triton
entry points (``kernels.ops.*.<op>_triton``).

``import torch`` does not import triton, but ``open_clip`` does (torchvision → torch._dynamo), and the root
conftest imports the model, so triton may already be loaded in compiled mode: see
``_reinterpret_triton_language``.
"""

from __future__ import annotations

import os
import random
import sys

import pytest
import torch


def _reinterpret_triton_language() -> None:
    """Make an already-imported triton usable by the interpreter.

    triton.language's own ``@jit`` helpers (``tl.zeros``, ``tl.sum``, ``tl.max``, ``tl.cdiv``...) were
    decorated when triton was imported; if ``TRITON_INTERPRET`` was not set then, they are compiled-mode
    ``JITFunction``s, which raise when an interpreted kernel calls them. Wrap each as the
    ``InterpretedFunction`` it would have been.
    """
    if "triton" not in sys.modules:
        return  # triton will read TRITON_INTERPRET when it is imported
    from triton.runtime.interpreter import InterpretedFunction
    from triton.runtime.jit import JITFunction

    for name, module in list(sys.modules.items()):
        if name == "triton.language" or name.startswith("triton.language."):
            for attr, value in list(vars(module).items()):
                if isinstance(value, JITFunction):
                    setattr(module, attr, InterpretedFunction(value.fn))


if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
    if os.environ["TRITON_INTERPRET"] == "1":
        _reinterpret_triton_language()

from kernels import debug_mode  # noqa: E402 - after TRITON_INTERPRET, by design

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
