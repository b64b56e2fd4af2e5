"""``bbx eval``: accuracy of a template (+ optional prompt) on a task split.

Zero-shot label-word scoring: the class is the label word with the highest log-prob after
the rendered template. This is the baseline every other method is compared with.
"""

from __future__ import annotations

import json
import time
from typing import Any

import numpy as np

from blackbox.data import load_split
from blackbox.data.datasets import seeded_subset
from blackbox.data.tasks import render
from blackbox.methods.base import RunContext
from blackbox.methods.eval.recipe import EvalRecipe
from blackbox.methods.scoring import accuracy, class_log_probs, label_scores, macro_f1
from blackbox.stats import correct_string


def run(recipe: EvalRecipe, ctx: RunContext) -> dict[str, Any]:
    """Score every example of the split; write predictions.jsonl; return the summary."""
    t0 = time.perf_counter()
    task = recipe.get_task()
    template = recipe.template_text()
    full = load_split(task, recipe.split, recipe.shots, recipe.seed)
    examples = seeded_subset(full, recipe.limit, recipe.test_seed)
    prompts = [render(template, e.text, recipe.prompt, task.max_words) for e in examples]
    gold = np.array([e.label for e in examples])
    with ctx.progress() as bar:
        scores = label_scores(ctx.backend, prompts, task.label_words, chunk=recipe.chunk,
                              progress=bar, description=recipe.split)
    logp = class_log_probs(scores)
    pred = logp.argmax(axis=1)
    with (ctx.run_dir.path / "predictions.jsonl").open("w") as f:
        for e, p, lp in zip(examples, pred, logp, strict=True):
            f.write(json.dumps({"text": e.text[:200], "gold": task.labels[e.label],
                                "pred": task.labels[int(p)],
                                "probs": np.round(np.exp(lp), 4).tolist()}) + "\n")
    per_class = {task.labels[c]: accuracy(pred[gold == c], gold[gold == c])
                 for c in range(task.n_classes) if np.any(gold == c)}
    return {
        "task": task.name,
        "split": recipe.split,
        "n": len(examples),
        "n_split": len(full),
        "accuracy": accuracy(pred, gold),
        "macro_f1": macro_f1(pred, gold, task.n_classes),
        "correct": correct_string(pred, gold),
        "per_class_accuracy": per_class,
        "template": template,
        "prompt": recipe.prompt,
        "label_words": list(task.label_words),
        "wall_s": round(time.perf_counter() - t0, 2),
    }
