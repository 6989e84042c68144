"""Spherical layer-wise router (SLER-IR §3.2-3.3) and its expert centres.

``f = L2(MLP(CLS))`` gives one unit routing vector per routed stage; each is compared with the expert
centres by cosine similarity, and ``softmax(cos / tau)`` gives the stage's expert probabilities. The
centres are unit vectors, initialised as a spherical code and moved only by Monte-Carlo-regularised
uniform clustering (``update_centres``), never by gradients.
"""

from __future__ import annotations

import math

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
        num_layers: K, routed stages.
        num_experts: C, experts per stage (and centres).
        routing_dim: d.
        hidden: width of the MLP.
        temperature: tau of the softmax over cosine similarities.
        per_layer_centres: one set of centres per stage instead of one shared set (Eq. 2 shares them).
        clustering: settings of the centre update.
    """

    def __init__(
        self,
        in_dim: int,
        num_layers: int,
        num_experts: int,
        routing_dim: int,
        hidden: int,
        temperature: float,
        per_layer_centres: bool = False,
        clustering: ClusteringConfig | None = None,
    ) -> None:
        super().__init__()
        self.num_layers, self.num_experts, self.routing_dim = num_layers, num_experts, routing_dim
        self.temperature = temperature
        self.clustering = clustering or ClusteringConfig()
        self.mlp = nn.Sequential(nn.Linear(in_dim, hidden), nn.GELU(), nn.Linear(hidden, num_layers * routing_dim))
        sets = num_layers if per_layer_centres else 1
        centres = torch.stack([spherical_code(num_experts, routing_dim) for _ in range(sets)])
        self.register_buffer("centres", centres)  # (sets, C, d), unit rows
        self.register_buffer("bank", torch.zeros(self.clustering.bank_size, routing_dim))
        self.register_buffer("bank_filled", torch.zeros((), dtype=torch.long))
        self.register_buffer("bank_pos", torch.zeros((), dtype=torch.long))

    def embed(self, cls: torch.Tensor) -> torch.Tensor:
        """(B, in_dim) -> (B, K, d) routing vectors, each row on the unit sphere."""
        f = self.mlp(cls).reshape(cls.shape[0], self.num_layers, self.routing_dim)
        return F.normalize(f.float(), dim=-1)

    def probabilities(self, f: torch.Tensor) -> torch.Tensor:
        """(B, K, d) unit vectors -> (B, K, C) expert probabilities, softmax(cos / tau) per stage."""
        cos = torch.einsum("bkd,kcd->bkc", f, self.centres.expand(self.num_layers, -1, -1))
        return torch.softmax(cos / self.temperature, dim=-1)

    def forward(self, cls: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns the routing vectors (B, K, d) and the expert probabilities (B, K, C)."""
        f = self.embed(cls)
        return f, self.probabilities(f)

    @torch.no_grad()
    def update_centres(self, f: torch.Tensor, generator: torch.Generator | None = None) -> dict[str, float]:
        """Monte-Carlo-regularised uniform clustering of the centres on a batch of routing vectors.

        The batch enters a memory bank; a random sample of the bank is assigned to the centres with
        equal mass per centre (Sinkhorn), each centre moves by EMA toward the normalised mean of its
        share, and a repulsion step pushes the closest centres apart. Balance keeps every expert in
        use; repulsion keeps the centres spread on the sphere.

        Args:
            f: (B, K, d) routing vectors (gradients are ignored).
            generator: random source for the Monte-Carlo sample.

        Returns:
            The minimum inter-centre angle (degrees) and each centre's share of the sample.
        """
        cfg = self.clustering
        vectors = F.normalize(f.detach().reshape(-1, self.routing_dim).float(), dim=-1)
        vectors = vectors[-cfg.bank_size :]
        n = vectors.shape[0]
        pos = int(self.bank_pos)
        idx = (pos + torch.arange(n, device=vectors.device)) % cfg.bank_size
        self.bank[idx] = vectors
        self.bank_pos.fill_((pos + n) % cfg.bank_size)
        self.bank_filled.fill_(min(int(self.bank_filled) + n, cfg.bank_size))

        filled = int(self.bank_filled)
        pick = torch.randperm(filled, generator=generator, device="cpu")[: cfg.sample_size].to(self.bank.device)
        sample = self.bank[pick]
        load = torch.zeros(self.num_experts, device=sample.device)
        new_centres = []
        for centres in self.centres:
            assign = sinkhorn(sample @ centres.T, cfg.sinkhorn_eps, cfg.sinkhorn_iters)
            means = F.normalize(assign.T @ sample, dim=1)
            moved = F.normalize(cfg.momentum * centres + (1 - cfg.momentum) * means, dim=1)
            new_centres.append(repel(moved, cfg.repulsion))
            load += (sample @ centres.T).argmax(dim=1).bincount(minlength=self.num_experts)
        self.centres.copy_(torch.stack(new_centres))
        stats = {"min_centre_angle": min(min_pairwise_angle(c) for c in self.centres)}
        share = load / load.sum()
        stats.update({f"centre_load_{j}": float(share[j]) for j in range(self.num_experts)})
        return stats
