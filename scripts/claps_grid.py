"""The ClaPS results grid: tasks x seeds x methods through ``bbx search-prompt``.

Every cell is a real run of ``recipes/claps-sst2.yaml`` (the scaled configuration) with the
task, seed and method's settings on top, one run directory each under ``--runs``. The table
(``scripts/claps_report.py`` -> ``results/claps.md``) is built from those run directories,
never from numbers typed in. Finished cells are skipped, so the grid resumes where it
stopped; the response cache lets baselines and ClaPS variants share what they can (the
greedy's first sweep is the pruning's single tokens, the manual prompt's test answers are
the same for every seed, ...).

    flock /tmp/bbx-heavy.lock .venv/bin/python scripts/claps_grid.py --tasks sst-2 --seeds 42
    .venv/bin/python scripts/claps_grid.py --fake --runs /tmp/claps-fake   # dry run, no model

The dry run (``--fake``) scores every cell on :func:`influence_fake`, a fake model in which
a few words move the predictions, and keeps its response cache under ``--runs``; the whole
60-cell grid takes about a minute and ``claps_report.py --runs /tmp/claps-fake --out ...``
renders it.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

TASKS = ["sst-2", "trec", "mr", "agnews"]
SEEDS = [13, 21, 42, 87, 100]
#: test items scored per task (None: the full test set); AG News's 7,600 are cut to a seeded
#: 2,000 (the shared subset), the rest are scored whole
TEST_LIMIT = {"agnews": 2000}
# method -> recipe settings on top of the base recipe (the scaled ClaPS configuration)
METHODS: dict[str, dict[str, Any]] = {
    "manual": {"search": "manual"},
    "random-search": {"search": "random", "clusters": 0, "prune": "none"},
    "random-prune": {"search": "genetic", "prune": "random"},
    "claps-greedy": {"search": "greedy"},
    "claps-genetic": {"search": "genetic"},
    # ClaPS without clustering: pruning scores every candidate token (~31.6k x n queries)
    "claps-nocluster": {"search": "greedy", "clusters": 0},
}
DEFAULT_METHODS = ["manual", "claps-greedy", "claps-genetic", "random-search", "random-prune"]


class SharedBackend:
    """One local backend for the whole grid: the model loads once and the tokenizer's
    vocabulary is decoded once; ``close()`` (called by every run) is a no-op."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self._vocab: list[str] | None = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def vocabulary(self) -> list[str]:
        if self._vocab is None:
            self._vocab = self._inner.vocabulary()
        return self._vocab

    def close(self) -> None:
        pass


def influence_fake(tasks: list[str], seeds: list[int], base: dict[str, Any]) -> Any:
    """A fake model for dry runs in which a few words really move the predictions.

    The plain fake backend answers the same for every example, so every method ties at the
    class prior and the efficiency table never leaves its first row. This one knows the gold
    label of every example the grid scores (it parses the example back out of the rendered
    prompt): each word of the searched prompt adds its hashed *influence* to the gold
    class's logit (about 2% of words help a lot, 2% hurt, the rest matter little) on top of
    per-example noise, so pruning, the searches and the curves all have something to find.
    No model is loaded; a grid of 60 cells takes a couple of minutes.
    """
    from blackbox.backends.fake import FakeBackend, _hash_unit
    from blackbox.data import load_split
    from blackbox.data.tasks import TASKS as TASK_DEFS
    from blackbox.data.tasks import render

    template = base.get("template", 0)
    shots = int(base.get("shots", 16))
    gold: dict[str, int] = {}  # the example as rendered with no prompt -> its label
    for name in tasks:
        task = TASK_DEFS[name]
        tpl = task.templates[template] if isinstance(template, int) else str(template)
        for seed in seeds:
            for split in ("train", "dev", "test"):
                for e in load_split(task, split, shots, seed):
                    gold[render(tpl, e.text, "", task.max_words)] = e.label

    def influence(word: str) -> float:
        u = _hash_unit("claps-dry-run", word.lower())
        return 1.0 if u < 0.02 else -1.0 if u > 0.98 else 0.5 * (u - 0.5)

    def fn(prompt: str, label_words: Any) -> list[float]:
        # "<w1 .. wk> <example>": the searched words are single space-separated words
        parts = prompt.split(" ")
        for k in range(min(len(parts), 65)):
            rest = " ".join(parts[k:])
            if rest in gold:
                words, label = parts[:k], gold[rest]
                break
        else:
            raise ValueError(f"dry-run fake: not an example of the grid: {prompt[:80]!r}")
        push = sum(influence(w) for w in words) - 0.5  # no prompt: gold is a bit behind
        z = [4.0 * _hash_unit("noise", rest, j) - 2.0 + (push if j == label else 0.0)
             for j in range(len(label_words))]
        top = max(z)
        lse = top + math.log(sum(math.exp(v - top) for v in z))
        return [v - lse - 1.0 for v in z]  # label words do not hold all the mass

    return FakeBackend(fn=fn, model="claps-dry-run-influence-v1")


