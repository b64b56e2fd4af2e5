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
from blackbox.data.tasks import Task, render
from blackbox.errors import BbxError
from blackbox.methods.scoring import accuracy, class_log_probs
from blackbox.runs import child_rng

#: The seed of the scored test subset: it never moves with the recipe seed, so every seed and
#: variant is measured on the same examples (and shares their cached answers).
TEST_SUBSET_SEED = 0


def split_user_and_test(task: Task, user_examples: int, test_limit: int | None,
                        seed: int) -> tuple[list[Example], list[Example]]:
    """The user's examples (seeded) and the scored test examples (fixed), disjoint.

    The scored part is a prefix of one fixed permutation of the test split; the user's part
    is drawn with ``seed`` from what is left.
    """
    data = load_split(task, "test")
    perm = child_rng(TEST_SUBSET_SEED, "merge-test-subset").permutation(len(data))
    n_test = len(data) - user_examples if test_limit is None else test_limit
    rest = perm[n_test:]
    if n_test < 1 or user_examples > len(rest):
        raise BbxError(f"task '{task.name}' has {len(data)} test examples: not enough for "
                       f"{user_examples} user examples plus {test_limit} scored ones; lower "
                       "user_examples or test_limit")
    user_idx = np.sort(child_rng(seed, "merge-user-examples").choice(rest, user_examples,
                                                                     replace=False))
    test_idx = np.sort(perm[:n_test])
    return [data[i] for i in user_idx], [data[i] for i in test_idx]


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
