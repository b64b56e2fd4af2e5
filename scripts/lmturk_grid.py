"""Run the LMTurk grid of results/lmturk.md: tasks x seeds x acquisition functions.

Every run goes to ``<out>/<task>-s<seed>-<acquisition>[-<label mode>]/`` (a finished one,
with summary.json, is skipped, an unfinished one resumes), all on recipes/lmturk-grid.yaml
plus ``--set`` overrides (the earlier grid: ``--recipe recipes/lmturk-bench.yaml --out
results/lmturk-runs --label-modes soft``, which names runs without the mode). Worker
answers land in the shared response cache, so acquisition functions of one
task and seed pay only for the items the others did not already ask about. Then run
scripts/lmturk_report.py for the tables and plots. On a shared machine, pass ``--lock
/tmp/bbx-heavy.lock`` (held per cell); ``--stop-at HH:MM`` cuts the grid to fit a session.

    .venv/bin/python scripts/lmturk_grid.py --tasks sst-2 trec --seeds 13 42 87
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from blackbox.api import run_recipe  # noqa: E402
from blackbox.grid import Cell, run_grid  # noqa: E402
from blackbox.methods.lmturk.recipe import ACQUISITIONS  # noqa: E402


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
    ap.add_argument("--lock", default=None, help="flock file held per cell")
    ap.add_argument("--stop-at", default=None,
                    help="UTC HH:MM: start no new cell after it (rerun to continue)")
    args = ap.parse_args()
    out = Path(args.out)

    def cell(task: str, seed: int, acq: str, mode: str) -> Cell:
        def run(run_dir: Path) -> None:
            s = run_recipe(args.recipe, overrides=[
                f"task={task}", f"seed={seed}", f"acquisition={acq}", f"label_mode={mode}",
                f"output_dir={out}", *args.sets], run_dir=run_dir, progress=False).summary
            w = s.get("workers_eval") or {}
            print(f"   student {s['accuracy']:.4f} (gold only {s['gold_only_accuracy']:.4f}, "
                  f"upper {s['upper_bound_accuracy']}) workers {w.get(s['aggregation'])} "
                  f"queries {s['queries']} paid "
                  f"{s['usage']['by_verb'].get('label_logprobs', 0)}", flush=True)
        suffix = "" if args.label_modes == ["soft"] else f"-{mode}"
        return Cell(out / f"{task}-s{seed}-{acq}{suffix}", run)

    # seeds outermost: a grid cut short still covers every task and acquisition function
    run_grid([cell(task, seed, acq, mode) for seed in args.seeds for task in args.tasks
              for acq in args.acquisitions for mode in args.label_modes],
             lock=args.lock, stop_at=args.stop_at, log=lambda m: print(m, flush=True))


if __name__ == "__main__":
    main()
