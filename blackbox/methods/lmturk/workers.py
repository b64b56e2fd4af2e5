"""Few-shot LLM workers: in-context annotators built from the gold examples.

Worker ``j`` is a prompt: ``demos_per_class`` gold examples of every class (its own seeded
draw, in its own seeded order), each rendered with the worker's template and followed by its
label word, then the item to label rendered with the same template. Its answer is the
distribution over the task's label words at the next token — one LLM query per (worker, item).
Different draws, orders and templates make the workers' errors less correlated, which is
what aggregation needs.

Small models copy the label of the last demonstration and favour some label words whatever the
input; contextual calibration (:func:`content_free_bias`, :func:`calibrate`) divides each
worker's answers by its answer to content-free inputs, at ``len(CONTENT_FREE)`` queries per
worker per run. That removes a bias the worker shows on no input; the bias it shows on real
inputs (on TREC the workers almost never say "entity", 2% of their labels against 20% in
gold) it does not see. Gold calibration (:func:`held_out_gold`, :func:`fit_log_bias`) asks
each worker about the gold examples outside its own demonstrations and fits per-class log
offsets that make their labels most likely, at one query per such example.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from blackbox.data import Example, Task
from blackbox.data.tasks import render
from blackbox.methods.scoring import class_log_probs, label_scores

if TYPE_CHECKING:
    from blackbox.backends.base import Backend
    from blackbox.progress import Stages

DEMO_SEPARATOR = "\n\n"
# Content-free inputs for contextual calibration (Zhao et al. 2021, "Calibrate Before Use").
CONTENT_FREE: tuple[str, ...] = ("N/A", "", "[MASK]")


@dataclass(frozen=True)
class Worker:
    """One few-shot annotator: a template and an ordered list of demonstrations."""

    index: int
    template: str
    demos: tuple[Example, ...]
    label_words: tuple[str, ...]
    demo_words: int
    query_words: int | None

    def context(self) -> str:
        """The demonstrations, rendered (the fixed prefix of every prompt of this worker)."""
        shots = [render(self.template, d.text, "", self.demo_words) + self.label_words[d.label]
                 for d in self.demos]
        return DEMO_SEPARATOR.join(shots)

    def prompt(self, text: str) -> str:
        """The full prompt that asks this worker to label ``text``."""
        query = render(self.template, text, "", self.query_words)
        ctx = self.context()
        return f"{ctx}{DEMO_SEPARATOR}{query}" if ctx else query

    def describe(self) -> dict[str, Any]:
        """A JSON view (for workers.json in the run directory)."""
        return {"index": self.index, "template": self.template,
                "demos": [{"text": d.text[:200], "label": d.label} for d in self.demos]}


def make_workers(
    task: Task,
    gold: Sequence[Example],
    n_workers: int,
    demos_per_class: int,
    demo_words: int,
    query_words: int | None,
    templates: Sequence[int] | None,
    rng: np.random.Generator,
) -> list[Worker]:
    """Build ``n_workers`` workers, each with its own draw and order of gold demonstrations.

    Worker ``j`` uses template ``templates[j % len(templates)]`` (default: all of the task's
    templates in turn). A class with fewer gold examples than ``demos_per_class`` gives all it has.
    """
    order = list(templates) if templates else list(range(len(task.templates)))
    by_class = [[e for e in gold if e.label == c] for c in range(task.n_classes)]
    workers = []
    for j in range(n_workers):
        demos: list[Example] = []
        for members in by_class:
            k = min(demos_per_class, len(members))
            if k:
                demos.extend(members[i] for i in rng.choice(len(members), size=k, replace=False))
        demos = [demos[i] for i in rng.permutation(len(demos))]
        workers.append(Worker(
            index=j, template=task.templates[order[j % len(order)]], demos=tuple(demos),
            label_words=tuple(task.label_words), demo_words=demo_words,
            query_words=query_words if query_words is not None else task.max_words,
        ))
    return workers


def worker_prompts(workers: Sequence[Worker], texts: Sequence[str]) -> list[str]:
    """Every worker's prompt for every text, worker-major (``j * n + i``)."""
    return [w.prompt(t) for w in workers for t in texts]


def label(
    backend: Backend,
    workers: Sequence[Worker],
    texts: Sequence[str],
    label_words: Sequence[str],
    *,
    chunk: int = 64,
    progress: Stages | None = None,
    description: str = "workers",
) -> np.ndarray:
    """Ask every worker about every text: ``(M, n, C)`` class distributions.

    Costs ``M * n`` queries (fewer when the response cache already holds some).
    """
    n = len(texts)
    if n == 0:
        return np.zeros((len(workers), 0, len(label_words)))
    scores = label_scores(backend, worker_prompts(workers, texts), label_words, chunk=chunk,
                          progress=progress, description=description)
    probs = np.exp(class_log_probs(scores))
    return probs.reshape(len(workers), n, len(label_words))


def content_free_bias(
    backend: Backend, workers: Sequence[Worker], label_words: Sequence[str], *, chunk: int = 64
) -> np.ndarray:
    """Each worker's mean answer to :data:`CONTENT_FREE` inputs: ``(M, C)``, its label bias."""
    return label(backend, workers, CONTENT_FREE, label_words, chunk=chunk).mean(axis=1)


def held_out_gold(worker: Worker, gold: Sequence[Example]) -> list[Example]:
    """The gold examples that are not among ``worker``'s demonstrations: labelled items it
    answers without having seen their answer, its gold-calibration set."""
    seen = {d.text for d in worker.demos}
    return [e for e in gold if e.text not in seen]


def fit_log_bias(dists: np.ndarray, labels: np.ndarray, l2: float = 0.01) -> np.ndarray:
    """Per-class log offsets ``b`` ``(C,)`` that maximize the likelihood of ``labels`` under
    ``softmax(log dists + b)`` (bias-only calibration; ``l2`` keeps ``b`` finite when a class
    is never right). Hand-written on scipy because the calibration libraries fit a temperature
    or a full matrix, and 12 examples per class cannot pin down a matrix."""
    from scipy.optimize import minimize

    logq = np.log(np.clip(np.asarray(dists, dtype=np.float64), 1e-12, None))
    n, n_classes = logq.shape
    y = np.eye(n_classes)[np.asarray(labels, dtype=np.int64)]

    def loss(b: np.ndarray) -> tuple[float, np.ndarray]:
        z = logq + b
        z -= z.max(axis=1, keepdims=True)
        logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
        nll = -float((y * logp).sum()) / n + l2 * float(b @ b)
        return nll, (np.exp(logp) - y).sum(axis=0) / n + 2 * l2 * b

    return np.asarray(minimize(loss, np.zeros(n_classes), jac=True, method="L-BFGS-B").x)


def apply_log_bias(dists: np.ndarray, log_bias: np.ndarray) -> np.ndarray:
    """Worker ``j``'s ``(n, C)`` distributions times ``exp(log_bias[j])``, renormalized."""
    q = np.asarray(dists) * np.exp(np.asarray(log_bias))[:, None, :]
    return q / q.sum(axis=2, keepdims=True)


def calibrate(dists: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """Divide worker ``j``'s ``(n, C)`` distributions by its bias ``bias[j]`` and renormalize."""
    q = np.asarray(dists) / np.clip(np.asarray(bias), 1e-12, None)[:, None, :]
    return q / q.sum(axis=2, keepdims=True)
