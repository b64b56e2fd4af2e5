"""Clustering the candidate vocabulary: k-means, then the candidate nearest each centroid.

Tokens with similar embeddings tend to move a model's predictions alike, so one
representative per cluster keeps the vocabulary's variety at a fraction of its size (the
paper: 2000 clusters). Vectors are L2-normalized first, so clusters follow direction (what
a token means) rather than norm (how frequent it is).

k-means over ~30k tokens takes minutes on a small CPU, and the result depends only on the
vectors, ``k`` and the seed, so it is cached as JSON under the response cache, keyed by the
sha256 of exactly those inputs: every seed, task and baseline of a grid shares one run.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np

CACHE_VERSION = 1


def nearest_to_centroids(vectors: np.ndarray, k: int, seed: int = 0) -> list[int]:
    """Indices (ascending) of the row nearest each of ``k`` k-means centroids.

    k-means++ initialization, one run (``n_init=1``), scikit-learn. Each row belongs to one
    cluster, so the representatives are distinct; ``k >= len(vectors)`` keeps every row.
    """
    n = len(vectors)
    if k >= n:
        return list(range(n))
    from sklearn.cluster import KMeans

    x = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    x = x / np.where(norms > 0, norms, 1.0)
    km = KMeans(n_clusters=k, init="k-means++", n_init=1, max_iter=100, random_state=seed)
    labels = km.fit_predict(x)
    dist = ((x - km.cluster_centers_[labels]) ** 2).sum(axis=1)
    reps = []
    for c in range(k):
        members = np.flatnonzero(labels == c)
        if len(members):  # sklearn relocates empty clusters; guard anyway
            reps.append(int(members[np.argmin(dist[members])]))
    return sorted(reps)


def cluster_key(vectors: np.ndarray, k: int, seed: int) -> str:
    """Content address of a clustering: the vectors' bytes, ``k``, the seed."""
    h = hashlib.sha256()
    x = np.ascontiguousarray(vectors, dtype=np.float32)
    h.update(f"v{CACHE_VERSION}:{x.shape}:{k}:{seed}:".encode())
    h.update(x.tobytes())
    return h.hexdigest()


def cached_clusters(vectors: np.ndarray, k: int, seed: int,
                    cache_dir: str | Path | None) -> tuple[list[int], bool]:
    """:func:`nearest_to_centroids`, read from / written to ``cache_dir`` when given.
    Returns the indices and whether they came from the cache."""
    if cache_dir is None:
        return nearest_to_centroids(vectors, k, seed), False
    folder = Path(cache_dir) / "claps-clusters"
    path = folder / f"{cluster_key(vectors, k, seed)}.json"
    if path.is_file():
        try:
            return [int(i) for i in json.loads(path.read_text())["index"]], True
        except (ValueError, KeyError, TypeError):
            pass  # a damaged entry: recompute and overwrite it
    index = nearest_to_centroids(vectors, k, seed)
    folder.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps({"k": k, "seed": seed, "n": len(vectors), "index": index}))
    os.replace(tmp, path)  # atomic: concurrent runs never read half a file
    return index, False
