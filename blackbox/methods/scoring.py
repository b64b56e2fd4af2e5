"""Shared scoring helpers: label-word log-probs in chunks, class distributions, metrics."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from blackbox.backends.base import Adapter, Backend
    from blackbox.progress import Stages


def label_scores(
    backend: Backend,
    prompts: Sequence[str],
    label_words: Sequence[str],
    *,
    adapter: Adapter = None,
    chunk: int = 256,
    progress: Stages | None = None,
    description: str = "scoring",
) -> np.ndarray:
    """``(n, n_classes)`` label-word log-probs, sent in chunks so progress moves and a budget
    stop loses at most one chunk (everything before it is already cached)."""
    from blackbox.progress import stage

    out: list[list[float]] = []
    with stage(progress, description, len(prompts)) as st:
        for start in range(0, len(prompts), chunk):
            part = list(prompts[start:start + chunk])
            out.extend(backend.label_logprobs(part, list(label_words), adapter=adapter))
            st.advance(len(part))
    return np.asarray(out, dtype=np.float64).reshape(len(prompts), len(label_words))


def class_log_probs(scores: np.ndarray) -> np.ndarray:
    """Normalize label-word log-probs into a log-distribution over the classes."""
    m = scores.max(axis=1, keepdims=True)
    return scores - (m + np.log(np.exp(scores - m).sum(axis=1, keepdims=True)))


def accuracy(pred: np.ndarray, gold: np.ndarray) -> float:
    """Fraction of predictions equal to the gold labels."""
    return float(np.mean(pred == gold)) if len(gold) else float("nan")


def macro_f1(pred: np.ndarray, gold: np.ndarray, n_classes: int) -> float:
    """Unweighted mean of per-class F1 (classes absent from both count as 0)."""
    f1s = []
    for c in range(n_classes):
        tp = np.sum((pred == c) & (gold == c))
        fp = np.sum((pred == c) & (gold != c))
        fn = np.sum((pred != c) & (gold == c))
        denom = 2 * tp + fp + fn
        f1s.append(2 * tp / denom if denom else 0.0)
    return float(np.mean(f1s))
