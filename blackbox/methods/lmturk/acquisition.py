"""Acquisition functions: which unlabelled items the workers label next.

Each takes the student's class probabilities on the candidates (``probs``, ``(n, C)``), their
features (``feats``, ``(n, D)``), the batch size ``b`` and a generator, and returns ``b``
distinct candidate indices, most wanted first. Uncertainty scores are ranked with a stable
sort, so equal scores go to the lower index and a run is reproducible.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from blackbox.errors import BbxError, did_you_mean

Acquire = Callable[[np.ndarray, np.ndarray, int, np.random.Generator], np.ndarray]


def entropy_scores(probs: np.ndarray) -> np.ndarray:
    """Shannon entropy of each row (higher = more uncertain)."""
    p = np.clip(probs, 1e-12, 1.0)
    return -(p * np.log(p)).sum(axis=1)


def least_confidence_scores(probs: np.ndarray) -> np.ndarray:
    """One minus the top probability (higher = more uncertain)."""
    return 1.0 - probs.max(axis=1)


def margin_scores(probs: np.ndarray) -> np.ndarray:
    """Minus the gap between the two most likely classes ("breaking ties"; higher = closer)."""
    top2 = np.sort(probs, axis=1)[:, -2:]
    return -(top2[:, 1] - top2[:, 0])


def _top(scores: np.ndarray, b: int) -> np.ndarray:
    return np.argsort(-scores, kind="stable")[:b]


def entropy(probs: np.ndarray, feats: np.ndarray, b: int, rng: np.random.Generator) -> np.ndarray:
    """The ``b`` items of highest predictive entropy."""
    return _top(entropy_scores(probs), b)


def least_confidence(probs: np.ndarray, feats: np.ndarray, b: int,
                     rng: np.random.Generator) -> np.ndarray:
    """The ``b`` items whose most likely class is least likely."""
    return _top(least_confidence_scores(probs), b)


def margin(probs: np.ndarray, feats: np.ndarray, b: int, rng: np.random.Generator) -> np.ndarray:
    """The ``b`` items with the smallest top-1 / top-2 probability gap."""
    return _top(margin_scores(probs), b)


def kmeans(probs: np.ndarray, feats: np.ndarray, b: int, rng: np.random.Generator) -> np.ndarray:
    """Diversity: k-means with ``b`` clusters over the candidates' features, and from each
    cluster the item nearest its centre (a batch that covers the pool, not one corner of it)."""
    n = len(feats)
    if b >= n:
        return np.arange(n)
    from sklearn.cluster import KMeans

    km = KMeans(n_clusters=b, n_init=1, random_state=int(rng.integers(2**31 - 1)))
    assign = km.fit_predict(feats)
    dist = np.linalg.norm(feats - km.cluster_centers_[assign], axis=1)
    picked: list[int] = []
    for k in range(b):
        members = np.flatnonzero(assign == k)
        if len(members):
            picked.append(int(members[np.argmin(dist[members])]))
    # k-means can leave a cluster empty; fill up with the items farthest from their centre
    if len(picked) < b:
        taken = set(picked)
        order = [int(i) for i in np.argsort(-dist, kind="stable") if int(i) not in taken]
        picked.extend(order[: b - len(picked)])
    return np.asarray(picked, dtype=np.int64)


def random(probs: np.ndarray, feats: np.ndarray, b: int, rng: np.random.Generator) -> np.ndarray:
    """``b`` items uniformly at random (the baseline every strategy must beat)."""
    return rng.choice(len(probs), size=min(b, len(probs)), replace=False)


ACQUIRE: dict[str, Acquire] = {
    "entropy": entropy,
    "least-confidence": least_confidence,
    "margin": margin,
    "kmeans": kmeans,
    "random": random,
}


def select(name: str, probs: np.ndarray, feats: np.ndarray, b: int,
           rng: np.random.Generator) -> np.ndarray:
    """Pick ``min(b, n)`` distinct candidates with the acquisition function ``name``."""
    if name not in ACQUIRE:
        raise BbxError(f"unknown acquisition '{name}'{did_you_mean(name, list(ACQUIRE))}")
    probs = np.asarray(probs, dtype=np.float64)
    b = min(int(b), len(probs))
    if b <= 0:
        return np.zeros(0, dtype=np.int64)
    out = np.asarray(ACQUIRE[name](probs, np.asarray(feats, dtype=np.float64), b, rng))
    return out.astype(np.int64)
