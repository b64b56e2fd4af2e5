"""Paired comparisons over test items: the numbers results files print.

A run records, for the test items it scored, which it got right as a compact string of
``0``/``1`` (:func:`correct_string`, in test-item order). Two runs on the same items (every
method's subset is :func:`~blackbox.data.datasets.seeded_subset`) compare item by item:
:func:`paired_bootstrap` resamples items, not runs, so the interval says how much the
difference of two accuracies would move with another draw of test items of the same size.
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


def format_diff(r: dict[str, Any]) -> str:
    """``+3.2 [+0.5, +6.0]`` in accuracy points."""
    return f"{100 * r['diff']:+.1f} [{100 * r['lo']:+.1f}, {100 * r['hi']:+.1f}]"
