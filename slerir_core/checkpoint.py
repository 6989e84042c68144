"""Weights files: safetensors with the model config in the metadata, written atomically."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from slerir_core.atomic import atomic_write
from slerir_core.config import load_config
from slerir_core.errors import ConfigError, WeightsError
from slerir_core.model import SLERIR

FORMAT = "slerir-weights-1"


def save_weights(model: SLERIR, path: str | Path, dtype: torch.dtype | None = None, **metadata: str) -> Path:
    """Write the model's tensors and config to a safetensors file, atomically.

    Args:
        model: the network.
        path: destination; its folder must exist.
        dtype: cast floating tensors (e.g. ``torch.float16`` to halve a shipped file).
        **metadata: extra string metadata (training steps, data provenance, ...).
    """
    path = Path(path)
    tensors = {}
    for name, t in model.state_dict().items():
        t = t.detach().cpu()
        tensors[name] = (t.to(dtype) if dtype is not None and t.is_floating_point() else t).contiguous().clone()
    meta = {"format": FORMAT, "config": json.dumps(model.config.to_dict()), **metadata}
    with atomic_write(path) as tmp:
        save_file(tensors, str(tmp), metadata=meta)
    return path


def export_weights(source: str | Path, dest: str | Path, dtype: torch.dtype = torch.float16) -> Path:
    """Rewrite a weights file with its floating tensors cast (fp16 halves a shipped file), keeping its metadata
    (the training record among it).

    Raises:
        WeightsError: an unusable ``source``.
    """
    extra = {k: v for k, v in read_metadata(source).items() if k not in ("format", "config")}
    return save_weights(load_model(source), dest, dtype=dtype, **extra)


def read_metadata(path: str | Path) -> dict[str, str]:
    """The metadata of a SLER-IR weights file.

    Raises:
        WeightsError: missing file, not safetensors, or not a SLER-IR weights file.
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"weights file {path} does not exist")
    try:
        with open(path, "rb") as fh:
            header_len = int.from_bytes(fh.read(8), "little")
            if not 0 < header_len <= min(path.stat().st_size - 8, 100_000_000):
                raise WeightsError(f"{path} is not a safetensors weights file (corrupt or truncated header)")
            header = json.loads(fh.read(header_len))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise WeightsError(f"{path} is not a readable safetensors weights file: {err}") from None
    if not isinstance(header, dict):
        raise WeightsError(f"{path} is not a safetensors weights file (its header is not a JSON object)")
    meta = header.get("__metadata__") or {}
    if not isinstance(meta, dict) or meta.get("format") != FORMAT or "config" not in meta:
        raise WeightsError(f"{path} is a safetensors file but not SLER-IR weights (no {FORMAT!r} metadata)")
    return meta


def load_model(path: str | Path, device: str | torch.device = "cpu") -> SLERIR:
    """Build the network described by a weights file and load its tensors (in float32).

    Raises:
        WeightsError: for a missing, corrupt or mismatched file, or one holding NaN or infinite values.
    """
    meta = read_metadata(path)
    try:
        stored = json.loads(meta["config"])
        if not isinstance(stored, dict):
            raise ConfigError(f"expected a JSON object, got {type(stored).__name__}")
        config = load_config(stored)
    except (ConfigError, TypeError, json.JSONDecodeError) as err:
        raise WeightsError(f"{path}: the config stored in the file is invalid: {err}") from None
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as err:
        raise WeightsError(f"{path} is corrupt: {err}") from None
    model = SLERIR(config)
    state = model.state_dict()
    missing, unexpected = sorted(set(state) - set(tensors)), sorted(set(tensors) - set(state))
    if missing or unexpected:
        raise WeightsError(f"{path} does not match its config: missing {missing[:5]}, unexpected {unexpected[:5]}")
    for name, t in tensors.items():
        if t.shape != state[name].shape:
            raise WeightsError(f"{path}: tensor {name} has shape {list(t.shape)}, expected {list(state[name].shape)}")
        # A NaN anywhere would turn every output NaN, and cast to integers those look like black images.
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise WeightsError(
                f"{path}: tensor {name} holds NaN or infinite values; the file is corrupt or its training diverged"
            )
        state[name].copy_(t.to(state[name].dtype))
    return model.to(device).eval()
