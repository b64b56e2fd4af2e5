"""Scoring prompts: per prompt, the mean log-likelihood of the gold class and the accuracy.

A prompt ``s`` goes into the task template before each example; the backend returns the
label words' log-probs; a softmax over them gives the class distribution, and the reward is
``mean_i log p(gold_i)`` — minus the cross-entropy, so the searchers' loss *is* the
cross-entropy. (The official ClaPS code feeds softmax probabilities into
``CrossEntropyLoss``, which applies a second softmax; that squashes every reward into a
narrow band. This one is the proper log-likelihood.)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from blackbox.data.datasets import Example
from blackbox.data.tasks import Task, render
from blackbox.methods.scoring import class_log_probs, label_scores, macro_f1

if TYPE_CHECKING:
    from blackbox.backends.base import Backend
    from blackbox.progress import Stages


@dataclass
class PromptScores:
    """What scoring ``P`` prompts on ``n`` examples gives (arrays indexed by prompt)."""

    logp: np.ndarray  # (P, n, C) class log-distributions
    gold: np.ndarray  # (n,)

    @property
    def log_likelihood(self) -> np.ndarray:
        """(P, n): log p(gold class) per prompt and example."""
        return self.logp[:, np.arange(self.gold.size), self.gold]

    @property
    def reward(self) -> np.ndarray:
        """(P,): mean log-likelihood of the gold class (= minus the cross-entropy)."""
        return self.log_likelihood.mean(axis=1)

    @property
    def accuracy(self) -> np.ndarray:
        """(P,): fraction of examples whose most likely class is the gold one."""
        return (self.logp.argmax(axis=2) == self.gold[None, :]).mean(axis=1)

    def macro_f1(self) -> np.ndarray:
        """(P,): unweighted mean per-class F1."""
        n_classes = self.logp.shape[2]
        return np.array([macro_f1(p.argmax(axis=1), self.gold, n_classes) for p in self.logp])


class PromptScorer:
    """Scores prompts on a fixed list of examples through a (metered) backend."""

    def __init__(self, backend: Backend, task: Task, template: str,
                 examples: Sequence[Example]) -> None:
        if not examples:
            raise ValueError("PromptScorer needs at least one example")
        self.backend = backend
        self.task = task
        self.template = template
        self.examples = list(examples)
        self.gold = np.array([e.label for e in self.examples], dtype=np.int64)

    @property
    def n(self) -> int:
        """Examples per prompt: the queries one prompt costs."""
        return len(self.examples)

    def texts(self, prompts: Sequence[str]) -> list[str]:
        """The rendered inputs, prompt-major (prompt 0 on every example, then prompt 1...)."""
        return [render(self.template, e.text, p, self.task.max_words)
                for p in prompts for e in self.examples]

    def score(self, prompts: Sequence[str], *, chunk: int | None = None,
              progress: Stages | None = None, description: str = "scoring") -> PromptScores:
        """Score ``prompts`` on every example.

        Without ``chunk`` the whole batch is ONE metered call (how the search objective
        scores a batch of candidates); with it, calls of ``chunk`` rendered inputs each, so
        a progress bar moves, and a kill or a budget stop loses at most one chunk (the
        answers of earlier chunks are already in the cache).
        """
        texts = self.texts(prompts)
        words = list(self.task.label_words)
        if chunk is None:
            raw = np.asarray(self.backend.label_logprobs(texts, words), dtype=np.float64)
        else:
            raw = label_scores(self.backend, texts, words, chunk=max(1, chunk),
                               progress=progress, description=description)
        raw = raw.reshape(len(prompts), self.n, len(words))
        logp = class_log_probs(raw.reshape(-1, len(words))).reshape(raw.shape)
        return PromptScores(logp, self.gold)


def balanced_subset(examples: Sequence[Example], n: int | None, rng: np.random.Generator,
                    n_classes: int) -> list[Example]:
    """``n`` examples drawn class by class in turn (as balanced as ``n`` allows), kept in
    their original order; ``None`` or ``n >= len`` keeps all of them."""
    if n is None or n >= len(examples):
        return list(examples)
    by_class = [[i for i, e in enumerate(examples) if e.label == c] for c in range(n_classes)]
    for idx in by_class:
        rng.shuffle(idx)
    picked: list[int] = []
    depth = 0
    while len(picked) < n:
        for idx in by_class:
            if depth < len(idx) and len(picked) < n:
                picked.append(idx[depth])
        depth += 1
    return [examples[i] for i in sorted(picked)]
