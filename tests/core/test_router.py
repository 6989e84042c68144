"""The spherical router: centres, probabilities and Monte-Carlo-regularised uniform clustering."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from sync_guard import forbid_host_syncs

from slerir_core.config import ClusteringConfig
from slerir_core.model.router import Router, min_pairwise_angle, sinkhorn, spherical_code, target_anchors


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


def make_router(per_stage_centres: bool = False, **clustering) -> Router:
    return Router(
        in_dim=12,
        num_stages=8,
        num_experts=3,
        routing_dim=8,
        hidden=16,
        temperature=0.1,
        per_stage_centres=per_stage_centres,
        clustering=ClusteringConfig(bank_size=256, sample_size=128, **clustering),
    )


def stage_clouds(batch: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Routing vectors where every stage has a cloud of its own and, inside it, three tasks apart.

    Returns the (batch, 8, 8) unit vectors and the (batch,) task labels.
    """
    stage_dirs = F.normalize(torch.randn(8, 8, generator=generator), dim=-1)
    task_dirs = F.normalize(torch.randn(8, 3, 8, generator=generator), dim=-1)
    labels = torch.arange(batch) % 3
    noise = 0.05 * torch.randn(batch, 8, 8, generator=generator)
    return F.normalize(2 * stage_dirs + task_dirs[:, labels].transpose(0, 1) + noise, dim=-1), labels


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
    for k in range(8):
        assert abs(sum(stats[f"load_{k}_{j}"] for j in range(3)) - 1) < 1e-6


def test_centres_get_no_gradients():
    router = make_router()
    _, p = router(torch.randn(4, 12))
    p[..., 0].sum().backward()
    assert not router.centres.requires_grad
    assert all(param.grad is not None for param in router.mlp.parameters())


def test_per_stage_centres_split_every_stage_by_task():
    """Stages with clouds of their own: each stage's centres must separate that stage's tasks.

    Pooling the stages into one clustering sample (the old bank) puts whole stages on one centre, and
    then every task takes the same expert there.
    """
    router = make_router(per_stage_centres=True, momentum=0.5)
    data_gen, sample_gen = torch.Generator().manual_seed(1), torch.Generator().manual_seed(2)
    f, labels = stage_clouds(96, data_gen)
    for _ in range(40):
        stats = router.update_centres(f, sample_gen)
    assert stats["min_load"] > 0.25
    experts = torch.einsum("bkd,kcd->bkc", f, router.centres).argmax(dim=-1)  # (batch, 8)
    for k in range(8):
        by_task = [experts[labels == t, k] for t in range(3)]
        assert all(bool((e == e[0]).all()) for e in by_task), f"stage {k} splits a task"
        assert len({int(e[0]) for e in by_task}) == 3, f"stage {k} merges tasks"


def test_anchors_are_the_mean_prototype_of_each_experts_tasks():
    generator = torch.Generator().manual_seed(6)
    protos = torch.randn(4, 8, 8, generator=generator)
    targets = torch.tensor([[0] * 8, [0] * 8, [1] * 8, [-1] * 8])  # task 3 has no target yet
    anchors = target_anchors(protos, targets, 3)
    unit = F.normalize(protos, dim=-1)
    torch.testing.assert_close(anchors[:, 0], F.normalize(unit[0] + unit[1], dim=-1))
    torch.testing.assert_close(anchors[:, 1], unit[2])
    assert bool((anchors[:, 2] == 0).all())  # no task targets expert 2: it keeps the balanced share


def test_anchored_centres_put_every_task_on_its_uneven_target():
    """Fixed targets that give one expert half the samples (two tasks in one cloud, where the balanced split
    wants a third): from random centres, the anchored ones route every sample to its task's target."""
    generator = torch.Generator().manual_seed(7)
    f, clouds = stage_clouds(96, generator)
    twin = F.normalize(f[clouds == 0] + 0.01 * torch.randn(32, 8, 8, generator=generator), dim=-1)
    f, labels = torch.cat([f, twin]), torch.cat([clouds, torch.full((32,), 3)])
    targets = torch.tensor([[0, 1, 2, 0], [2, 0, 1, 2]]).repeat(4, 1).T  # (tasks, stages): two orders of experts
    protos = torch.stack([f[labels == t].mean(dim=0) for t in range(4)])
    router = make_router(per_stage_centres=True, momentum=0.5)
    sample_gen = torch.Generator().manual_seed(8)
    for _ in range(40):
        router.update_centres(f, sample_gen, anchors=target_anchors(protos, targets, 3))
    experts = torch.einsum("bkd,kcd->bkc", f, router.centres).argmax(dim=-1)
    assert torch.equal(experts, targets[labels])


