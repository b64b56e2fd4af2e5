"""Paired comparisons over test items: the numbers results files print.

A run records, for the test items it scored, which it got right as a compact string of
``0``/``1`` (:func:`correct_string`, in test-item order). Two runs on the same items (every
method's subset is :func:`~blackbox.data.datasets.seeded_subset`) compare item by item:
:func:`paired_bootstrap` resamples items, not runs, so the interval says how much the
difference of two accuracies would move with another draw of test items of the same size.
:func:`pooled_bootstrap` does the same for the mean over seeds of such differences, and
:func:`verdict` turns an interval into the word a results sentence uses.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def correct_string(pred: Sequence[int] | np.ndarray, gold: Sequence[int] | np.ndarray) -> str:
    """``"0110..."``: per test item, whether the prediction is the gold class."""
    return "".join("1" if int(p) == int(g) else "0" for p, g in zip(pred, gold, strict=True))


def parse_correct(s: str) -> np.ndarray:
    """The 0/1 array of a :func:`correct_string`."""
    return np.frombuffer(s.encode("ascii"), dtype=np.uint8) - ord("0")


def paired_bootstrap(base: str | np.ndarray, other: str | np.ndarray, n_boot: int = 10_000,
                     seed: int = 0, level: float = 0.95) -> dict[str, Any]:
    """Accuracy of ``other`` minus ``base`` on the same items, with a percentile bootstrap
    interval over items (``level``, default 95%)."""
    a = parse_correct(base) if isinstance(base, str) else np.asarray(base)
    b = parse_correct(other) if isinstance(other, str) else np.asarray(other)
    if a.shape != b.shape:
        raise ValueError(f"paired comparison over different items: {a.shape} vs {b.shape}")
    d = b.astype(np.float64) - a
    idx = np.random.default_rng(seed).integers(0, len(d), size=(n_boot, len(d)))
    boots = d[idx].mean(axis=1)
    tail = (1 - level) / 2 * 100
    lo, hi = np.percentile(boots, [tail, 100 - tail])
    return {"diff": float(d.mean()), "lo": float(lo), "hi": float(hi), "n": int(len(d))}


def _scores(x: str | Sequence[float] | np.ndarray) -> np.ndarray:
    """Per-item scores: a :func:`correct_string`, or per-item values in [0, 1] (the share of
    several runs that got the item right)."""
    return parse_correct(x).astype(np.float64) if isinstance(x, str) else np.asarray(
        x, dtype=np.float64)


def pooled_bootstrap(pairs: Sequence[tuple[str | np.ndarray, str | np.ndarray]],
                     same_items: bool, n_boot: int = 10_000,
                     seed: int = 0, level: float = 0.95) -> dict[str, Any]:
    """The mean over seeds of ``other`` minus ``base`` (one ``(base, other)`` pair of
    :func:`correct_string`, or of per-item score arrays, per seed), with a percentile
    bootstrap interval over items.

    ``same_items``: every seed scored the same test items (in the same order), so one draw of
    items serves every seed, and the interval is :func:`paired_bootstrap`'s on the per-item
    mean over seeds; otherwise each seed's items are drawn on their own (a stratified
    bootstrap). Either way the interval covers the draw of test items, not of seeds."""
    if not pairs:
        raise ValueError("pooled comparison of no seeds")
    a = [_scores(x) for x, _ in pairs]
    b = [_scores(y) for _, y in pairs]
    if any(x.shape != y.shape for x, y in zip(a, b, strict=True)):
        raise ValueError("paired comparison over different items within a seed")
    if same_items:
        if len({len(x) for x in a}) > 1:
            raise ValueError("same_items, but the seeds scored different numbers of items")
        r = paired_bootstrap(np.mean(a, axis=0), np.mean(b, axis=0), n_boot, seed, level)
        return {**r, "n": int(len(a[0])), "seeds": len(pairs)}
    rng = np.random.default_rng(seed)
    boots = np.zeros(n_boot)
    for x, y in zip(a, b, strict=True):
        d = y - x
        boots += d[rng.integers(0, len(d), size=(n_boot, len(d)))].mean(axis=1)
    boots /= len(pairs)
    tail = (1 - level) / 2 * 100
    lo, hi = np.percentile(boots, [tail, 100 - tail])
    diff = float(np.mean([(y - x).mean() for x, y in zip(a, b, strict=True)]))
    return {"diff": diff, "lo": float(lo), "hi": float(hi), "n": int(sum(len(x) for x in a)),
            "seeds": len(pairs)}


def verdict(r: dict[str, Any]) -> str:
    """``beats`` (the interval, as :func:`format_diff` prints it, lies above zero), ``loses
    to`` (below zero) or ``is not distinguishable from`` (it holds zero): how a results
    sentence names ``other``'s relation to ``base``."""
    lo, hi = round(100 * r["lo"], 1), round(100 * r["hi"], 1)
    return "beats" if lo > 0 else "loses to" if hi < 0 else "is not distinguishable from"


def format_diff(r: dict[str, Any]) -> str:
    """``+3.2 [+0.5, +6.0]`` in accuracy points."""
    return f"{100 * r['diff']:+.1f} [{100 * r['lo']:+.1f}, {100 * r['hi']:+.1f}]"
