"""``bbx distill``: LMTurk — few-shot LLM workers, active learning, a distilled student.

One run:

1. gold seed, unlabelled pool and evaluation set (:mod:`.pool`); features for all of them from
   the student's feature model (local MiniLM by default — no LLM query);
2. ``workers`` few-shot annotators built from the gold examples (:mod:`.workers`);
3. round 0: the student trained on gold only; then each round the student scores the pool,
   the acquisition function picks ``batch`` items, every worker labels them (``workers``
   queries per item), the labels of all items so far are aggregated, the student retrains —
   until the next round would exceed ``queries``;
4. references: the student on gold labels for the whole pool (upper bound, where the pool has
   labels), and the workers themselves on the evaluation set (the LLM served at test time);
5. artefacts: ``student.json``, ``rounds.jsonl``, ``workers.json``, ``label_noise.{jsonl,md}``,
   ``learning_curve.png``.
"""

from __future__ import annotations

import json
import time
from typing import Any

import numpy as np

from blackbox.data import Example
from blackbox.errors import BudgetExceeded
from blackbox.methods.base import RunContext
from blackbox.methods.lmturk import features as feat
from blackbox.methods.lmturk.acquisition import select
from blackbox.methods.lmturk.aggregate import aggregate
from blackbox.methods.lmturk.pool import Splits, make_splits
from blackbox.methods.lmturk.recipe import AGGREGATIONS, LMTurkRecipe
from blackbox.methods.lmturk.report import (
    noise_rows,
    noise_summary,
    plot_learning_curve,
    write_noise_report,
)
from blackbox.methods.lmturk.student import Student, fit_logreg, softmax
from blackbox.methods.lmturk.workers import (
    CONTENT_FREE,
    Worker,
    apply_log_bias,
    calibrate,
    content_free_bias,
    fit_log_bias,
    held_out_gold,
    label,
    make_workers,
    worker_prompts,
)
from blackbox.methods.scoring import accuracy, macro_f1
from blackbox.paths import portable, responses_dir
from blackbox.stats import correct_string


def _onehot(y: np.ndarray, n_classes: int) -> np.ndarray:
    out = np.zeros((len(y), n_classes))
    out[np.arange(len(y)), y] = 1.0
    return out


def feature_model(recipe: LMTurkRecipe, ctx: RunContext) -> feat.BackendFeatures:
    """The feature model a run uses: ``auto`` is MiniLM, except on the fake backend (tests)."""
    kind = recipe.features
    if kind == "auto":
        kind = "backend" if ctx.backend.name == "fake" else "minilm"
    if kind == "minilm":
        # cached, but not in the ledger: the feature model runs locally, it is no LLM query
        return feat.minilm_features(cache_dir=recipe.cache_dir or responses_dir())
    spec = feat.backend_spec(recipe.backend.model_dump(mode="json"), ctx.backend.fingerprint)
    return feat.BackendFeatures(ctx.backend, spec)


