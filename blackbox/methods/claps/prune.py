"""Pruning: keep the tokens that move the model's predictions most.

Each candidate ``v`` is scored alone as a one-token prompt on the train batch:

* ``reward``: ``sum_i [log p_v(gold_i) - log p_""(gold_i)]`` — how much it helps, the
  paper's default;
* ``kl``: ``sum_i KL(p_""(.|x_i) || p_v(.|x_i))`` — how much it moves the class
  distribution, in either direction.

Tokens scoring *above* the ``p``-th percentile survive (p=90 keeps ~10%). These scores are
the expensive part of ClaPS (|V| x n queries); they go through the metered backend, so the
response cache keeps them for every later run, seed-mate and baseline with the same batch.
"""

from __future__ import annotations

import math

import numpy as np

from blackbox.methods.claps.reward import PromptScores


def influence_scores(tokens: PromptScores, empty: PromptScores, kind: str = "reward"
                     ) -> np.ndarray:
    """(V,) influence of each one-token prompt relative to the empty prompt (see module)."""
    if kind == "reward":
        return (tokens.log_likelihood - empty.log_likelihood[0][None, :]).sum(axis=1)
    if kind == "kl":
        p0 = empty.logp[0]  # (n, C)
        return (np.exp(p0)[None] * (p0[None] - tokens.logp)).sum(axis=(1, 2))
    raise ValueError(f"unknown influence score '{kind}': use reward or kl")


def n_kept(n: int, percentile: float) -> int:
    """How many of ``n`` distinct scores lie strictly above their ``percentile``-th
    percentile (numpy's linear interpolation): the size of a pruned set without ties."""
    if n <= 0:
        return 0
    pos = percentile / 100.0 * (n - 1)
    return n - 1 - math.floor(pos)


def keep_above_percentile(scores: np.ndarray, percentile: float) -> list[int]:
    """Indices (ascending) of the scores strictly above their ``percentile``-th percentile.

    When ties leave nothing strictly above (every score equal, say), the :func:`n_kept`
    best in stable order are kept instead, so the search still has a space to search.
    """
    scores = np.asarray(scores, dtype=np.float64)
    if scores.size == 0:
        return []
    threshold = np.percentile(scores, percentile)
    keep = np.flatnonzero(scores > threshold)
    if keep.size == 0:
        top = np.argsort(-scores, kind="stable")[: max(1, n_kept(scores.size, percentile))]
        keep = np.sort(top)
    return [int(i) for i in keep]


def random_prune(n: int, percentile: float, rng: np.random.Generator) -> list[int]:
    """A random subset (ascending indices) of the size influence pruning keeps: the
    "random pruning" baseline."""
    k = max(1, n_kept(n, percentile))
    return sorted(int(i) for i in rng.choice(n, size=min(k, n), replace=False))
