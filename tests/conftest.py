"""Shared fixtures: a seeded tiny model, so core tests stay fast on two CPU cores."""

from __future__ import annotations

import pytest
import torch

from slerir_core.config import load_config
from slerir_core.model import SLERIR


@pytest.fixture
def tiny_config():
    """The ``tiny`` test config."""
    return load_config("tiny")


@pytest.fixture
def tiny_model(tiny_config) -> SLERIR:
    """A freshly initialised tiny SLER-IR in eval mode, hard routing."""
    torch.manual_seed(0)
    return SLERIR(tiny_config).eval()
