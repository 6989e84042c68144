"""Spherical stage-wise router (SLER-IR §3.2-3.3; the paper's "layer-wise") and its expert centres.

``f = L2(MLP(CLS))`` gives one unit routing vector per routed stage; each is compared with the expert
centres by cosine similarity, and ``softmax(cos / tau)`` gives the stage's expert probabilities. The
centres are unit vectors, initialised as a spherical code and moved only by ``update_centres``, never by
gradients: Monte-Carlo-regularised uniform clustering, or, once training has fixed each task's experts,
toward the tasks each centre holds (``target_anchors``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from slerir_core.config import ClusteringConfig


def spherical_code(n: int, dim: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """``n`` unit vectors in ``dim`` dimensions, as far apart as possible.

    For ``n <= dim + 1`` these are the vertices of a regular simplex (pairwise cosine ``-1 / (n - 1)``,
    the optimum), randomly rotated so that no centre sits on a coordinate axis. For more points a
    short repulsion from random starts spreads them.
    """
    if n == 1:
        return F.normalize(torch.randn(1, dim, generator=generator), dim=1)
    if n <= dim + 1:
        # Simplex vertices live in the (n-1)-dim subspace orthogonal to the all-ones vector of R^n.
        simplex = torch.eye(n) - 1.0 / n
        basis, _ = torch.linalg.qr(simplex.T)
        coords = simplex @ basis[:, : n - 1]
        rotation, _ = torch.linalg.qr(torch.randn(dim, dim, generator=generator))
        return F.normalize(coords @ rotation[: n - 1], dim=1)
    points = F.normalize(torch.randn(n, dim, generator=generator), dim=1)
    for _ in range(500):
        points = repel(points, step=0.1)
    return points


def repel(centres: torch.Tensor, step: float) -> torch.Tensor:
    """One repulsion step: move each centre away from its nearest neighbour, then renormalise.

    This lowers the largest pairwise cosine, the quantity that decides how confusable two experts are.
    """
    if centres.shape[0] < 2 or step == 0:
        return centres
    cos = centres @ centres.T
    cos.fill_diagonal_(-2.0)
    nearest = cos.argmax(dim=1)
    return F.normalize(centres - step * centres[nearest], dim=1)


def sinkhorn(scores: torch.Tensor, eps: float, iters: int) -> torch.Tensor:
    """Balanced soft assignment of rows to columns: each column receives the same total mass.

    Args:
        scores: (M, C) similarities.
        eps: entropy regularisation; smaller is closer to a hard assignment.
        iters: Sinkhorn-Knopp iterations.

    Returns:
        (M, C) assignment whose rows sum to 1 and whose columns each sum to M / C.
    """
    log_q = scores / eps
    m, c = scores.shape
    for _ in range(iters):
        log_q = log_q - torch.logsumexp(log_q, dim=0, keepdim=True) + math.log(m / c)
        log_q = log_q - torch.logsumexp(log_q, dim=1, keepdim=True)
    return log_q.exp()


def min_pairwise_angle(centres: torch.Tensor) -> float:
    """Smallest angle between two centres, in degrees (180 for a single centre)."""
    if centres.shape[-2] < 2:
        return 180.0
    cos = centres @ centres.transpose(-1, -2)
    mask = torch.eye(centres.shape[-2], dtype=torch.bool, device=centres.device)
    largest = cos.masked_fill(mask, -1.0).amax().clamp(-1.0, 1.0)
    return math.degrees(math.acos(float(largest)))


class Router(nn.Module):
    """Maps a degradation CLS embedding to per-stage unit routing vectors and expert probabilities.

    Args:
        in_dim: width of the degradation extractor's CLS embedding.
        num_stages: K, routed stages.
        num_experts: C, experts per stage (and centres).
        routing_dim: d.
        hidden: width of the MLP.
        temperature: tau of the softmax over cosine similarities.
        per_stage_centres: one set of centres per stage instead of one shared set (Eq. 2 shares them).
        clustering: settings of the centre update.
    """

    def __init__(
        self,
        in_dim: int,
        num_stages: int,
        num_experts: int,
        routing_dim: int,
        hidden: int,
        temperature: float,
        per_stage_centres: bool = False,
        clustering: ClusteringConfig | None = None,
    ) -> None:
        super().__init__()
        self.num_stages, self.num_experts, self.routing_dim = num_stages, num_experts, routing_dim
        self.temperature = temperature
        self.clustering = clustering or ClusteringConfig()
        self.mlp = nn.Sequential(nn.Linear(in_dim, hidden), nn.GELU(), nn.Linear(hidden, num_stages * routing_dim))
        sets = num_stages if per_stage_centres else 1
        centres = torch.stack([spherical_code(num_experts, routing_dim) for _ in range(sets)])
        self.register_buffer("centres", centres)  # (sets, C, d), unit rows
        # One bank per stage: pooled, the stages' vectors form one cloud per stage, and balanced clustering
        # of that pool splits it by stage, so that within a stage every degradation meets the same centre.
        self.register_buffer("bank", torch.zeros(num_stages, self.clustering.bank_size, routing_dim))
        self.register_buffer("bank_filled", torch.zeros((), dtype=torch.long))
        self.register_buffer("bank_pos", torch.zeros((), dtype=torch.long))

    def embed(self, cls: torch.Tensor) -> torch.Tensor:
        """(B, in_dim) -> (B, K, d) routing vectors, each row on the unit sphere."""
        f = self.mlp(cls).reshape(cls.shape[0], self.num_stages, self.routing_dim)
        return F.normalize(f.float(), dim=-1)

    def probabilities(self, f: torch.Tensor) -> torch.Tensor:
        """(B, K, d) unit vectors -> (B, K, C) expert probabilities, softmax(cos / tau) per stage, in float32
        also under autocast: bf16 cosines would round close routing decisions."""
        with torch.autocast(f.device.type, enabled=False):
            cos = torch.einsum("bkd,kcd->bkc", f.float(), self.centres.expand(self.num_stages, -1, -1).float())
            return torch.softmax(cos / self.temperature, dim=-1)

    def forward(self, cls: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns the routing vectors (B, K, d) and the expert probabilities (B, K, C)."""
        f = self.embed(cls)
        return f, self.probabilities(f)

    @torch.no_grad()
    def assign_tasks(self, prototypes: torch.Tensor, groups: Sequence[int] | None = None) -> torch.Tensor:
        """Give each training task one expert per stage: nearby tasks share experts, every task gets a path
        of its own where there are enough paths, and the tasks are spread evenly over each stage's experts.

        With ``groups``, the tasks of one group (one degradation seen in two domains, say) are assigned as one,
        by the mean of their prototypes, and share a path: a router cannot keep apart what the degradation
        extractor cannot tell apart, and asking it to only makes both tasks' routes flip from image to image.

        Stage by stage, (task, expert) pairs are taken greedily by the cosine between the task's prototype
        (its mean routing vector) and the expert's centre, each expert taking at most ``ceil(T / C)`` tasks.
        Before that cosine counts, a task keeps away from experts that already hold a task whose path so far
        is the same as its own: without that rule every stage sorted the tasks into the same groups, so the
        seven tasks shared three paths, however well the router followed them.

        Args:
            prototypes: (T, K, d) per-task mean routing vectors; all-zero rows are tasks not seen yet.
            groups: the group of each task (``T`` indices from 0); by default every task is its own group.

        Returns:
            (T, K) expert indices, -1 for unseen tasks (for tasks of a group none of whose tasks was seen).
        """
        if groups is not None:
            index = torch.as_tensor(list(groups), dtype=torch.long, device=prototypes.device)
            merged = torch.zeros(int(index.max()) + 1, *prototypes.shape[1:], device=prototypes.device)
            return self.assign_tasks(merged.index_add_(0, index, prototypes.float()))[index]
        seen = (prototypes.flatten(1).abs().sum(dim=1) > 0).nonzero().squeeze(1).tolist()
        targets = torch.full(prototypes.shape[:2], -1, dtype=torch.long)
        if not seen:
            return targets.to(prototypes.device)
        capacity = math.ceil(len(seen) / self.num_experts)
        protos = F.normalize(prototypes[seen].float(), dim=-1).transpose(0, 1)  # (K, T', d)
        scores = (protos @ self.centres.expand(self.num_stages, -1, -1).transpose(1, 2)).cpu()  # (K, T', C)
        paths: list[tuple[int, ...]] = [() for _ in seen]
        for k in range(self.num_stages):
            experts = _assign_stage(scores[k], paths, capacity)
            targets[seen, k] = torch.tensor(experts)
            paths = [(*path, e) for path, e in zip(paths, experts, strict=True)]
        return targets.to(prototypes.device)

    @torch.no_grad()
    def update_centres(
        self,
        f: torch.Tensor,
        generator: torch.Generator | None = None,
        anchors: torch.Tensor | None = None,
        stats: bool = True,
    ) -> dict[str, float]:
        """Monte-Carlo-regularised uniform clustering of the centres on a batch of routing vectors.

        The batch enters the per-stage memory banks; a random sample of each stage's bank is assigned to
        the centres with equal mass per centre (Sinkhorn), so that every stage spreads its vectors over
        all experts. Each centre moves by EMA toward the normalised mean of its share (of its own stage
        with per-stage centres, of all stages with shared ones), and a repulsion step pushes the closest
        centres apart. The update reads nothing back to the host, so a GPU never waits for it; only the
        statistics do (``centre_stats``), and only with ``stats``.

        Args:
            f: (B, K, d) routing vectors (gradients are ignored).
            generator: random source for the Monte-Carlo sample; one on the bank's device saves a copy.
            anchors: (K, C, d) where each centre should move instead of its balanced share
                (``target_anchors``); zero rows keep the balanced share.
            stats: also return ``centre_stats()`` (host reads).

        Returns:
            ``centre_stats()`` with ``stats``, otherwise an empty dict.
        """
        cfg = self.clustering
        vectors = F.normalize(f.detach().float(), dim=-1).transpose(0, 1)[:, -cfg.bank_size :]  # (K, n, d)
        n = vectors.shape[1]
        slots = (self.bank_pos + torch.arange(n, device=self.bank.device)) % cfg.bank_size
        self.bank.index_copy_(1, slots, vectors)
        self.bank_pos.copy_((self.bank_pos + n) % cfg.bank_size)
        self.bank_filled.copy_((self.bank_filled + n).clamp(max=cfg.bank_size))

        sample = self.bank[:, self._sample_slots(generator)]  # (K, S, d)
        centres = self.centres.expand(self.num_stages, -1, -1)
        scores = sample @ centres.transpose(1, 2)  # (K, S, C)
        assign = torch.stack([sinkhorn(s, cfg.sinkhorn_eps, cfg.sinkhorn_iters) for s in scores])
        sums = assign.transpose(1, 2) @ sample  # (K, C, d): each centre's share of each stage
        if anchors is not None:
            guided = anchors.abs().sum(dim=-1, keepdim=True) > 0
            sums = torch.where(guided, anchors.to(sums), F.normalize(sums, dim=-1))
        if self.centres.shape[0] == 1:
            sums = sums.sum(dim=0, keepdim=True)
        means = F.normalize(sums, dim=-1)
        moved = F.normalize(cfg.momentum * self.centres + (1 - cfg.momentum) * means, dim=-1)
        self.centres.copy_(torch.stack([repel(c, cfg.repulsion) for c in moved]))
        return self.centre_stats() if stats else {}

    def _sample_slots(self, generator: torch.Generator | None) -> torch.Tensor:
        """``sample_size`` bank slots drawn without replacement from the filled ones.

        Random keys order the slots, the filled ones first, and the sample takes the first of them; while
        fewer slots are filled than the sample holds, it goes round the filled ones again. The count of
        filled slots stays on the device: the sample's shape is fixed and nothing is read back.
        """
        size = self.clustering.bank_size
        device = self.bank.device
        slots = torch.arange(size, device=device)
        keys = torch.rand(size, generator=generator, device=generator.device if generator else device)
        order = (keys.to(device, non_blocking=True) + (slots >= self.bank_filled)).argsort()
        return order[slots[: min(self.clustering.sample_size, size)] % self.bank_filled]

    @torch.no_grad()
    def centre_stats(self) -> dict[str, float]:
        """Where the centres stand: the smallest angle between two of them and how each stage's bank of routing
        vectors spreads over them. Reads values back to the host: for logging, not for every step.

        Returns:
            ``min_centre_angle`` (degrees), each expert's share of its stage's bank under argmax routing
            (``load_<k>_<j>``) and the smallest such share (``min_load``).
        """
        size = self.clustering.bank_size
        filled = (torch.arange(size, device=self.bank.device) < self.bank_filled).float()  # (N,)
        centres = self.centres.expand(self.num_stages, -1, -1)
        nearest = (self.bank @ centres.transpose(1, 2)).argmax(dim=-1)  # (K, N)
        hits = (nearest[..., None] == torch.arange(self.num_experts, device=nearest.device)).float()
        load = (hits * filled[:, None]).sum(dim=1) / filled.sum().clamp_min(1)  # (K, C)
        table = load.tolist()
        stats = {"min_centre_angle": min(min_pairwise_angle(c) for c in self.centres), "min_load": min(map(min, table))}
        stats.update({f"load_{k}_{j}": share for k, row in enumerate(table) for j, share in enumerate(row)})
        return stats


