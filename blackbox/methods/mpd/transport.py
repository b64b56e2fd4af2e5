"""Entropic optimal transport between a sample's P prompt features and a class's Q prototypes.

A batched, log-domain Sinkhorn in torch (POT's ``ot.sinkhorn`` solves the same problem one
pair at a time; the tests check the two agree). Log-domain because ε = 0.1 with costs in
[0, 2] puts ``exp(-C/ε)`` near 1e-9, where the plain scaling iterations lose precision.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


def sinkhorn(cost: torch.Tensor, epsilon: float = 0.1, iters: int = 100,
             tol: float = 1e-6) -> torch.Tensor:
    """Transport plans for a batch of cost matrices, uniform marginals.

    ``cost`` is ``(..., P, Q)``; the result has the same shape, rows summing to 1/P and columns
    to 1/Q (exactly for columns, within ``tol`` for rows). At most ``iters`` iterations; it
    stops early once the row marginals are within ``tol``.
    """
    import torch

    *batch, p, q = cost.shape
    log_a = -math.log(p)
    log_b = -math.log(q)
    f = cost.new_zeros((*batch, p))
    g = cost.new_zeros((*batch, q))
    scaled = -cost / epsilon
    for i in range(iters):
        f = epsilon * (log_a - torch.logsumexp(scaled + g.unsqueeze(-2) / epsilon, dim=-1))
        g = epsilon * (log_b - torch.logsumexp(scaled + f.unsqueeze(-1) / epsilon, dim=-2))
        if (i + 1) % 10 == 0:
            rows = torch.exp(scaled + (f.unsqueeze(-1) + g.unsqueeze(-2)) / epsilon).sum(-1)
            if float((rows - 1.0 / p).abs().max()) < tol:
                break
    return torch.exp(scaled + (f.unsqueeze(-1) + g.unsqueeze(-2)) / epsilon)


def ot_scores(features: torch.Tensor, prototypes: torch.Tensor, epsilon: float = 0.1,
              iters: int = 100) -> torch.Tensor:
    """Per (sample, class), Σ T ⊙ cos(V, R_k): the transport-weighted cosine similarity.

    ``features`` is ``(n, P, m)``, ``prototypes`` ``(C, Q, m)``; the result is ``(n, C)`` in
    [-1, 1]. The plan T is computed without gradient (the paper's choice: the plan is a
    matching, the similarity carries the gradient), on cost ``1 - cos``.
    """
    import torch
    import torch.nn.functional as F

    v = F.normalize(features, dim=-1)
    r = F.normalize(prototypes, dim=-1)
    cos = torch.einsum("npm,cqm->ncpq", v, r)
    with torch.no_grad():
        # float64: in float32 the row marginals stall near 1e-6 and never meet ``tol``
        plan = sinkhorn(1.0 - cos.detach().double(), epsilon, iters).to(cos.dtype)
    return (plan * cos).sum(dim=(-1, -2))


def mean_pool_scores(features: torch.Tensor, prototypes: torch.Tensor) -> torch.Tensor:
    """The ablation without transport: cos(mean of the P features, each prototype), averaged
    over the Q prototypes. ``(n, P, m)``, ``(C, Q, m)`` → ``(n, C)``."""
    import torch
    import torch.nn.functional as F

    v = F.normalize(features.mean(dim=1), dim=-1)
    r = F.normalize(prototypes, dim=-1)
    return torch.einsum("nm,cqm->ncq", v, r).mean(dim=-1)
