"""How right must the workers' labels be? A no-LLM experiment on the LMTurk grid's runs.

The grid's linear student ends below the student on gold examples alone. Two explanations
predict different things: the workers' labels are too often wrong (any labels that wrong
would do the same), or their errors are biased by class (sst-2: "positive" for most items;
trec: almost never "entity"), which uniform errors at the same accuracy would not be. This
script tells them apart, and measures how accurate labels have to be before the student
reaches the workers, by retraining the grid's linear student (same features, gold set,
items and fit) on other labels for the items the workers labelled:

* ``workers``: the workers' aggregated hard labels weighted by their confidence, exactly
  the grid's ``random``/``hard`` cell (a check that the splits are rebuilt right);
* ``workers, unweighted``: the same labels, weight 1 (what the noise rows below use);
* ``gold labels, noise at accuracy a``: the items' gold labels, a uniformly chosen share
  ``1 - a`` of them replaced by a uniformly drawn other class, ``draws`` times each;
  ``a = matched`` is the workers' own label accuracy on those items.

It reads each task-seed's ``<runs>/<task>-s<seed>-random-hard/`` (recipe.yaml, summary.json,
label_noise.jsonl: every labelled item with its aggregated label and confidence) and writes
``<runs>/label-quality.json``, which scripts/lmturk_report.py renders beside the runs. Only
MiniLM features are computed (cached in the response cache): no LLM query.

    .venv/bin/python scripts/lmturk_labels.py [--runs results/lmturk-grid-runs]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from blackbox.data.leak import without  # noqa: E402
from blackbox.methods.lmturk import features as feat  # noqa: E402
from blackbox.methods.lmturk.pool import make_splits  # noqa: E402
from blackbox.methods.lmturk.recipe import LMTurkRecipe  # noqa: E402
from blackbox.methods.lmturk.student import fit_logreg  # noqa: E402
from blackbox.paths import portable, responses_dir  # noqa: E402
from blackbox.runs import child_rng  # noqa: E402
from blackbox.stats import (  # noqa: E402
    correct_string,
    format_diff,
    parse_correct,
    pooled_bootstrap,
    verdict,
)

ACCURACIES = [0.5, 0.6, 0.7, 0.8, 0.9, 1.0]


def onehot(y: np.ndarray, n: int) -> np.ndarray:
    """Rows of the identity for labels ``y``."""
    return np.eye(n)[np.asarray(y, dtype=np.int64)]


def noisy(y: np.ndarray, acc: float, n_classes: int, rng: np.random.Generator) -> np.ndarray:
    """``y`` with ``round((1 - acc) * len(y))`` uniformly chosen labels replaced by a
    uniformly drawn other class: errors of a given rate without any class bias."""
    out = y.copy()
    wrong = rng.choice(len(y), size=round((1 - acc) * len(y)), replace=False)
    out[wrong] = (y[wrong] + rng.integers(1, n_classes, size=len(wrong))) % n_classes
    return out


class Cell:
    """One task-seed rebuilt from its ``random``/``hard`` run directory."""

    def __init__(self, run: Path, fm: feat.BackendFeatures) -> None:
        recipe = LMTurkRecipe.model_validate(yaml.safe_load((run / "recipe.yaml").read_text()))
        self.summary = json.loads((run / "summary.json").read_text())
        task = recipe.get_task()
        self.task, self.seed, self.labels = task.name, recipe.seed, list(task.labels)
        # the same calls, generators and order as blackbox.methods.lmturk.method.run
        splits = make_splits(task, recipe.shots, recipe.seed,
                             child_rng(recipe.seed, "pool-split"),
                             child_rng(recipe.seed, "subsets"), recipe.pool_file,
                             recipe.pool_limit, recipe.eval_limit, recipe.test_seed)
        gold = without(splits.gold, [splits.eval])[0] if recipe.drop_overlap else splits.gold
        items = [json.loads(line) for line in (run / "label_noise.jsonl").open()]
        index = {t: i for i, t in enumerate(splits.pool_texts)}
        missing = [r["text"] for r in items if r["text"] not in index]
        if missing:
            raise SystemExit(f"{portable(run)}: {len(missing)} labelled items are not in the "
                             "rebuilt pool: the splits changed since this run")
        self.n = len(self.labels)
        lab = {name: i for i, name in enumerate(self.labels)}
        self.y_gold = np.array([e.label for e in gold])
        self.y_items = np.array([lab[r["gold"]] for r in items])
        self.y_workers = np.array([lab[r["aggregated"]] for r in items])
        self.w_workers = np.array([r["aggregated_confidence"] for r in items])
        self.y_eval = np.array([e.label for e in splits.eval])
        self.gold_weight, self.c = recipe.gold_weight, recipe.student_c
        self.x_gold = fm.embed([e.text for e in gold])
        self.x_items = fm.embed([r["text"] for r in items])
        self.x_eval = fm.embed([e.text for e in splits.eval])

    def correct(self, y: np.ndarray | None, w: np.ndarray | None = None) -> str:
        """Evaluation correctness of the student on gold + the items labelled ``y``."""
        if y is None:
            x, t, sw = self.x_gold, onehot(self.y_gold, self.n), np.full(len(self.y_gold),
                                                                           self.gold_weight)
        else:
            x = np.vstack([self.x_gold, self.x_items])
            t = np.vstack([onehot(self.y_gold, self.n), onehot(y, self.n)])
            sw = np.concatenate([np.full(len(self.y_gold), self.gold_weight),
                                 np.ones(len(y)) if w is None else w])
        coef, intercept = fit_logreg(x, t, sw, c=self.c)
        return correct_string((self.x_eval @ coef.T + intercept).argmax(axis=1), self.y_eval)


def run_cell(cell: Cell, draws: int) -> dict[str, Any]:
    """Every arm of one task-seed (see the module docstring)."""
    label_acc = float(np.mean(cell.y_workers == cell.y_items))
    out: dict[str, Any] = {
        "task": cell.task, "seed": cell.seed, "items": int(len(cell.y_items)),
        "eval": int(len(cell.y_eval)), "gold": int(len(cell.y_gold)),
        "same_items": cell.summary["pool_source"] != "seeded half of the test split",
        "workers_label_accuracy": round(label_acc, 4),
        "gold_only": cell.correct(None),
        "workers": cell.correct(cell.y_workers, cell.w_workers),
        "workers_unweighted": cell.correct(cell.y_workers),
        "workers_at_test": cell.summary["workers_eval"]["correct"],
        "grid": {"accuracy": cell.summary["accuracy"],
                 "gold_only_accuracy": cell.summary["gold_only_accuracy"]},
        "noise": {},
    }
    rng = np.random.default_rng([cell.seed, 7])
    for acc in ["matched", *ACCURACIES]:
        a = label_acc if acc == "matched" else float(acc)
        runs = [cell.correct(cell.y_items) if a == 1.0 else
                cell.correct(noisy(cell.y_items, a, cell.n, rng))
                for _ in range(1 if a == 1.0 else draws)]
        hits = np.sum([parse_correct(r) for r in runs], axis=0, dtype=np.int64)
        # per evaluation item: how many of the draws got it right (pairs with the arms above)
        out["noise"][str(acc)] = {"accuracy": round(a, 4), "draws": len(runs),
                                  "hits": hits.tolist()}
    return out


# -- rendering (scripts/lmturk_report.py calls section_lines) --------------------------------

def _scores(cell: dict[str, Any], arm: str) -> np.ndarray:
    """Per evaluation item, the share of the arm's runs that got it right."""
    if arm in cell["noise"]:
        n = cell["noise"][arm]
        return np.asarray(n["hits"], dtype=np.float64) / n["draws"]
    return parse_correct(cell[arm]).astype(np.float64)