def target_anchors(prototypes: torch.Tensor, targets: torch.Tensor, num_experts: int) -> torch.Tensor:
    """Where each centre belongs once the tasks have fixed targets: the mean direction of the prototypes of
    the tasks assigned to it, stage by stage (``Router.update_centres``'s ``anchors``).

    Balanced clustering gives every expert a third of each stage's vectors; the targets of seven tasks in five
    groups give an expert a seventh of the samples at some stages and four sevenths at others. Left to the
    balance, a centre that holds too few moves onto a neighbouring task's vectors, and that task leaves its
    target: in a 60-minute pilot of 2026-12-03, rain at enc3 (6 % of its training crops on target) and blur
    at refine (none).

    Args:
        prototypes: (T, K, d) per-task mean routing vectors (each task weighs the same: tasks are sampled
            uniformly).
        targets: (T, K) each task's expert per stage, -1 where a task has none.
        num_experts: C.

    Returns:
        (K, C, d) unit vectors, zero for an expert no task targets at a stage.
    """
    # Compared with every index rather than one_hot, which checks the indices' range on the host.
    weights = (targets.unsqueeze(-1) == torch.arange(num_experts, device=targets.device)).float()
    sums = torch.einsum("tkc,tkd->kcd", weights, F.normalize(prototypes.float(), dim=-1))
    return F.normalize(sums, dim=-1)


