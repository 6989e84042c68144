"""Degradation and content extractors: open_clip image towers.

The towers come from ``open_clip.create_model``. SLER-IR registers small ViT configs with open_clip
(``slerir-vit-tiny``, ``slerir-vit-compact``) that are trained from scratch with the network; any other
open_clip model name works with a local CLIP weights file. Nothing is ever downloaded: a pretrained
tag that is not a local file is refused.
"""

from __future__ import annotations

import logging
from pathlib import Path

import open_clip
import torch
import torch.nn.functional as F
from torch import nn

from slerir_core.config import ExtractorConfig

_CLIP_CONFIG_DIR = Path(__file__).parent / "clip_configs"
open_clip.add_model_config(_CLIP_CONFIG_DIR)


class _RandomInitNotice(logging.Filter):
    """Drops open_clip's 'initialized randomly' warning: without a CLIP file that is the intent, since the
    tower's weights come from the SLER-IR weights file or from training."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Model initialized randomly" not in record.getMessage()


class ExtractorError(ValueError):
    """An extractor that cannot be built: unknown model or missing or unreadable weights."""


class ClipImageEncoder(nn.Module):
    """An open_clip image tower returning its CLS embedding and its patch tokens.

    Input images are RGB in [0, 1] of any size; they are resized to the tower's input size and
    normalised with the tower's mean and std.

    Args:
        config: which open_clip model, and optionally a local CLIP weights file.
    """

    def __init__(self, config: ExtractorConfig) -> None:
        super().__init__()
        if config.model_name not in open_clip.list_models():
            raise ExtractorError(
                f"unknown open_clip model {config.model_name!r}; SLER-IR registers "
                f"{sorted(p.stem for p in _CLIP_CONFIG_DIR.glob('*.json'))}"
            )
        if config.pretrained is not None and not Path(config.pretrained).is_file():
            raise ExtractorError(
                f"extractor weights file {config.pretrained} does not exist (nothing is downloaded: "
                "give the path of a local open_clip checkpoint)"
            )
        notice = _RandomInitNotice()
        logging.getLogger().addFilter(notice)
        try:
            clip = open_clip.create_model(config.model_name, pretrained=config.pretrained)
        except Exception as err:  # open_clip raises many types for a bad checkpoint
            raise ExtractorError(f"cannot load extractor weights {config.pretrained}: {err}") from err
        finally:
            logging.getLogger().removeFilter(notice)
        self.tower = clip.visual
        self.tower.output_tokens = True
        self.image_size = tuple(self.tower.image_size)
        self.grid = tuple(self.tower.grid_size)
        mean = self.tower.image_mean or open_clip.OPENAI_DATASET_MEAN
        std = self.tower.image_std or open_clip.OPENAI_DATASET_STD
        self.register_buffer("mean", torch.tensor(mean)[:, None, None], persistent=False)
        self.register_buffer("std", torch.tensor(std)[:, None, None], persistent=False)
        self.embed_dim = self.tower.output_dim
        self.token_dim = self.tower.transformer.width

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, 3, H, W) in [0, 1] -> CLS (B, embed_dim) and patch tokens (B, h, w, token_dim)."""
        x = F.interpolate(images.float(), size=self.image_size, mode="bilinear", antialias=True, align_corners=False)
        x = (x - self.mean) / self.std
        cls, tokens = self.tower(x.to(self.mean.dtype))
        return cls, tokens.reshape(images.shape[0], *self.grid, -1)


def crops(images: torch.Tensor, grid: int, size: tuple[int, int]) -> torch.Tensor:
    """Cut (B, C, H, W) images into grid x grid crops of ``size`` each, (B * grid * grid, C, *size), row-major.

    The image is resized once to ``grid * size`` and then cut, which equals resizing each crop to the
    extractor's input size, without one interpolation call per crop.
    """
    b, c = images.shape[:2]
    sh, sw = size
    x = F.interpolate(images.float(), size=(grid * sh, grid * sw), mode="bilinear", antialias=True,
                      align_corners=False)
    return x.reshape(b, c, grid, sh, grid, sw).permute(0, 2, 4, 1, 3, 5).reshape(b * grid * grid, c, sh, sw)
