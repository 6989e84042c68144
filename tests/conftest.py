"""Shared set-up: Triton's interpreter on machines without a GPU, one torch thread, a seeded tiny model.

``TRITON_INTERPRET`` is read when a function is decorated with ``@triton.jit``, and triton is imported early
and indirectly (open_clip → torchvision → torch._dynamo), so it is set here, before anything imports the
model. It only matters to the Triton launchers the kernel tests call: the public dispatch keeps the
PyTorch reference on CPU unless ``SLERIR_KERNELS=triton`` is also set.
"""

from __future__ import annotations

import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest

from slerir_core.config import load_config
from slerir_core.model import SLERIR


@pytest.fixture(scope="session", autouse=True)
def one_torch_thread():
    """Run every test on one torch thread.

    The test images and the tiny model are too small to gain from a second thread, and on a shared two-core
    runner a descheduled worker thread stalls every op: a training test took 5 s on one thread and up to
    75 s on two.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def tiny_config():
    """The ``tiny`` test config."""
    return load_config("tiny")


@pytest.fixture
def tiny_model(tiny_config) -> SLERIR:
    """A freshly initialised tiny SLER-IR in eval mode, hard routing."""
    torch.manual_seed(0)
    return SLERIR(tiny_config).eval()