def test_shared_centres_balance_every_stage():
    """With one shared set (Eq. 2) the Sinkhorn balance still runs per stage, on that stage's sample."""
    router = make_router(momentum=0.5)
    generator = torch.Generator().manual_seed(3)
    f = F.normalize(torch.randn(64, 8, 8, generator=generator), dim=-1)
    before = router.centres.clone()
    router.update_centres(f, generator)
    assert router.bank.shape == (8, 256, 8) and int(router.bank_filled) == 64
    torch.testing.assert_close(router.bank[:, :64], f.transpose(0, 1))
    assert router.centres.shape == (1, 3, 8) and not torch.allclose(router.centres, before)


def test_centre_update_reads_nothing_back_and_statistics_come_when_asked():
    router = make_router(per_stage_centres=True, momentum=0.5)
    generator = torch.Generator().manual_seed(9)
    f = F.normalize(torch.randn(32, 8, 8, generator=generator), dim=-1)
    before = router.centres.clone()
    with forbid_host_syncs():
        assert router.update_centres(f, generator, stats=False) == {}
        router.update_centres(
            f, generator, anchors=target_anchors(f[:3], torch.zeros(3, 8, dtype=torch.long), 3), stats=False
        )
    assert not torch.allclose(router.centres, before)
    assert int(router.bank_filled) == 64 and int(router.bank_pos) == 64
    stats = router.centre_stats()
    assert stats["min_centre_angle"] == min(min_pairwise_angle(c) for c in router.centres)
    # Each stage's bank is shared out among its experts: the 64 filled slots, not the 192 empty ones.
    for k in range(8):
        shares = [stats[f"load_{k}_{j}"] for j in range(3)]
        assert abs(sum(shares) - 1) < 1e-6 and stats["min_load"] <= min(shares)
        nearest = (router.bank[k, :64] @ router.centres[k].T).argmax(dim=-1)
        assert shares == pytest.approx([float((nearest == j).float().mean()) for j in range(3)])


def test_monte_carlo_sample_takes_filled_slots_only_without_repeats_once_enough_are_filled():
    router = make_router()  # bank 256, sample 128
    generator = torch.Generator().manual_seed(10)
    router.bank_filled.fill_(40)
    few = router._sample_slots(generator)
    assert few.shape == (128,) and int(few.max()) < 40
    assert sorted(set(few.tolist())) == list(range(40))  # every filled slot, the sample going round them
    router.bank_filled.fill_(200)
    many = router._sample_slots(generator)
    assert int(many.max()) < 200 and len(set(many.tolist())) == 128
    assert not torch.equal(many, router._sample_slots(generator))


def test_tasks_are_assigned_to_nearby_experts_evenly_on_paths_of_their_own():
    router = make_router(per_stage_centres=True)
    generator = torch.Generator().manual_seed(4)
    # Seven tasks: task t sits next to centre t % 3 at every stage, with some spread.
    protos = router.centres[:, torch.arange(7) % 3].transpose(0, 1) + 0.1 * torch.randn(7, 8, 8, generator=generator)
    protos[6] = 0  # not seen yet
    targets = router.assign_tasks(F.normalize(protos, dim=-1) * (protos.abs().sum(-1, keepdim=True) > 0))
    assert targets.shape == (7, 8)
    assert bool((targets[6] == -1).all())
    # Tasks 0 and 3 (1 and 4, 2 and 5) share the nearest expert at the first stage; the second parts them,
    # so that all six paths differ; from then on every task goes to its nearest expert again.
    nearest = torch.arange(6) % 3
    assert torch.equal(targets[:6, 0], nearest) and all(torch.equal(targets[:6, k], nearest) for k in range(2, 8))
    assert len({tuple(path) for path in targets[:6].tolist()}) == 6
    for k in range(8):
        assert torch.bincount(targets[:6, k], minlength=3).max() <= 2
    # Crowded: every task next to centre 0; the cap of ceil(6 / 3) tasks per expert spreads them evenly.
    crowded = F.normalize(
        router.centres[:, :1].transpose(0, 1) + 0.1 * torch.randn(6, 8, 8, generator=generator), dim=-1
    )
    spread = router.assign_tasks(crowded)
    for k in range(8):
        assert torch.bincount(spread[:, k], minlength=3).tolist() == [2, 2, 2]


def test_grouped_tasks_share_a_path_and_groups_part():
    router = make_router(per_stage_centres=True)
    generator = torch.Generator().manual_seed(5)
    protos = F.normalize(torch.randn(7, 8, 8, generator=generator), dim=-1)
    protos[6] = 0  # not seen, but its group was
    groups = [0, 1, 2, 0, 3, 3, 1]
    targets = router.assign_tasks(protos, groups)
    for a, b in ((0, 3), (4, 5), (1, 6)):
        assert torch.equal(targets[a], targets[b])
    paths = {tuple(targets[t].tolist()) for t in (0, 1, 2, 4)}
    assert len(paths) == 4 and -1 not in targets
    # A group is assigned as one task at its tasks' mean would be.
    means = F.normalize(torch.stack([protos[0] + protos[3], protos[1], protos[2], protos[4] + protos[5]]), dim=-1)
    assert torch.equal(router.assign_tasks(means), targets[[0, 1, 2, 4]])