def _assign_stage(scores: torch.Tensor, paths: list[tuple[int, ...]], capacity: int) -> list[int]:
    """One stage of ``Router.assign_tasks``: each task's expert.

    First greedily by cosine, each expert taking at most ``capacity`` tasks; then, while two tasks with the
    same path so far share an expert, the move or swap that parts the most of them at the least cosine is made
    (at the first stage there is no path yet: the cosine alone decides).

    Args:
        scores: (T, C) cosine of each task's prototype with each expert's centre at this stage.
        paths: each task's experts at the stages before.
        capacity: most tasks an expert takes.
    """
    num_tasks, num_experts = scores.shape
    table = scores.tolist()  # indexing a tensor element by element was 50 ms a training step
    experts = [-1] * num_tasks
    load = [0] * num_experts
    for flat in scores.flatten().argsort(descending=True).tolist():
        task, expert = divmod(flat, num_experts)
        if experts[task] < 0 and load[expert] < capacity:
            experts[task], load[expert] = expert, load[expert] + 1

    def cost(assignment: list[int]) -> tuple[int, float]:
        twins = sum(
            assignment[a] == assignment[b] and bool(paths[a]) and paths[a] == paths[b]
            for a in range(num_tasks)
            for b in range(a + 1, num_tasks)
        )
        return twins, -sum(table[t][e] for t, e in enumerate(assignment))

    best = cost(experts)
    while best[0] > 0:
        candidates = []
        load = [experts.count(e) for e in range(num_experts)]
        for task in range(num_tasks):
            for expert in range(num_experts):
                if expert != experts[task] and load[expert] < capacity:  # a move
                    candidates.append([expert if t == task else e for t, e in enumerate(experts)])
            for other in range(task + 1, num_tasks):  # a swap
                if experts[other] != experts[task]:
                    swapped = list(experts)
                    swapped[task], swapped[other] = experts[other], experts[task]
                    candidates.append(swapped)
        better, better_cost = min(((c, cost(c)) for c in candidates), key=lambda pair: pair[1])
        if better_cost >= best:
            break
        experts, best = better, better_cost
    return experts
