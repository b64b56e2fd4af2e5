"""Aggregating several workers' labels into one label distribution per item.

Input everywhere is ``dists``: an ``(M, n, C)`` array, worker ``j``'s class distribution for
item ``i``. Output is an ``(n, C)`` array of posteriors (rows sum to one), so that the student
can train on soft labels whatever the rule.

* :func:`majority` — vote of the workers' argmax labels; ties are broken by the mean soft label.
* :func:`soft_mean` — the mean of the workers' distributions.
* :func:`dawid_skene` — Dawid & Skene (1979): EM over a confusion matrix per worker and the
  class priors, so that a worker who systematically says "Business" for "Tech" is corrected
  rather than outvoted.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from blackbox.errors import BbxError


def _check(dists: np.ndarray) -> np.ndarray:
    d = np.asarray(dists, dtype=np.float64)
    if d.ndim != 3:
        raise BbxError(f"worker outputs must be (workers, items, classes), got shape {d.shape}")
    return d


def majority(dists: np.ndarray) -> np.ndarray:
    """One-hot of the most voted class per item (ties: the class with the higher mean prob)."""
    d = _check(dists)
    m, n, c = d.shape
    votes = np.zeros((n, c))
    for j in range(m):
        votes[np.arange(n), d[j].argmax(axis=1)] += 1.0
    # the mean probability is < 1, so it only decides between classes with equal votes
    winner = (votes + d.mean(axis=0) * 0.5).argmax(axis=1)
    out = np.zeros((n, c))
    out[np.arange(n), winner] = 1.0
    return out


def soft_mean(dists: np.ndarray) -> np.ndarray:
    """The workers' mean distribution."""
    d = _check(dists)
    out = d.mean(axis=0)
    return out / out.sum(axis=1, keepdims=True)


@dataclass
class DawidSkene:
    """A fitted Dawid–Skene model."""

    posterior: np.ndarray  # (n, C): P(true class | the workers' labels)
    confusion: np.ndarray  # (M, C, C): confusion[j, c, l] = P(worker j says l | true class c)
    priors: np.ndarray  # (C,)
    iterations: int
    converged: bool


def dawid_skene(
    labels: np.ndarray,
    n_classes: int,
    *,
    init: np.ndarray | None = None,
    max_iter: int = 100,
    tol: float = 1e-6,
    smoothing: float = 0.01,
) -> DawidSkene:
    """Fit Dawid–Skene by EM on hard worker labels.

    ``labels`` is ``(n, M)`` with class indices, ``-1`` where a worker gave no label.
    ``init`` is a starting posterior (default: the vote fractions), which also fixes which
    class is which — EM alone is symmetric under relabelling. ``smoothing`` is a Dirichlet
    pseudo-count on every confusion cell and prior, so that a class a worker never used keeps
    a small probability instead of a log(0).
    """
    lab = np.asarray(labels, dtype=np.int64)
    if lab.ndim != 2:
        raise BbxError(f"labels must be (items, workers), got shape {lab.shape}")
    n, m = lab.shape
    c = n_classes
    if n == 0:
        return DawidSkene(np.zeros((0, c)), np.tile(np.eye(c), (m, 1, 1)), np.full(c, 1 / c), 0,
                          True)
    if lab.max() >= c or lab.min() < -1:
        raise BbxError(f"labels must be class indices in 0..{c - 1} or -1 (missing)")
    # per worker, an (n, C) one-hot of its labels (all zeros where it gave none)
    onehot = np.zeros((m, n, c))
    ii, jj = np.nonzero(lab >= 0)
    onehot[jj, ii, lab[ii, jj]] = 1.0
    if init is None:
        t = onehot.sum(axis=0) + 1e-9
        t /= t.sum(axis=1, keepdims=True)
    else:
        t = np.asarray(init, dtype=np.float64).copy()
    conf = np.tile(np.eye(c), (m, 1, 1))
    priors = np.full(c, 1.0 / c)
    converged, it = False, 0
    for it in range(1, max_iter + 1):  # noqa: B007 - reported below
        # M-step: priors and per-worker confusion matrices from the current posteriors
        priors = (t.sum(axis=0) + smoothing) / (n + c * smoothing)
        conf = t.T[None] @ onehot + smoothing  # (M, C, C): expected counts of (class, label)
        conf /= conf.sum(axis=2, keepdims=True)
        # E-step: posterior ∝ prior × Π_j P(worker j's label | class)
        log_t = np.log(priors)[None, :] + (onehot @ np.log(conf).transpose(0, 2, 1)).sum(axis=0)
        log_t -= log_t.max(axis=1, keepdims=True)
        new = np.exp(log_t)
        new /= new.sum(axis=1, keepdims=True)
        delta = float(np.abs(new - t).max())
        t = new
        if delta < tol:
            converged = True
            break
    return DawidSkene(t, conf, priors, it, converged)


def aggregate(dists: np.ndarray, rule: str) -> np.ndarray:
    """Aggregate ``(M, n, C)`` worker distributions with ``rule`` into ``(n, C)`` posteriors."""
    d = _check(dists)
    if rule == "majority":
        return majority(d)
    if rule == "mean":
        return soft_mean(d)
    if rule == "dawid-skene":
        labels = d.argmax(axis=2).T  # (n, M)
        return dawid_skene(labels, d.shape[2], init=soft_mean(d)).posterior
    raise BbxError(f"unknown aggregation '{rule}': use majority, mean or dawid-skene")
