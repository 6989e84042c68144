"""Degradation and content extractors: open_clip image towers.

The towers come from ``open_clip.create_model``. SLER-IR registers small ViT configs with open_clip
(``slerir-vit-tiny``, ``slerir-vit-compact``) that are trained from scratch with the network; any other
open_clip model name works with a local CLIP weights file. Nothing is ever downloaded: a pretrained
tag that is not a local file is refused.

Two kinds (``ExtractorConfig.kind``):

* ``clip``: one plain image tower; CLS embedding and patch tokens.
* ``daclip``: the DA-CLIP arrangement (Luo et al., "Controlling Vision-Language Models for Multi-Task
  Image Restoration", ICLR 2024): a trainable copy of the tower (the controller) whose block outputs,
  through zero-initialised linear layers, are added back into the main tower. The controller's CLS is
  the degradation embedding; the main tower with the controller's states is the content embedding. One
  module serves both extractors. DA-CLIP checkpoints (keys ``clip.*`` and ``visual_control.*``) load.
"""

from __future__ import annotations

import copy
import logging
import math
from pathlib import Path

import open_clip
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import nn

from slerir_core.config import ExtractorConfig
from slerir_core.errors import ExtractorError

ROUTING_WINDOWS = 8
"""Most windows per side that the router reads of an image (``window_starts``)."""

_CLIP_CONFIG_DIR = Path(__file__).parent / "clip_configs"
open_clip.add_model_config(_CLIP_CONFIG_DIR)


class _RandomInitNotice(logging.Filter):
    """Drops open_clip's 'initialized randomly' warning: without a CLIP file that is the intent, since the
    tower's weights come from the SLER-IR weights file or from training."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Model initialized randomly" not in record.getMessage()


def create_clip(model_name: str, pretrained: str | None) -> nn.Module:
    """An open_clip CLIP model, from a local weights file or randomly initialised; never downloaded.

    Raises:
        ExtractorError: unknown model name, missing or unreadable weights file.
    """
    if model_name not in open_clip.list_models():
        raise ExtractorError(
            f"unknown open_clip model {model_name!r}; SLER-IR registers "
            f"{sorted(p.stem for p in _CLIP_CONFIG_DIR.glob('*.json'))}"
        )
    if pretrained is not None and not Path(pretrained).is_file():
        raise ExtractorError(
            f"extractor weights file {pretrained} does not exist (nothing is downloaded: "
            "give the path of a local open_clip checkpoint)"
        )
    notice = _RandomInitNotice()
    logging.getLogger().addFilter(notice)
    try:
        return open_clip.create_model(model_name, pretrained=pretrained)
    except Exception as err:  # open_clip raises many types for a bad checkpoint
        raise ExtractorError(f"cannot load extractor weights {pretrained}: {err}") from err
    finally:
        logging.getLogger().removeFilter(notice)


class _Preprocess(nn.Module):
    """Resize to the tower's input size and normalise with its mean and std."""

    def __init__(self, tower: nn.Module) -> None:
        super().__init__()
        self.image_size = tuple(tower.image_size)
        self.grid = tuple(tower.grid_size)
        mean = tower.image_mean or open_clip.OPENAI_DATASET_MEAN
        std = tower.image_std or open_clip.OPENAI_DATASET_STD
        self.register_buffer("mean", torch.tensor(mean)[:, None, None], persistent=False)
        self.register_buffer("std", torch.tensor(std)[:, None, None], persistent=False)
        self.embed_dim = tower.output_dim
        self.token_dim = tower.transformer.width

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(images.float(), size=self.image_size, mode="bilinear", antialias=True, align_corners=False)
        return ((x - self.mean) / self.std).to(self.mean.dtype)

    def tokens_to_grid(self, tokens: torch.Tensor) -> torch.Tensor:
        return tokens.reshape(tokens.shape[0], *self.grid, -1)


