"""The restorer the tests of the Restorer, its planning and its lazy path share: the untrained tiny model."""

from __future__ import annotations

import pytest
import torch

from slerir_core.config import load_config
from slerir_core.model import SLERIR
from slerir_core.restore import Restorer


@pytest.fixture(scope="module")
def restorer() -> Restorer:
    """An untrained tiny model on the CPU, one per test module."""
    torch.manual_seed(0)
    return Restorer(SLERIR(load_config("tiny")), device="cpu")
