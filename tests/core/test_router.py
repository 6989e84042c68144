"""The spherical router: centres, probabilities and Monte-Carlo-regularised uniform clustering."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from slerir_core.config import ClusteringConfig
from slerir_core.model.router import Router, min_pairwise_angle, sinkhorn, spherical_code


@pytest.mark.parametrize(("n", "dim"), [(2, 4), (3, 16), (4, 3), (5, 64)])
def test_spherical_code_is_a_regular_simplex(n, dim):
    c = spherical_code(n, dim)
    assert torch.allclose(c.norm(dim=1), torch.ones(n), atol=1e-5)
    cos = c @ c.T
    off = cos[~torch.eye(n, dtype=torch.bool)]
    assert torch.allclose(off, torch.full_like(off, -1.0 / (n - 1)), atol=1e-5)


def test_spherical_code_spreads_more_points_than_dimensions():
    c = spherical_code(8, 3)
    assert min_pairwise_angle(c) > 60  # random points in 3-D manage far less; the optimum for 8 is ~74.9


def test_sinkhorn_balances_columns():
    scores = torch.randn(60, 3) + torch.tensor([3.0, 0.0, 0.0])  # every row prefers column 0
    # At eps 0.05 the scaling converges slowly: 50 iterations left a column 0.7 off on a third of the seeds,
    # 300 leave it within 0.02 on every one of 300 seeds tried.
    q = sinkhorn(scores, eps=0.05, iters=300)
    assert torch.allclose(q.sum(dim=1), torch.ones(60), atol=1e-4)
    assert torch.allclose(q.sum(dim=0), torch.full((3,), 20.0), atol=0.5)


def make_router(**clustering) -> Router:
    return Router(
        in_dim=12,
        num_layers=8,
        num_experts=3,
        routing_dim=8,
        hidden=16,
        temperature=0.1,
        clustering=ClusteringConfig(bank_size=256, sample_size=128, **clustering),
    )


def test_embeddings_are_unit_and_probabilities_sum_to_one():
    router = make_router()
    f, p = router(torch.randn(5, 12))
    assert f.shape == (5, 8, 8) and p.shape == (5, 8, 3)
    assert torch.allclose(f.norm(dim=-1), torch.ones(5, 8), atol=1e-5)
    assert torch.allclose(p.sum(dim=-1), torch.ones(5, 8), atol=1e-5)
    expected = torch.softmax(torch.einsum("bkd,cd->bkc", f, router.centres[0]) / 0.1, dim=-1)
    assert torch.allclose(p, expected, atol=1e-6)


def test_uniform_clustering_spreads_crowded_centres_and_keeps_them_unit():
    router = make_router(momentum=0.5, repulsion=0.1)
    crowded = F.normalize(torch.randn(1, 8) + 0.05 * torch.randn(3, 8), dim=1)
    router.centres.copy_(crowded[None])
    before = min_pairwise_angle(router.centres[0])
    generator = torch.Generator().manual_seed(0)
    for _ in range(30):
        stats = router.update_centres(F.normalize(torch.randn(16, 8, 8), dim=-1), generator)
    assert torch.allclose(router.centres.norm(dim=-1), torch.ones(1, 3), atol=1e-5)
    assert stats["min_centre_angle"] > before + 30
    assert abs(sum(stats[f"centre_load_{j}"] for j in range(3)) - 1) < 1e-6


def test_centres_get_no_gradients():
    router = make_router()
    _, p = router(torch.randn(4, 12))
    p[..., 0].sum().backward()
    assert not router.centres.requires_grad
    assert all(param.grad is not None for param in router.mlp.parameters())
