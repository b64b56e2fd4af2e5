"""The user's side of Evo-Merging: their data, the mixtures they send, the loss they compute.

Everything here sees only what an LMaaS user sees: label-word log-probs returned for prompts
under an adapter spec. A whole population of mixtures is one metered call
(:meth:`~blackbox.backends.metered.MeteredBackend.label_logprobs_rows`): the prompts are
repeated once per mixture, each row carrying its own spec, and the server answers them in
shared forward passes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from blackbox.backends.base import Adapter
from blackbox.data import Example, load_split
from blackbox.data.datasets import seeded_subset
from blackbox.data.leak import digest, digests
from blackbox.data.tasks import Task, render
from blackbox.errors import BbxError
from blackbox.methods.scoring import accuracy, class_log_probs
from blackbox.runs import child_rng


def split_user_and_test(task: Task, user_examples: int, test_limit: int | None,
                        seed: int, test_seed: int = 0, notes: dict[str, Any] | None = None,
                        user_seeds: Sequence[int] | None = None,
                        ) -> tuple[list[Example], list[Example]]:
    """The user's examples and the scored test examples.

    The user's examples are a seeded, stratified draw from the task's train and dev splits
    (``user_examples`` in all, spread evenly over the classes; the k-shot files of
    ``seed``, or of every seed in ``user_seeds``, a text in two of them counted once); the
    scored ones are the test
    split (or its ``test_limit`` subset, :func:`~blackbox.data.datasets.seeded_subset`).
    Train/dev examples whose text is also a scored test text (TREC's shipped splits share
    "What is diabetes ?") are left out of the draw, and ``notes`` (when given) counts them:
    a user example must never be a test item, and leaving them out reads no test label.
    """
    test = seeded_subset(load_split(task, "test"), test_limit, test_seed)
    held = set(digests(e.text for e in test))
    given = [e for sd in (user_seeds or (seed,))
             for split in ("train", "dev") for e in load_split(task, split, 16, sd)]
    if user_seeds and len(user_seeds) > 1:  # a text in two seeds' files is one example
        once: dict[str, Example] = {}
        for e in given:
            once.setdefault(digest(e.text), e)
        given = list(once.values())
    pool = [e for e in given if digest(e.text) not in held]
    dropped = len(given) - len(pool)
    if dropped and notes is not None:
        notes["user_examples_dropped_as_test_texts"] = dropped
    rng = child_rng(seed, "merge-user-examples")
    per = [user_examples // task.n_classes + (c < user_examples % task.n_classes)
           for c in range(task.n_classes)]
    chosen: list[int] = []
    for c, k in enumerate(per):
        idx = [i for i, e in enumerate(pool) if e.label == c]
        if len(idx) < k:
            raise BbxError(f"task '{task.name}' has {len(idx)} train/dev examples of class "
                           f"'{task.labels[c]}', {k} asked (user_examples={user_examples} over "
                           f"{task.n_classes} classes): lower user_examples, or draw "
                           "from more seeds' files (user_seeds)")
        chosen.extend(rng.choice(idx, size=k, replace=False).tolist())
    user = [pool[i] for i in sorted(chosen)]
    return user, test


def prompts_of(task: Task, template: int, examples: Sequence[Example]) -> list[str]:
    """The rendered prompts (the target task's template ``template``)."""
    if template >= len(task.templates):
        raise BbxError(f"template={template} but task '{task.name}' has "
                       f"{len(task.templates)} templates (0..{len(task.templates) - 1})")
    return [render(task.templates[template], e.text, max_words=task.max_words) for e in examples]


def ce_and_accuracy(scores: np.ndarray, gold: np.ndarray) -> tuple[float, float]:
    """Mean cross-entropy of the gold class (label words normalized per example), accuracy."""
    logp = class_log_probs(scores)
    ce = float(-logp[np.arange(len(gold)), gold].mean())
    return ce, accuracy(logp.argmax(axis=1), gold)


@dataclass
class MixtureLoss:
    """Scores many adapter specs on the user's examples, one backend call for all of them."""

    backend: Any  # a MeteredBackend (or anything with label_logprobs_rows)
    prompts: list[str]
    gold: np.ndarray
    label_words: list[str]
    l1: float = 0.05

    def scores(self, specs: Sequence[Adapter]) -> np.ndarray:
        """``(len(specs), n, n_classes)`` label-word log-probs, in ONE batched call."""
        n = len(self.prompts)
        prompts = [p for _ in specs for p in self.prompts]
        adapters = [s for s in specs for _ in range(n)]
        rows = self.backend.label_logprobs_rows(prompts, self.label_words, adapters)
        return np.asarray(rows, dtype=np.float64).reshape(len(specs), n, len(self.label_words))

    def evaluate(self, specs: Sequence[Adapter],
                 xs: Sequence[Sequence[float]] | None = None) -> list[tuple[float, dict]]:
        """Per spec, ``(loss, info)``: loss = CE + l1 · mean|x| (x: the searched vector)."""
        out = []
        for k, sc in enumerate(self.scores(specs)):
            ce, acc = ce_and_accuracy(sc, self.gold)
            reg = self.l1 * float(np.mean(np.abs(xs[k]))) if xs is not None else 0.0
            out.append((ce + reg, {"ce": round(ce, 6), "accuracy": acc}))
        return out


def mixture(names: Sequence[str], alpha: Sequence[float], beta: Sequence[float]
            ) -> dict[str, Any]:
    """A mixture spec (values rounded to 1e-9 so that floats print and cache stably)."""
    return {"adapters": list(names), "alpha": [round(float(a), 9) for a in alpha],
            "beta": [round(float(b), 9) for b in beta]}
