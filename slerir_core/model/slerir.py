"""The SLER-IR network: extractors, spherical router, GLGF prior and an 8-stage routed backbone."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from slerir_core.config import STAGES, ModelConfig
from slerir_core.model.blocks import Downsample, Upsample
from slerir_core.model.experts import RoutedStage, make_expert
from slerir_core.model.extractors import build_extractor, crops, windows
from slerir_core.model.glgf import FULL_BOX, GLGF, Box, PriorInjection, as_boxes
from slerir_core.model.router import Router

ROUTING_MODES = ("soft", "hard")
Routes = torch.Tensor | Sequence[int] | Sequence[Sequence[int]]


def routes_tensor(routes: Routes, batch: int, num_experts: int) -> torch.Tensor:
    """Validate manual routes and return them as a (batch, 8) long tensor.

    Args:
        routes: one list of 8 expert indices for the whole batch, or one list per sample.
        batch: samples in the batch.
        num_experts: C, experts per stage.

    Raises:
        ValueError: wrong length, wrong batch size, or an expert index outside [0, C).
    """
    r = torch.as_tensor(routes, dtype=torch.long)
    if r.ndim == 1:
        r = r.expand(batch, -1)
    if r.ndim != 2 or r.shape[1] != len(STAGES):
        raise ValueError(f"routes need {len(STAGES)} expert indices ({', '.join(STAGES)}), got {list(r.shape)}")
    if r.shape[0] != batch:
        raise ValueError(f"routes given for {r.shape[0]} samples, but the batch has {batch}")
    if bool(((r < 0) | (r >= num_experts)).any()):
        raise ValueError(f"expert indices must be in [0, {num_experts - 1}], got {r.tolist()}")
    return r.contiguous()


def grown_box(
    box: Box | torch.Tensor, size: tuple[int, int], pad: tuple[int, int], device: torch.device
) -> Box | torch.Tensor:
    """``box`` (one, or a (N, 4) tensor) grown by the padding below and right of a ``size`` input, in the same
    fractions of the image. One box stays numbers, so the prior's sampling matrices for it are made once
    (``glgf.sample_prior``)."""
    edges = as_boxes(box, device).unbind(1) if isinstance(box, torch.Tensor) else box
    top, left, bottom, right = edges
    (h, w), (pad_h, pad_w) = size, pad
    grown = (top, left, top + (bottom - top) * (h + pad_h) / h, left + (right - left) * (w + pad_w) / w)
    return torch.stack(grown, dim=1) if isinstance(box, torch.Tensor) else grown


class SLERIR(nn.Module):
    """Spherical layer-wise expert routing for all-in-one image restoration.

    ``forward(x)`` analyses the image (routes, probabilities, degradation map, prior) and restores it.
    ``analyse`` and ``restore_features`` are the two halves, used separately by tiled inference: the
    analysis runs once on the whole image, the backbone on each tile with the same routes and the
    matching part of the prior.

    Args:
        config: the network's configuration.

    Attributes:
        routing: ``"soft"`` (training phase 1) or ``"hard"`` (phase 2 and inference).
        inject_prior: inject the GLGF prior into the stages (on by default; off to measure what it does).
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.routing = "hard"
        self.inject_prior = True
        c = config
        ln_bias = c.layernorm == "with_bias"
        self.degradation_extractor = build_extractor(c.degradation_extractor)
        shared = c.content_extractor == c.degradation_extractor and c.content_extractor.kind == "daclip"
        self.content_extractor = build_extractor(c.content_extractor) if c.glgf and not shared else None
        self.router = Router(
            self.degradation_extractor.embed_dim,
            len(STAGES),
            c.num_experts,
            c.routing_dim,
            c.router_hidden,
            c.router_temperature,
            c.per_stage_centres,
            c.clustering,
        )
        # Mean routing vector of each training task, for the degradation label; zero until training sets it.
        self.register_buffer("task_prototypes", torch.zeros(len(c.tasks), len(STAGES), c.routing_dim))
        if c.glgf:
            content = self.content_source()
            self.glgf = GLGF(
                content.embed_dim,
                content.token_dim,
                self.degradation_extractor.embed_dim,
                c.prior_dim,
                c.prior_heads,
            )
            self.injections = nn.ModuleList(
                PriorInjection(c.prior_dim, ch, h, ln_bias)
                for ch, h in zip(c.stage_channels, c.stage_heads, strict=True)
            )
        else:
            self.glgf, self.injections = None, None

        d = c.dim
        self.patch_embed = nn.Conv2d(c.in_channels, d, 3, padding=1, bias=c.bias)
        self.stages = nn.ModuleDict(
            {
                name: RoutedStage([make_expert(ch, h, n, c.ffn_factor, c.bias, ln_bias) for _ in range(c.num_experts)])
                for name, ch, h, n in zip(STAGES, c.stage_channels, c.stage_heads, c.stage_blocks, strict=True)
            }
        )
        self.down = nn.ModuleList([Downsample(d), Downsample(2 * d), Downsample(4 * d)])
        self.up = nn.ModuleList([Upsample(8 * d), Upsample(4 * d), Upsample(2 * d)])
        self.reduce = nn.ModuleList([nn.Conv2d(8 * d, 4 * d, 1, bias=c.bias), nn.Conv2d(4 * d, 2 * d, 1, bias=c.bias)])
        self.output = nn.Conv2d(2 * d, c.in_channels, 3, padding=1, bias=c.bias)

    # -- analysis: routes, degradation map and prior, once per image ---------------------------------

    def content_source(self) -> nn.Module:
        """The module whose ``content`` method gives the content CLS and tokens."""
        return self.degradation_extractor if self.content_extractor is None else self.content_extractor

    def analyse(
        self, x: torch.Tensor, with_map: bool = True, routing_view: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        """Route an image batch and build its prior.

        Args:
            x: (B, 3, H, W) images in [0, 1].
            with_map: also compute the degradation map (always computed when GLGF needs the crops).
            routing_view: what the router reads instead of ``x`` when ``x`` is a reduced view of larger
                images: their windows at full resolution, side by side (``slerir_core.plan.routing_mosaic``).

        Returns:
            ``embeddings`` (B, 8, d) unit routing vectors, ``probs`` (B, 8, C), ``routes`` (B, 8) argmax
            experts, ``degradation_map`` (B, C, g, g) soft assignment of each crop to the centres (averaged
            over the stages), ``task_probs`` (B, T) and ``task_map`` (B, T, g, g), the task probabilities of
            each crop, when task prototypes exist, and ``prior`` (B, prior_dim, h, w) when GLGF is on.
        """
        f, probs = self.router(self.degradation_embedding(x if routing_view is None else routing_view))
        info = {"embeddings": f, "probs": probs, "routes": probs.argmax(dim=-1)}
        if self.task_prototypes.numel():
            info["task_probs"] = self.task_probabilities(f)
        if not (with_map or self.glgf is not None):
            return info
        g = self.config.crop_grid
        crop_cls, _ = self.degradation_extractor(crops(x, g, self.degradation_extractor.image_size))
        crop_f, crop_probs = self.router(crop_cls)
        b = x.shape[0]
        info["degradation_map"] = crop_probs.mean(dim=1).reshape(b, g, g, -1).permute(0, 3, 1, 2)
        if self.task_prototypes.numel():
            info["task_map"] = self.task_probabilities(crop_f).reshape(b, g, g, -1).permute(0, 3, 1, 2)
        if self.glgf is not None:
            content_cls, tokens = self.content_source().content(x)
            info["prior"] = self.glgf(content_cls, tokens, crop_cls.reshape(b, g, g, -1))
        return info

    def degradation_embedding(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) images -> (B, D) degradation CLS, the router's input: the extractor's mean CLS over
        windows of its input size cut at the image's own scale (``windows``).

        Noise grain, blur width and rain streaks are sizes in pixels, and the router learns them from training
        crops of about the extractor's input size. Resized whole to that size, a 128² image shows them at half
        their size and a 512² one at an eighth; read that way, the held-out images of one degradation took
        scattered paths that windows at their own scale did not (blur: purity 0.50 against 0.83).
        """
        cut, n = windows(x, self.degradation_extractor.image_size)
        cls, _ = self.degradation_extractor(cut)
        return cls.reshape(x.shape[0], n, -1).mean(dim=1)

    def task_probabilities(self, f: torch.Tensor) -> torch.Tensor:
        """(B, 8, d) routing vectors -> (B, T) probabilities of the training tasks (cosine to prototypes)."""
        protos = F.normalize(self.task_prototypes.float(), dim=-1)
        with torch.autocast(f.device.type, enabled=False):  # float32, as the routing probabilities
            cos = torch.einsum("bkd,tkd->bt", f.float(), protos) / protos.shape[1]
            return torch.softmax(cos / self.config.router_temperature, dim=-1)

    # -- restoration with fixed routes ------------------------------------------------------------------

    def restore_features(
        self,
        x: torch.Tensor,
        routes: torch.Tensor,
        prior: torch.Tensor | None = None,
        box: Box | torch.Tensor = FULL_BOX,
        probs: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Run the backbone with given routes.

        Args:
            x: (B, 3, H, W), any H and W: reflect-padded to a multiple of 8 and cropped back.
            routes: (B, 8) expert per sample and stage.
            prior: the image's prior map (required when GLGF is on).
            box: where ``x`` lies in the image the prior was computed on, (top, left, bottom, right) in
                fractions of that image; the whole image by default. A (B, 4) tensor gives each sample its
                own box: tiles of one image, sharing its (1, P, h, w) prior.
            probs: (B, 8, C) for soft routing; ``None`` runs one expert per sample and stage.
        """
        if self.glgf is not None and prior is None:
            raise ValueError("this model uses a GLGF prior: pass the prior from analyse()")
        h, w = x.shape[-2:]
        pad_h, pad_w = -h % 8, -w % 8
        mode = "reflect" if pad_h < h and pad_w < w else "replicate"
        padded = F.pad(x, (0, pad_w, 0, pad_h), mode=mode) if pad_h or pad_w else x
        # channels_last throughout: oneDNN's convolutions and the channel layer norms then read the
        # features as they lie, where a mix of layouts made them copy whole maps between NCHW and NHWC.
        padded = padded.contiguous(memory_format=torch.channels_last)
        padded_box = grown_box(box, (h, w), (pad_h, pad_w), x.device)

        inject = self.injections is not None and self.inject_prior
        cfg = self.config

        def stage(i: int, feats: torch.Tensor) -> torch.Tensor:
            stage_probs = None if probs is None else probs[:, i]
            out = self.stages[STAGES[i]](feats, routes[:, i], stage_probs, cfg.soft_gradients, cfg.soft_skip)
            if inject:
                out = self.injections[i](out, prior, padded_box)
            return out

        e1 = stage(0, self.patch_embed(padded))
        e2 = stage(1, self.down[0](e1))
        e3 = stage(2, self.down[1](e2))
        latent = stage(3, self.down[2](e3))
        d3 = stage(4, self.reduce[0](torch.cat([self.up[0](latent), e3], dim=1)))
        d2 = stage(5, self.reduce[1](torch.cat([self.up[1](d3), e2], dim=1)))
        d1 = stage(6, torch.cat([self.up[2](d2), e1], dim=1))
        out = self.output(stage(7, d1)) + padded
        return out[..., :h, :w]

    # -- both -----------------------------------------------------------------------------------------

    def forward(self, x: torch.Tensor, routes: Routes | None = None) -> tuple[torch.Tensor, dict[str, Any]]:
        """Restore a batch.

        Args:
            x: (B, 3, H, W) images in [0, 1].
            routes: manual routes overriding the router: 8 expert indices for the whole batch, one such
                list per sample, or a (B, 8) tensor. ``None`` routes by the router, softly or hard
                according to ``self.routing``.

        Returns:
            The restored batch and the analysis (``routes``, ``probs``, ``embeddings``,
            ``degradation_map``, ``prior``); ``routes`` holds the routes actually used.
        """
        info = self.analyse(x, with_map=not self.training)
        probs = None
        if routes is not None:
            info["routes"] = routes_tensor(routes, x.shape[0], self.config.num_experts).to(x.device)
        elif self.routing == "soft":
            probs = info["probs"]
        elif self.routing != "hard":
            raise ValueError(f"routing must be one of {ROUTING_MODES}, not {self.routing!r}")
        restored = self.restore_features(x, info["routes"], info.get("prior"), probs=probs)
        return restored, info

    # -- parameter groups -----------------------------------------------------------------------------

    def routing_modules(self) -> list[nn.Module]:
        """Modules frozen in phase 2: extractors and router (the centres are buffers)."""
        return [m for m in (self.degradation_extractor, self.content_extractor, self.router) if m is not None]
