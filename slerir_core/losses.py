"""Training objectives: L1 restoration loss and the hyperspherical contrastive loss (Eq. 9-10)."""

from __future__ import annotations

import torch


def hyperspherical_contrastive_loss(f: torch.Tensor, labels: torch.Tensor, margin: float) -> torch.Tensor:
    """Eq. 9 averaged over the routed stages: ``max(E_N[S] - E_P[S] + margin, 0)``.

    ``S_ij = f_i . f_j`` is the cosine of two unit routing vectors of one stage; positives are pairs of
    distinct samples with the same degradation label, negatives pairs with different labels. A batch
    without positive or without negative pairs gives no signal for that term, so it counts as 0 (decided
    on the device: nothing is read back to the host).

    Args:
        f: (B, K, d) unit routing vectors.
        labels: (B,) integer degradation labels.
        margin: lambda.

    Returns:
        A scalar tensor.
    """
    sim = torch.einsum("ikd,jkd->kij", f, f)
    same = labels[:, None] == labels[None, :]
    eye = torch.eye(len(labels), dtype=torch.bool, device=labels.device)
    pos, neg = (same & ~eye).to(sim.dtype), (~same).to(sim.dtype)
    pairs_pos, pairs_neg = pos.sum(), neg.sum()
    mean_pos = (sim * pos).sum(dim=(1, 2)) / pairs_pos.clamp_min(1)
    mean_neg = (sim * neg).sum(dim=(1, 2)) / pairs_neg.clamp_min(1)
    signal = (pairs_pos > 0) & (pairs_neg > 0)
    return torch.relu(mean_neg - mean_pos + margin).mean() * signal


def routing_consistency_loss(probs: torch.Tensor, labels: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Cross-entropy between each stage's routing probabilities and the expert its task is assigned to.

    Args:
        probs: (B, K, C) routing probabilities.
        labels: (B,) task labels.
        targets: (T, K) expert of each task at each stage (``Router.assign_tasks``); -1 where a task has no
            assignment yet (its samples give no signal).

    Returns:
        A scalar tensor: the mean over the (sample, stage) pairs with a target, 0 where none has one.
    """
    wanted = targets[labels].flatten()
    assigned = (wanted >= 0).float()
    log_p = torch.log(probs.float().clamp_min(1e-8)).flatten(0, 1)
    picked = log_p.gather(1, wanted.clamp_min(0)[:, None]).squeeze(1)
    return -(picked * assigned).sum() / assigned.sum().clamp_min(1)


def restoration_loss(restored: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean absolute error, in float32 whatever the autocast dtype."""
    return (restored.float() - target.float()).abs().mean()
