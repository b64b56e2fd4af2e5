"""Run the LMTurk grid of results/lmturk.md: tasks x seeds x acquisition functions.

Every run goes to ``<out>/<task>-s<seed>-<acquisition>[-<label mode>]/`` (a finished one,
with summary.json, is skipped, an unfinished one resumes), all on recipes/lmturk-grid.yaml
plus ``--set`` overrides (the earlier grid: ``--recipe recipes/lmturk-bench.yaml --out
results/lmturk-runs --label-modes soft``, which names runs without the mode). Worker
answers land in the shared response cache, so acquisition functions of one
task and seed pay only for the items the others did not already ask about. Then run
scripts/lmturk_report.py for the tables and plots. On a shared machine, wrap it in
``flock /tmp/bbx-heavy.lock``.

    .venv/bin/python scripts/lmturk_grid.py --tasks sst-2 trec --seeds 13 42 87
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from blackbox.api import run_recipe  # noqa: E402
from blackbox.methods.lmturk.recipe import ACQUISITIONS  # noqa: E402
from blackbox.runs import is_finished  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--recipe", default=str(REPO / "recipes" / "lmturk-grid.yaml"))
    ap.add_argument("--tasks", nargs="+", default=["sst-2", "agnews", "trec", "bbc-news"])
    ap.add_argument("--seeds", nargs="+", type=int, default=[13, 42, 87])
    ap.add_argument("--acquisitions", nargs="+", default=["random", "entropy"],
                    choices=list(ACQUISITIONS))
    ap.add_argument("--label-modes", nargs="+", default=["soft", "hard"],
                    choices=["soft", "hard"])
    ap.add_argument("--set", dest="sets", action="append", default=[],
                    help="extra recipe override key=value (repeatable)")
    ap.add_argument("--out", default=str(REPO / "results" / "lmturk-grid-runs"))
    args = ap.parse_args()
    out = Path(args.out)
    # seeds outermost: a grid cut short still covers every task and acquisition function
    for seed in args.seeds:
        for task in args.tasks:
            for acq, mode in [(a, m) for a in args.acquisitions for m in args.label_modes]:
                suffix = "" if args.label_modes == ["soft"] else f"-{mode}"
                run_dir = out / f"{task}-s{seed}-{acq}{suffix}"
                if is_finished(run_dir):
                    print(f"skip {run_dir.name} (finished)", flush=True)
                    continue
                t0 = time.time()
                result = run_recipe(
                    args.recipe, overrides=[f"task={task}", f"seed={seed}",
                                            f"acquisition={acq}", f"label_mode={mode}",
                                            f"output_dir={out}", *args.sets],
                    run_dir=run_dir, progress=False)
                s = result.summary
                w = s.get("workers_eval") or {}
                print(f"{run_dir.name}: student {s['accuracy']:.4f} (gold only "
                      f"{s['gold_only_accuracy']:.4f}, upper {s['upper_bound_accuracy']}) "
                      f"workers {w.get(s['aggregation'])} queries {s['queries']} paid "
                      f"{s['usage']['by_verb'].get('label_logprobs', 0)} "
                      f"in {time.time() - t0:.0f}s", flush=True)


if __name__ == "__main__":
    main()
