"""Hyperspherical contrastive loss (Eq. 9) and the routing-consistency term."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from sync_guard import forbid_host_syncs

from slerir_core.losses import hyperspherical_contrastive_loss, routing_consistency_loss


def clustered(labels: torch.Tensor, spread: float) -> torch.Tensor:
    centres = F.normalize(torch.randn(int(labels.max()) + 1, 8, 16), dim=-1)
    return F.normalize(centres[labels] + spread * torch.randn(len(labels), 8, 16), dim=-1)


def test_lower_for_clustered_than_shuffled_labels():
    labels = torch.arange(4).repeat_interleave(6)
    f = clustered(labels, spread=0.2)
    aligned = hyperspherical_contrastive_loss(f, labels, margin=0.5)
    shuffled = hyperspherical_contrastive_loss(f, labels[torch.randperm(len(labels))], margin=0.5)
    assert aligned < shuffled - 0.1


def test_matches_eq9_on_a_hand_example():
    # Two stages; samples 0 and 1 share a label, 2 differs.
    f = F.normalize(torch.tensor([[[1.0, 0.0]], [[0.6, 0.8]], [[0.0, 1.0]]]), dim=-1).expand(3, 2, 2)
    labels = torch.tensor([0, 0, 1])
    # E_P = cos(0,1) = 0.6; E_N = mean(cos(0,2), cos(1,2)) = 0.4; margin 0.5 -> 0.4 - 0.6 + 0.5.
    loss = hyperspherical_contrastive_loss(f, labels, margin=0.5)
    assert torch.isclose(loss, torch.tensor(0.3))
    assert hyperspherical_contrastive_loss(f, labels, margin=0.0) == 0


def test_no_pairs_gives_zero_with_gradient():
    f = F.normalize(torch.randn(3, 8, 4), dim=-1).requires_grad_()
    loss = hyperspherical_contrastive_loss(f, torch.tensor([0, 1, 2]), margin=0.5)
    loss.backward()
    assert loss == 0 and f.grad is not None


def test_routing_consistency_pulls_each_sample_toward_its_tasks_expert():
    logits = torch.zeros(4, 8, 3, requires_grad=True)
    labels = torch.tensor([0, 1, 2, 1])
    targets = torch.tensor([[0] * 8, [2] * 8, [-1] * 8])  # task 2 has no assignment yet
    loss = routing_consistency_loss(logits.softmax(dim=-1), labels, targets)
    assert torch.isclose(loss, torch.log(torch.tensor(3.0)))  # uniform probabilities: log C
    loss.backward()
    assert bool((logits.grad[0, :, 0] < 0).all()) and bool((logits.grad[1, :, 2] < 0).all())
    assert torch.equal(logits.grad[2], torch.zeros(8, 3))  # the unassigned task gives no signal
    assert routing_consistency_loss(logits.softmax(dim=-1), labels[2:3], targets) == 0


def test_losses_read_nothing_back_and_keep_their_values():
    generator = torch.Generator().manual_seed(0)
    probs = torch.softmax(torch.randn(6, 8, 3, generator=generator), dim=-1)
    labels = torch.tensor([0, 1, 2, 1, 0, 2])
    targets = torch.randint(0, 3, (3, 8), generator=generator)
    targets[2] = -1
    f = F.normalize(torch.randn(6, 8, 4, generator=generator), dim=-1)
    with forbid_host_syncs():
        route = routing_consistency_loss(probs, labels, targets)
        none_assigned = routing_consistency_loss(probs, labels, torch.full((3, 8), -1))
        hc = hyperspherical_contrastive_loss(f, labels, margin=0.5)
        no_pairs = hyperspherical_contrastive_loss(f[:3], labels[:3], margin=0.5)
    expected = F.nll_loss(probs.log().flatten(0, 1), targets[labels].flatten(), ignore_index=-1)
    torch.testing.assert_close(route, expected)
    assert none_assigned == 0 and no_pairs == 0 and hc > 0