class ClipImageEncoder(_Preprocess):
    """An open_clip image tower returning its CLS embedding and its patch tokens.

    Input images are RGB in [0, 1] of any size.

    Args:
        config: which open_clip model, and optionally a local CLIP weights file.
    """

    def __init__(self, config: ExtractorConfig) -> None:
        tower = create_clip(config.model_name, config.pretrained).visual
        super().__init__(tower)
        self.tower = tower
        self.tower.output_tokens = True

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, 3, H, W) in [0, 1] -> CLS (B, embed_dim) and patch tokens (B, h, w, token_dim)."""
        cls, tokens = self.tower(self.preprocess(images))
        return cls, self.tokens_to_grid(tokens)

    def content(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """As a content extractor a plain tower gives the same outputs (``DaClipEncoder`` differs)."""
        return self(images)


class DaClipEncoder(_Preprocess):
    """DA-CLIP's pair of towers: ``forward`` gives the degradation outputs, ``content`` the content ones.

    Args:
        config: the open_clip architecture (``ViT-B-32`` for released DA-CLIP) and optionally a local
            DA-CLIP checkpoint (keys ``clip.*`` and ``visual_control.*``).
    """

    def __init__(self, config: ExtractorConfig) -> None:
        tower = create_clip(config.model_name, None).visual
        super().__init__(tower)
        self.tower = tower
        self.controller = copy.deepcopy(tower)
        width = tower.transformer.width
        self.zero = nn.ModuleList(nn.Linear(width, width) for _ in tower.transformer.resblocks)
        for p in self.zero.parameters():
            nn.init.zeros_(p)  # the controller starts with no effect on the main tower
        if config.pretrained is not None:
            self.load_daclip(config.pretrained)

    def _run(
        self, tower: nn.Module, x: torch.Tensor, control: list[torch.Tensor] | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
        h = tower._embeds(x)
        states = []
        for i, block in enumerate(tower.transformer.resblocks):
            h = block(h)
            if control is None:
                states.append(self.zero[i](h))
            else:
                # DA-CLIP feeds the controller's states back in reverse: block i gets state L-1-i.
                h = h + control[-1 - i]
        pooled, tokens = tower._pool(h)
        if tower.proj is not None:
            pooled = pooled @ tower.proj
        return pooled, tokens, states

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Degradation embedding: the controller's CLS (B, embed_dim) and tokens (B, h, w, token_dim)."""
        cls, tokens, _ = self._run(self.controller, self.preprocess(images))
        return cls, self.tokens_to_grid(tokens)

    def content(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Content embedding: the main tower steered by the controller's states."""
        x = self.preprocess(images)
        _, _, states = self._run(self.controller, x)
        cls, tokens, _ = self._run(self.tower, x, control=states)
        return cls, self.tokens_to_grid(tokens)

    def load_daclip(self, path: str | Path) -> None:
        """Load a DA-CLIP checkpoint (a ``torch.save`` state dict, maybe under ``state_dict`` with
        ``module.`` prefixes, or a safetensors file); the text tower and logit scale are ignored.

        Raises:
            ExtractorError: missing or unreadable file, or one without DA-CLIP's visual keys.
        """
        path = Path(path)
        if not path.is_file():
            raise ExtractorError(f"DA-CLIP weights file {path} does not exist (nothing is downloaded)")
        try:
            raw = (
                load_file(str(path))
                if path.suffix == ".safetensors"
                else torch.load(path, map_location="cpu", weights_only=True)
            )
        except Exception as err:  # torch.load and safetensors raise many types for a bad file
            raise ExtractorError(f"cannot read DA-CLIP weights {path}: {err}") from err
        raw = raw.get("state_dict", raw) if isinstance(raw, dict) else {}
        mapped = {}
        for key, value in raw.items():
            key = key.removeprefix("module.")
            for old, new in (
                ("clip.visual.", "tower."),
                ("visual_control.transformer.zero_modules.", "zero."),
                ("visual_control.transformer.transformer.", "controller.transformer."),
                ("visual_control.", "controller."),
            ):
                if key.startswith(old):
                    mapped[new + key[len(old) :]] = value
                    break
        missing = sorted(set(self.state_dict()) - set(mapped))
        if missing:
            raise ExtractorError(f"{path} is not a DA-CLIP checkpoint for this architecture: missing {missing[:4]}")
        try:
            self.load_state_dict(mapped, strict=False)
        except RuntimeError as err:
            raise ExtractorError(f"{path} does not fit this architecture: {err}") from None


def build_extractor(config: ExtractorConfig) -> ClipImageEncoder | DaClipEncoder:
    """The extractor of a config's ``kind``."""
    return DaClipEncoder(config) if config.kind == "daclip" else ClipImageEncoder(config)


def crops(images: torch.Tensor, grid: int, size: tuple[int, int]) -> torch.Tensor:
    """Cut (B, C, H, W) images into grid x grid crops of ``size`` each, (B * grid * grid, C, *size), row-major.

    The image is resized once to ``grid * size`` and then cut, which equals resizing each crop to the
    extractor's input size, without one interpolation call per crop.
    """
    b, c = images.shape[:2]
    sh, sw = size
    x = F.interpolate(images.float(), size=(grid * sh, grid * sw), mode="bilinear", antialias=True, align_corners=False)
    return x.reshape(b, c, grid, sh, grid, sw).permute(0, 2, 4, 1, 3, 5).reshape(b * grid * grid, c, sh, sw)


def window_starts(side: int, window: int, most: int = ROUTING_WINDOWS) -> list[int]:
    """Starts of evenly spaced windows along a side: as many as cover it, at most ``most``, the last flush with
    the end; a side no longer than the window has one, at 0."""
    if side <= window:
        return [0]
    n = min(most, math.ceil(side / window))
    return [round(i * (side - window) / (n - 1)) for i in range(n)]


def windows(images: torch.Tensor, size: tuple[int, int]) -> tuple[torch.Tensor, int]:
    """Windows of ``size`` cut from (B, C, H, W) images at their own scale, evenly spaced on a grid that covers
    each image (``window_starts``: at most 8 per side, neighbours overlapping where a side
    is not a multiple of the window). A side no longer than the window is taken whole (the extractor resizes
    it).

    Returns:
        (B * n, C, h, w) windows, image by image and row-major within an image, and n, windows per image.
    """
    (h, w), (sh, sw) = images.shape[-2:], size
    lh, lw = min(h, sh), min(w, sw)
    cut = torch.stack(
        [images[..., y : y + lh, x : x + lw] for y in window_starts(h, sh) for x in window_starts(w, sw)], dim=1
    )
    return cut.flatten(0, 1), cut.shape[1]
