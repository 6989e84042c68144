"""SLER-IR core: the network, configs, degradations and the Restorer API. Never imports napari or Qt.

Heavy members (torch, open_clip) load on first use, so ``import slerir_core`` stays cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "Restorer": "slerir_core.restore",
    "Plan": "slerir_core.plan",
    "RestoreOptions": "slerir_core.restore",
    "SLERIR": "slerir_core.model",
    "load_config": "slerir_core.config",
    "ModelConfig": "slerir_core.config",
}
__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'slerir_core' has no attribute {name!r}")
