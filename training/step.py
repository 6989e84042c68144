"""One training step: forward, losses, backward and the optimiser, with fixed shapes and no reads back to the host.

A step returns its loss terms as tensors on the device and the loop reads them every ``log_every`` steps, so
the host queues step after step while the device works. Every routed stage runs its experts with each sample
reading its own expert's weights (``slerir_core.model.experts``), so two steps with other routes run the same
shapes, and the experts no sample chose take no optimiser step (``ExpertUpdates``). That is what lets a GPU
replay the whole step as one CUDA graph (``training/capture.py``).

Phase 1's routing state (the expert centres and the task prototypes) moves after the step, outside it
(``move_routing_state``), also without reading anything back.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from slerir_core.device import autocast
from slerir_core.losses import hyperspherical_contrastive_loss, restoration_loss, routing_consistency_loss
from slerir_core.model import SLERIR
from slerir_core.model.router import target_anchors
from training.expert_updates import ExpertUpdates
from training.phase import update_prototypes
from training.runtime import Runtime, all_gather_cat, with_other_ranks

Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor]
"""(degraded, clean, labels) on the training device."""


def attention_kernels(device: torch.device, bf16: bool) -> AbstractContextManager[object]:
    """The attention kernels a training step may use (in the extractors' ViT blocks).

    On a CPU in bf16 the flash kernel's backward is 3x slower than the plain math path at the extractors'
    shapes (68 sequences of 65 tokens, 4 heads of 32: 143 ms against 45 ms forward and backward), about a
    fifth of a step; in fp32, on CUDA and at inference, PyTorch's own choice stays.
    """
    return sdpa_kernel(SDPBackend.MATH) if device.type == "cpu" and bf16 else nullcontext()


@dataclass
class TrainStep:
    """What a training step needs, fixed for a run; calling it runs one step.

    Attributes:
        model: the network.
        net: what runs the forward: the model, or its DDP wrapper.
        updates: the optimiser, wrapped so that experts no sample trained take no step.
        phase: 1 (soft routing, routing losses) or 2 (hard routing, L1 alone).
        rt: this process's rank and device.
        bf16: bf16 autocast.
        groups: (T,) each task's route group, on the device (tasks of one group are one degradation to L_HC).
        grad_clip: gradient-norm clip, or ``None``.
        route_targets: (T, K) each task's expert per stage for the routing-consistency term (-1: none yet);
            ``None`` leaves the term out.
    """

    model: SLERIR
    net: nn.Module
    updates: ExpertUpdates
    phase: int
    rt: Runtime
    bf16: bool
    groups: torch.Tensor
    grad_clip: float | None = None
    route_targets: torch.Tensor | None = None

    def __call__(self, batch: Batch) -> dict[str, torch.Tensor]:
        """Forward, losses, backward and the optimiser step on ``batch``.

        Returns:
            The detached loss terms (``loss``, ``l1``, and in phase 1 ``hc`` and ``route``) and, in phase 1,
            the batch's routing vectors (``embeddings``) for ``move_routing_state``.
        """
        degraded, clean, labels = batch
        cfg = self.model.config
        # No autocast cache: the step may be recorded as a CUDA graph (``training/capture.py``).
        with autocast(self.rt.device, self.bf16, cache=False), attention_kernels(self.rt.device, self.bf16):
            restored, info = self.net(degraded)
        l1 = restoration_loss(restored, clean)
        terms = {"l1": l1}
        loss = l1
        if self.phase == 1 and cfg.hc_alpha > 0:
            f, all_labels = with_other_ranks(info["embeddings"].float(), labels, self.rt)
            # Tasks that share a route are one degradation to the contrastive loss too: pushed apart by it,
            # they would be pulled away from the path the routing-consistency term gives them both.
            hc = hyperspherical_contrastive_loss(f, self.groups[all_labels], cfg.hc_margin)
            # Each rank differentiates its own rows and DDP averages the ranks: scaled back to the whole.
            loss = loss + cfg.hc_alpha * self.rt.world_size * hc
            terms["hc"] = hc
        if self.phase == 1 and cfg.route_alpha > 0 and self.route_targets is not None:
            route = routing_consistency_loss(info["probs"], labels, self.route_targets)
            loss = loss + cfg.route_alpha * route
            terms["route"] = route
        optimizer = self.updates.optimizer
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.grad_clip is not None:
            nn.utils.clip_grad_norm_([p for g in optimizer.param_groups for p in g["params"]], self.grad_clip)
        self.updates.step(self._trained_experts())
        out = {"loss": loss.detach(), **{name: value.detach() for name, value in terms.items()}}
        if self.phase == 1:
            out["embeddings"] = info["embeddings"].detach()
        return out

    def _trained_experts(self) -> torch.Tensor:
        trained = self.updates.trained_experts()
        if self.rt.distributed:  # an expert one rank trained has a gradient on every rank
            flags = trained.to(torch.uint8)
            dist.all_reduce(flags, op=dist.ReduceOp.MAX)
            trained = flags.bool()
        return trained


@torch.no_grad()
def move_routing_state(
    model: SLERIR,
    embeddings: torch.Tensor,
    labels: torch.Tensor,
    route_targets: torch.Tensor | None,
    generator: torch.Generator,
    prototype_momentum: float,
    rt: Runtime,
) -> None:
    """Phase 1, after a step: uniform clustering of the expert centres and the EMA of the task prototypes, on
    the routing vectors of every rank.

    Once the routing targets are fixed, each centre follows the mean prototype of the tasks assigned to it
    rather than an even share of its stage.
    """
    f, all_labels = all_gather_cat(embeddings, rt), all_gather_cat(labels, rt)
    cfg = model.config
    fixed = route_targets is not None and cfg.route_alpha > 0
    anchors = target_anchors(model.task_prototypes, route_targets, cfg.num_experts) if fixed else None
    model.router.update_centres(f, generator=generator, anchors=anchors, stats=False)
    update_prototypes(model.task_prototypes, f, all_labels, prototype_momentum)
