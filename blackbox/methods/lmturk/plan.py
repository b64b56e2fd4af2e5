"""What ``method: distill`` will pay, stage by stage (see :mod:`.method`).

Features come from the backend's embeddings only with ``features: backend`` (``auto`` on
the fake backend): one query per gold, pool and evaluation text. The annotation rounds
spend the ``queries`` budget: the workers' calibration (three content-free inputs each,
and with ``gold_calibration`` one query per gold example outside each worker's
demonstrations), then ``batch`` items a round, every worker on every item, while the pool
and the budget last (which items active learning picks is not known beforehand: the pool's
texts stand for them). ``whole_pool`` lets the workers label the rest of the pool; ``eval_workers``
scores them on (a subset of) the evaluation set.
"""

from __future__ import annotations

from blackbox.backends.base import Backend
from blackbox.methods.lmturk.pool import make_splits
from blackbox.methods.lmturk.recipe import LMTurkRecipe
from blackbox.methods.lmturk.workers import (
    CONTENT_FREE,
    held_out_gold,
    make_workers,
    worker_prompts,
)
from blackbox.methods.plan import Stage, distinct
from blackbox.runs import child_rng


def plan(recipe: LMTurkRecipe, backend: Backend) -> list[Stage]:
    """The stages of a distill run (:mod:`blackbox.methods.plan`)."""
    task = recipe.get_task()
    words = task.label_words
    splits = make_splits(task, recipe.shots, recipe.seed, child_rng(recipe.seed, "pool-split"),
                         child_rng(recipe.seed, "subsets"), recipe.pool_file,
                         recipe.pool_limit, recipe.eval_limit, recipe.test_seed)
    workers = make_workers(task, splits.gold, recipe.workers, recipe.demos_per_class,
                           recipe.demo_words, recipe.query_words, recipe.worker_templates,
                           child_rng(recipe.seed, "workers"))
    m, pool = len(workers), splits.pool_texts
    stages: list[Stage] = []
    kind = recipe.features
    if kind == "backend" or (kind == "auto" and backend.name == "fake"):
        texts = distinct([e.text for e in splits.gold] + pool + [e.text for e in splits.eval])
        stages.append(Stage("features", "embed", len(texts), texts))
    calib = m * len(CONTENT_FREE) if recipe.calibrate else 0
    held = [held_out_gold(w, splits.gold) for w in workers] if recipe.gold_calibration else []
    calib += sum(map(len, held))
    # the rounds of method.run: calibration paid with the first, then `batch` items a round
    used = items = 0
    while True:
        c = calib if items == 0 else 0
        b = min(recipe.batch, (recipe.queries - used - c) // m, len(pool) - items)
        if b <= 0:
            break
        used += m * b + c
        items += b
    if items:
        if recipe.calibrate:
            stages.append(Stage("calibration", "label_logprobs", m * len(CONTENT_FREE),
                                worker_prompts(workers, list(CONTENT_FREE)), words))
        if held:
            stages.append(Stage("gold calibration", "label_logprobs", sum(map(len, held)),
                                [w.prompt(e.text) for w, h in zip(workers, held, strict=True)
                                 for e in h], words))
        stages.append(Stage("annotation", "label_logprobs", m * items,
                            worker_prompts(workers, pool), words,
                            note="active learning picks which pool items"))
    if recipe.whole_pool and len(pool) > items:
        stages.append(Stage("whole pool", "label_logprobs", m * (len(pool) - items),
                            worker_prompts(workers, pool), words))
    if recipe.eval_workers:
        n = len(splits.eval)
        if recipe.worker_eval_limit is not None:
            n = min(n, recipe.worker_eval_limit)
        stages.append(Stage("workers on the evaluation set", "label_logprobs", m * n,
                            worker_prompts(workers, [e.text for e in splits.eval]), words))
    return stages