def run_name(task: str, seed: int, method: str) -> str:
    return f"claps-{method.removeprefix('claps-')}-{task}-s{seed}"


def cell_recipe(base: dict[str, Any], task: str, seed: int, method: str, runs: Path,
                search_trials: int | None = None) -> dict[str, Any]:
    """One cell's recipe. With ``search_trials``, ``queries`` is the pruning's cost (every
    clustered token on the whole train split) plus that many search trials, so every task
    gets the same search however large its train split is."""
    data = {**base, **METHODS[method], "task": task, "seed": seed,
            "name": run_name(task, seed, method), "output_dir": str(runs)}
    if search_trials is not None:
        from blackbox.data import get_task, load_split

        n = len(load_split(get_task(task), "train", int(data.get("shots", 16)), seed))
        if data.get("train_batch"):
            n = min(n, int(data["train_batch"]))
        pruning = (int(data.get("clusters") or 0) + 1) * n if data.get("prune") != "none" else 0
        data["queries"] = pruning + search_trials * n
        data["test_limit"] = TEST_LIMIT.get(task)
    return data


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tasks", nargs="+", default=TASKS)
    ap.add_argument("--seeds", nargs="+", type=int, default=SEEDS)
    ap.add_argument("--methods", nargs="+", default=DEFAULT_METHODS, choices=list(METHODS))
    ap.add_argument("--base", type=Path, default=REPO / "recipes" / "claps-grid.yaml")
    ap.add_argument("--search-trials", type=int, default=300,
                    help="search trials per cell on top of the pruning (0: the base "
                    "recipe's queries and test_limit as they are)")
    ap.add_argument("--set", dest="overrides", action="append", default=[],
                    help="override a base recipe key (key=value), like bbx run --set")
    ap.add_argument("--runs", type=Path, default=REPO / "results" / "claps-grid-runs")
    ap.add_argument("--fake", action="store_true", help="fake backend (a dry run, no model)")
    ap.add_argument("--progress", action=argparse.BooleanOptionalAction, default=False)
    ap.add_argument("--lock", default=None, help="flock file held per cell")
    ap.add_argument("--stop-at", default=None,
                    help="UTC HH:MM: start no new cell after it (rerun to continue)")
    args = ap.parse_args()

    import yaml

    from blackbox.api import make_backend, run_recipe
    from blackbox.grid import Cell, run_grid
    from blackbox.recipes import load_recipe

    # validated like any recipe (a misspelled key stops the grid here), then used as data
    recipe = load_recipe(args.base, args.overrides)
    base = yaml.safe_load(yaml.safe_dump(recipe.model_dump(mode="json")))
    args.runs.mkdir(parents=True, exist_ok=True)
    if args.fake:
        backend: Any = influence_fake(args.tasks, args.seeds, base)
        # a dry run keeps its responses (and clusters) with its runs, out of the real cache
        base["cache_dir"] = base.get("cache_dir") or str(args.runs / "responses")
    else:
        # the recipe's backend section as bbx run builds it (its meter options left out)
        backend = SharedBackend(make_backend(recipe.backend))

    def cell(task: str, seed: int, method: str) -> Cell:
        def run(run_dir: Path) -> None:
            s = run_recipe(cell_recipe(base, task, seed, method, args.runs,
                                       args.search_trials or None),
                           run_dir=run_dir, backend=backend, progress=args.progress).summary
            test = (s.get("test") or {}).get("accuracy")
            print(f"   test {test if test is None else round(test, 4)} prompt "
                  f"{s['best_prompt']!r} train queries {s['queries']['train_total']} paid "
                  f"{s['usage']['queries']}", flush=True)
        return Cell(args.runs / run_name(task, seed, method), run)

    # seed-major: every task gets its first seed before any task gets a second
    run_grid([cell(task, seed, method) for seed in args.seeds for task in args.tasks
              for method in args.methods], lock=args.lock, stop_at=args.stop_at,
             log=lambda m: print(m, flush=True))
    print(json.dumps({"runs": str(args.runs)}))


if __name__ == "__main__":
    main()