class _Trainer:
    """Fits the student on gold + aggregated labels, the same way every round."""

    def __init__(self, recipe: LMTurkRecipe, x_gold: np.ndarray, y_gold: np.ndarray,
                 n_classes: int) -> None:
        self.recipe, self.x_gold, self.n_classes = recipe, x_gold, n_classes
        self.t_gold = _onehot(y_gold, n_classes)

    def targets(self, posterior: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Training targets and weights of gold + labelled items (``label_mode``)."""
        if self.recipe.label_mode == "hard":
            targets = _onehot(posterior.argmax(axis=1), self.n_classes)
            weights = posterior.max(axis=1)  # a split vote counts for less
        else:
            targets, weights = posterior, np.ones(len(posterior))
        return (np.vstack([self.t_gold, targets]),
                np.concatenate([np.full(len(self.t_gold), self.recipe.gold_weight), weights]))

    def fit(self, x: np.ndarray, posterior: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        targets, weights = self.targets(posterior)
        return fit_logreg(np.vstack([self.x_gold, x]), targets, weights,
                          c=self.recipe.student_c)


def _finetuned(recipe: LMTurkRecipe, ctx: RunContext, trainer: _Trainer, splits: Splits,
               labelled: np.ndarray, posterior: np.ndarray, y_eval: np.ndarray,
               labels: list[str]) -> dict[str, Any]:
    """The fine-tuned MiniLM student on gold + the workers' labels (saved in the run
    directory), and the same fine-tuning on gold alone: what the labels add to it."""
    from blackbox.methods.lmturk.finetune import FinetuneConfig, finetune

    cfg = FinetuneConfig(epochs=recipe.finetune_epochs, lr=recipe.finetune_lr)
    seed = int(ctx.rng("finetune").integers(2**31))
    log = (lambda m: ctx.stages.note(m.strip())) if ctx.show_progress else None
    gold = [e.text for e in splits.gold]
    eval_texts = [e.text for e in splits.eval]
    out: dict[str, Any] = {"epochs": cfg.epochs, "lr": cfg.lr}
    t0 = time.perf_counter()
    targets, weights = trainer.targets(posterior)
    model = finetune(gold + [splits.pool_texts[i] for i in labelled], targets, weights, labels,
                     cfg, seed, log)
    pred = model.predict_proba(eval_texts).argmax(axis=1)
    model.meta = {"task": recipe.task_name, "labelled": int(len(labelled)),
                  "gold": len(gold), "run_dir": ctx.run_dir.path.name}
    path = model.save(ctx.run_dir.path / "student-finetuned")
    out.update(accuracy=round(accuracy(pred, y_eval), 4), correct=correct_string(pred, y_eval),
               student=portable(path), fit_s=round(time.perf_counter() - t0, 1))
    t0 = time.perf_counter()
    empty, _ = trainer.targets(np.zeros((0, len(labels))))
    gold_model = finetune(gold, empty, None, labels, cfg, seed)
    gpred = gold_model.predict_proba(eval_texts).argmax(axis=1)
    out.update(gold_only_accuracy=round(accuracy(gpred, y_eval), 4),
               gold_only_correct=correct_string(gpred, y_eval),
               gold_only_fit_s=round(time.perf_counter() - t0, 1))
    return out


def _probs(coef_int: tuple[np.ndarray, np.ndarray], x: np.ndarray) -> np.ndarray:
    coef, intercept = coef_int
    return softmax(x @ coef.T + intercept)


def _cross_fit(trainer: _Trainer, x: np.ndarray, posterior: np.ndarray, folds: int,
               rng: np.random.Generator) -> np.ndarray:
    """Out-of-fold student predictions on the labelled items (for the noise report)."""
    n = len(x)
    out = np.zeros_like(posterior)
    if n < 2:
        return _probs(trainer.fit(x, posterior), x) if n else out
    fold = rng.permutation(n) % min(folds, n)
    for k in range(min(folds, n)):
        test, train = fold == k, fold != k
        out[test] = _probs(trainer.fit(x[train], posterior[train]), x[test])
    return out


class _Crowd:
    """The workers as the run asks them: calibrated (when the recipe says so) and counted."""

    def __init__(self, ctx: RunContext, workers: list[Worker], label_words: list[str],
                 recipe: LMTurkRecipe, gold: list[Example]) -> None:
        self.ctx, self.workers, self.label_words, self.recipe = ctx, workers, label_words, recipe
        self.bias: np.ndarray | None = None  # (M, C) content-free answers
        self.log_bias: np.ndarray | None = None  # (M, C) offsets fitted on the gold
        self.held_out = [held_out_gold(w, gold) for w in workers]

    @property
    def calibration_queries(self) -> int:
        """Queries the calibration costs (once per run)."""
        cf = len(self.workers) * len(CONTENT_FREE) if self.recipe.calibrate else 0
        return cf + (sum(map(len, self.held_out)) if self.recipe.gold_calibration else 0)

    @property
    def calibrated(self) -> bool:
        """Whether every calibration the recipe asks for is done (and paid)."""
        return ((not self.recipe.calibrate or self.bias is not None)
                and (not self.recipe.gold_calibration or self.log_bias is not None))

    def ensure_calibrated(self) -> None:
        if self.recipe.calibrate and self.bias is None:
            self.bias = content_free_bias(self.ctx.backend, self.workers, self.label_words,
                                          chunk=self.recipe.chunk)
        if self.recipe.gold_calibration and self.log_bias is None:
            rows = []
            for j, (w, held) in enumerate(zip(self.workers, self.held_out, strict=True)):
                if not held:  # every gold example is a demonstration: nothing to fit on
                    rows.append(np.zeros(len(self.label_words)))
                    continue
                d = label(self.ctx.backend, [w], [e.text for e in held], self.label_words,
                          chunk=self.recipe.chunk)
                if self.bias is not None:
                    d = calibrate(d, self.bias[j:j + 1])
                rows.append(fit_log_bias(d[0], np.array([e.label for e in held])))
            self.log_bias = np.stack(rows)

    def ask(self, texts: list[str], bar: Any = None, description: str = "workers") -> np.ndarray:
        """``(M, n, C)`` answers of every worker about every text."""
        self.ensure_calibrated()
        dists = label(self.ctx.backend, self.workers, texts, self.label_words,
                      chunk=self.recipe.chunk, progress=bar, description=description)
        if self.bias is not None:
            dists = calibrate(dists, self.bias)
        return dists if self.log_bias is None else apply_log_bias(dists, self.log_bias)


def _eval_workers(ctx: RunContext, crowd: _Crowd, splits: Splits, recipe: LMTurkRecipe,
                  bar: Any) -> dict[str, Any]:
    """The workers as the classifier served at test time: accuracy per worker and per rule,
    on a seeded subset of the evaluation set (``worker_eval_limit``: they cost queries)."""
    items = splits.eval
    limit = recipe.worker_eval_limit
    if limit is not None and limit < len(items):
        keep = np.sort(ctx.rng("worker-eval").choice(len(items), size=limit, replace=False))
        items = [items[i] for i in keep]
    texts = [e.text for e in items]
    gold = np.array([e.label for e in items])
    prompts = worker_prompts(crowd.workers, texts)
    tokens = int(sum(ctx.backend.count_tokens(prompts)))
    dists = crowd.ask(texts, bar, "workers on the evaluation set")
    out: dict[str, Any] = {
        "items": len(texts),
        "per_worker": [round(accuracy(d.argmax(axis=1), gold), 4) for d in dists],
        "queries": len(prompts),
        "calibration_queries": crowd.calibration_queries,
        "tokens": tokens,
        "tokens_per_item": round(tokens / max(1, len(texts)), 1),
    }
    for rule in AGGREGATIONS:
        out[rule] = round(accuracy(aggregate(dists, rule).argmax(axis=1), gold), 4)
    if len(items) == len(splits.eval):  # the student's items: paired comparisons need these
        out["correct"] = correct_string(aggregate(dists, recipe.aggregation).argmax(axis=1),
                                        gold)
    return out


def _label_report(ctx: RunContext, recipe: LMTurkRecipe, splits: Splits, trainer: _Trainer,
                  x: np.ndarray, labelled: np.ndarray, dists: np.ndarray,
                  posterior: np.ndarray) -> tuple[dict[str, float], dict[str, Any]]:
    """Accuracy of each aggregation rule on the labelled items (where the pool has gold
    labels), and the label-noise report; returns both summaries."""
    if not len(labelled):
        return {}, {"items": 0}
    labels = list(recipe.get_task().labels)
    pool_gold = splits.pool_labels[labelled] if splits.pool_has_labels else None
    quality = {} if pool_gold is None else {
        rule: round(accuracy(aggregate(dists, rule).argmax(axis=1), pool_gold), 4)
        for rule in AGGREGATIONS}
    held_out = _cross_fit(trainer, x, posterior, 5, ctx.rng("noise-folds"))
    rows = noise_rows([splits.pool_texts[i] for i in labelled], dists, posterior, held_out,
                      labels, pool_gold)
    write_noise_report(ctx.run_dir.path / "label_noise.jsonl",
                       ctx.run_dir.path / "label_noise.md", rows, recipe.noise_top)
    return quality, noise_summary(rows)


def drop_overlap(ctx: RunContext, splits: Splits) -> Splits:
    """The splits without the gold and pool texts that are evaluation texts, where the
    recipe sets ``drop_overlap`` (pool labels follow their texts; the notes count both)."""
    if not ctx.drop_overlap:
        return splits
    from dataclasses import replace

    gold = ctx.fit_only("gold examples", splits.gold, splits.eval)
    texts = ctx.fit_only("pool", splits.pool_texts, splits.eval)
    if len(texts) == len(splits.pool_texts):
        return replace(splits, gold=gold)
    kept = set(texts)
    idx = [i for i, t in enumerate(splits.pool_texts) if t in kept]
    labels = splits.pool_labels[idx] if len(splits.pool_labels) else splits.pool_labels
    return replace(splits, gold=gold, pool_texts=[splits.pool_texts[i] for i in idx],
                   pool_labels=labels)


def run(recipe: LMTurkRecipe, ctx: RunContext) -> dict[str, Any]:
    """Run LMTurk end to end (see the module docstring); return the summary."""
    t0 = time.perf_counter()
    task = recipe.get_task()
    n_classes, label_words = task.n_classes, list(task.label_words)
    splits = make_splits(task, recipe.shots, recipe.seed, ctx.rng("pool-split"),
                         ctx.rng("subsets"), recipe.pool_file, recipe.pool_limit,
                         recipe.eval_limit, recipe.test_seed)
    splits = drop_overlap(ctx, splits)
    ctx.check_leak({"gold examples": splits.gold, "pool": splits.pool_texts},
                   {"evaluation set": splits.eval})
    fm = feature_model(recipe, ctx)
    n_texts = len(splits.gold) + len(splits.pool_texts) + len(splits.eval)
    with ctx.stages.stage(f"features ({fm.spec['kind']})", n_texts, unit="texts") as st:
        x_gold = fm.embed([e.text for e in splits.gold])
        st.advance(len(splits.gold))
        x_pool = fm.embed(splits.pool_texts)
        st.advance(len(splits.pool_texts))
        x_eval = fm.embed([e.text for e in splits.eval])
        st.advance(len(splits.eval))
    y_gold = np.array([e.label for e in splits.gold])
    y_eval = np.array([e.label for e in splits.eval])
    workers = make_workers(task, splits.gold, recipe.workers, recipe.demos_per_class,
                           recipe.demo_words, recipe.query_words, recipe.worker_templates,
                           ctx.rng("workers"))

    crowd = _Crowd(ctx, workers, label_words, recipe, splits.gold)
    trainer = _Trainer(recipe, x_gold, y_gold, n_classes)
    m = len(workers)
    labelled = np.zeros(0, dtype=np.int64)
    dists = np.zeros((m, 0, n_classes))
    posterior = np.zeros((0, n_classes))
    model = trainer.fit(np.zeros((0, x_gold.shape[1])), posterior)
    used, stop = 0, "query budget reached"
    rounds: list[dict[str, Any]] = []
    rounds_path = ctx.run_dir.path / "rounds.jsonl"
    rounds_file = rounds_path.open("w", encoding="utf-8")  # a resumed run rewrites it whole
    acq_rng = ctx.rng("acquisition")
    eval_preds: list[np.ndarray] = []  # the student's predictions after each round

    def record() -> None:
        pred = _probs(model, x_eval).argmax(axis=1)
        eval_preds.append(pred)
        row: dict[str, Any] = {
            "round": len(rounds), "queries": used, "labelled": int(len(labelled)),
            "accuracy": round(accuracy(pred, y_eval), 4),
            "macro_f1": round(macro_f1(pred, y_eval, n_classes), 4),
            "paid_queries": ctx.backend.usage.by_verb.get("label_logprobs", 0),
            "wall_s": round(time.perf_counter() - t0, 2),
        }
        if len(labelled) and splits.pool_has_labels:
            row["label_accuracy"] = round(
                accuracy(posterior.argmax(axis=1), splits.pool_labels[labelled]), 4)
        rounds.append(row)
        rounds_file.write(json.dumps(row) + "\n")
        rounds_file.flush()
        extra = f", labels {row['label_accuracy']:.3f}" if "label_accuracy" in row else ""
        ctx.stages.note(f"round {row['round']}: {used}/{recipe.queries} queries, "
                        f"{row['labelled']} labelled, student accuracy "
                        f"{row['accuracy']:.4f}{extra}")

    try:
        with ctx.progress() as bar:
            record()
            with ctx.stages.stage(f"active learning ({recipe.acquisition})",
                                  total=recipe.queries, unit="annotation queries") as st:
                while True:
                    rest = np.setdiff1d(np.arange(len(splits.pool_texts)), labelled)
                    # the calibration is paid from the annotation budget, with the first round
                    calib = 0 if crowd.calibrated else crowd.calibration_queries
                    b = min(recipe.batch, (recipe.queries - used - calib) // m, len(rest))
                    if b <= 0:
                        stop = "pool exhausted" if len(rest) == 0 else "query budget reached"
                        break
                    pick = rest[select(recipe.acquisition, _probs(model, x_pool[rest]),
                                       x_pool[rest], b, acq_rng)]
                    try:
                        new = crowd.ask([splits.pool_texts[i] for i in pick])
                    except BudgetExceeded as e:
                        stop = f"hard budget: {e}"
                        ctx.notes["stopped_by"] = str(e)
                        break
                    used += m * len(pick) + calib
                    labelled = np.concatenate([labelled, pick])
                    dists = np.concatenate([dists, new], axis=1)
                    posterior = aggregate(dists, recipe.aggregation)
                    model = trainer.fit(x_pool[labelled], posterior)
                    record()
                    st.update(used)
            upper = None
            if splits.pool_has_labels:
                y_pool = _onehot(splits.pool_labels, n_classes)
                upper = accuracy(_probs(trainer.fit(x_pool, y_pool), x_eval).argmax(axis=1),
                                 y_eval)
            whole: dict[str, Any] | None = None
            if recipe.whole_pool:
                try:
                    all_dists = crowd.ask(splits.pool_texts, bar, "workers: the whole pool")
                    wpred = _probs(trainer.fit(x_pool, aggregate(all_dists, recipe.aggregation)),
                                   x_eval).argmax(axis=1)
                    whole = {"items": len(splits.pool_texts),
                             "queries": m * len(splits.pool_texts),
                             "accuracy": round(accuracy(wpred, y_eval), 4),
                             "correct": correct_string(wpred, y_eval)}
                except BudgetExceeded as e:
                    ctx.notes["whole_pool_skipped"] = str(e)
            worker_eval: dict[str, Any] | None = None
            if recipe.eval_workers:
                try:
                    worker_eval = _eval_workers(ctx, crowd, splits, recipe, bar)
                except BudgetExceeded as e:
                    ctx.notes["worker_eval_skipped"] = str(e)
    finally:
        rounds_file.close()

    ctx.run_dir.write_json("workers.json", [
        {**w.describe(), "content_free_bias": None if crowd.bias is None
         else dict(zip(task.labels, np.round(crowd.bias[j], 4).tolist(), strict=True)),
         "gold_log_bias": None if crowd.log_bias is None
         else dict(zip(task.labels, np.round(crowd.log_bias[j], 4).tolist(), strict=True))}
        for j, w in enumerate(workers)])
    # the deliverable: the student trained on everything the workers labelled
    student = Student(
        labels=list(task.labels), coef=model[0], intercept=model[1], feature_model=fm.spec,
        meta={"task": task.name, "label_words": label_words, "method": "distill (LMTurk)",
              "acquisition": recipe.acquisition, "aggregation": recipe.aggregation,
              "workers": m, "queries": used, "gold": len(splits.gold),
              "labelled": int(len(labelled)), "eval_accuracy": rounds[-1]["accuracy"],
              "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
              "run_dir": ctx.run_dir.path.name},
    )
    student_path = student.save(ctx.run_dir.path / "student.json")

    finetuned = (_finetuned(recipe, ctx, trainer, splits, labelled, posterior, y_eval,
                            list(task.labels)) if recipe.student == "finetune" else None)

    label_quality, noise = _label_report(ctx, recipe, splits, trainer, x_pool[labelled],
                                         labelled, dists, posterior)
    workers_acc = None if worker_eval is None else worker_eval[recipe.aggregation]
    plot_learning_curve(
        rounds, ctx.run_dir.path / "learning_curve.png",
        f"{task.name}: {recipe.acquisition}, {m} workers, {recipe.aggregation}",
        {"upper bound (gold pool)": upper, f"workers ({recipe.aggregation})": workers_acc},
    )
    return {
        "task": task.name,
        "acquisition": recipe.acquisition,
        "aggregation": recipe.aggregation,
        "workers": m,
        "calibrated": crowd.bias is not None,
        "gold_calibrated": crowd.log_bias is not None,
        "gold": len(splits.gold),
        "pool": len(splits.pool_texts),
        "pool_source": splits.pool_source,
        "eval": len(splits.eval),
        "features": fm.spec["kind"],
        "query_budget": recipe.queries,
        "queries": used,
        "labelled": int(len(labelled)),
        "rounds": len(rounds) - 1,
        "stopped": stop,
        "accuracy": rounds[-1]["accuracy"],
        "macro_f1": rounds[-1]["macro_f1"],
        "gold_only_accuracy": rounds[0]["accuracy"],
        "correct": correct_string(eval_preds[-1], y_eval),
        "gold_only_correct": correct_string(eval_preds[0], y_eval),
        "upper_bound_accuracy": None if upper is None else round(upper, 4),
        "workers_eval": worker_eval,
        "label_accuracy": label_quality,
        "label_noise": noise,
        "student": portable(student_path),
        **({"finetuned": finetuned} if finetuned is not None else {}),
        **({"whole_pool": whole} if whole is not None else {}),
        "wall_s": round(time.perf_counter() - t0, 2),
    }