def _row_name(arm: str, acc: float) -> str:
    if arm == "gold_only":
        return "none (the gold examples only)"
    if arm == "workers":
        return "the workers' labels, weighted by confidence (the grid's random/hard cell)"
    if arm == "workers_unweighted":
        return "the workers' labels, weight 1"
    if arm == "matched":
        return "gold labels with uniform errors, as often right as the workers'"
    return "gold labels (all right)" if acc == 1.0 else \
        f"gold labels with uniform errors, {round(100 * acc)}% right"


def section_lines(doc: dict[str, Any], task: str) -> list[str]:
    """The task's label-quality table and the sentences its numbers give (empty when the
    experiment has no cell of this task)."""
    cells = [c for c in doc["cells"] if c["task"] == task]
    if not cells:
        return []
    same = all(c["same_items"] for c in cells)
    arms = ["gold_only", "workers", "workers_unweighted", "matched",
            *[str(a) for a in doc["accuracies"]]]
    acc = {a: [float(_scores(c, a).mean()) for c in cells] for a in arms}
    acc["workers_at_test"] = [float(_scores(c, "workers_at_test").mean()) for c in cells]

    def lab(c: dict[str, Any], arm: str) -> float | None:
        if arm == "gold_only":
            return None
        if arm in ("workers", "workers_unweighted", "matched"):
            return c["workers_label_accuracy"]
        return float(arm)

    def diff(base: str, arm: str) -> dict[str, Any]:
        return pooled_bootstrap([(_scores(c, base), _scores(c, arm)) for c in cells], same)

    def ms(xs: list[float]) -> str:  # sd over seeds, as the report's other tables
        return f"{np.mean(xs):.3f} ± {np.std(xs, ddof=1):.3f}" if len(xs) > 1 else f"{xs[0]:.3f}"

    seeds = ", ".join(str(c["seed"]) for c in cells)
    lines = [f"**How right must the labels be?** (`scripts/lmturk_labels.py`, no LLM query.) "
             f"The linear student retrained on the gold examples plus the items the workers "
             f"labelled in the random/hard cell ({'/'.join(str(c['items']) for c in cells)} "
             f"items at seeds {seeds}), with other labels for those items; uniform errors "
             f"replace a random share of the gold labels with a uniformly drawn other class "
             f"({doc['draws']} draws each, their mean). Differences pooled over seeds, "
             f"[95% bootstrap interval over the evaluation items]:", "",
             "| labels on the labelled items | label accuracy | linear student | "
             "minus the workers' labels (weight 1) | minus the workers at test |",
             "|---|---:|---:|---:|---:|"]
    for a in arms:
        las = [lab(c, a) for c in cells]
        la = ("–" if las[0] is None else f"{las[0]:.2f}" if a[0].isdigit()
              else ms([x for x in las if x is not None]))
        d1 = "–" if a == "workers_unweighted" else format_diff(diff("workers_unweighted", a))
        d2 = format_diff(diff("workers_at_test", a))
        name = _row_name(a, float(a) if a[0].isdigit() else 0.0)
        lines.append(f"| {name} | {la} | {ms(acc[a])} | {d1} | {d2} |")
    lines.append(f"| *the workers themselves, at test (mean aggregation)* | – | "
                 f"{ms(acc['workers_at_test'])} | – | – |")
    lines.append("")
    m = diff("workers_unweighted", "matched")
    wl = [c["workers_label_accuracy"] for c in cells]
    sweep = [str(a) for a in doc["accuracies"]]
    target = float(np.mean(acc["workers_at_test"]))
    reach = [a for a in sweep if np.mean(acc[a]) >= target]
    above_gold = [a for a in sweep if np.mean(acc[a]) > np.mean(acc["gold_only"])]
    lines += [f"- {task}: at the workers' own label accuracy, uniform errors give a student "
              f"that {verdict(m)} the one on the workers' labels ({format_diff(m)}, mean over "
              f"{len(cells)} seeds): "
              + ("what their labels cost the student is more than their error rate."
                 if verdict(m) == "beats" else "their error rate accounts for it."),
              f"- {task}: with uniform errors the student's mean over seeds first reaches the "
              f"workers' test accuracy ({target:.3f}) "
              + (f"at {round(100 * float(reach[0]))}% right labels" if reach
                 else "at none of the label accuracies tried")
              + f" and first exceeds the gold-only student ({np.mean(acc['gold_only']):.3f}) "
              + (f"at {round(100 * float(above_gold[0]))}%" if above_gold else "at none")
              + f"; the workers' labels are {100 * np.mean(wl):.0f}% right.", ""]
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=Path, default=REPO / "results" / "lmturk-grid-runs")
    ap.add_argument("--out", type=Path, default=None,
                    help="default: label-quality.json in --runs, where the report reads it")
    ap.add_argument("--draws", type=int, default=10, help="noise draws per label accuracy")
    args = ap.parse_args()
    args.out = args.out or args.runs / "label-quality.json"
    dirs = sorted(d for d in args.runs.glob("*-s*-random-hard") if (d / "summary.json").exists())
    if not dirs:
        raise SystemExit(f"no finished <task>-s<seed>-random-hard runs under "
                         f"{portable(args.runs)}: run scripts/lmturk_grid.py first")
    fm = feat.minilm_features(cache_dir=responses_dir())
    cells = []
    for d in dirs:
        cell = run_cell(Cell(d, fm), args.draws)
        got = round(float(parse_correct(cell["workers"]).mean()), 4)
        if abs(got - cell["grid"]["accuracy"]) > 0.005:
            raise SystemExit(f"{portable(d)}: the rebuilt student scores {got}, the run "
                             f"{cell['grid']['accuracy']}: the splits or the fit changed")
        print(f"{d.name}: workers' labels {cell['workers_label_accuracy']:.3f} right; "
              f"student {got:.3f} (run: {cell['grid']['accuracy']})", flush=True)
        cells.append(cell)
    doc = {"runs": portable(args.runs), "draws": args.draws, "accuracies": ACCURACIES,
           "cells": cells}
    # one line per cell: the per-item lists would take a line each under indent
    body = ",\n".join(json.dumps(c, separators=(",", ":")) for c in cells)
    head = json.dumps({k: v for k, v in doc.items() if k != "cells"})[:-1]
    args.out.write_text(f'{head}, "cells": [\n{body}\n]}}\n', encoding="utf-8")
    print(f"wrote {portable(args.out)}")


if __name__ == "__main__":
    main()
