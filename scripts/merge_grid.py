"""The Evo-Merging results grid: held-out target tasks × seeds × variants, then the table.

Every cell is a real run of ``bbx merge`` with its own run directory
(``<runs>/<task>-s<seed>-<variant>``); a cell whose directory holds a summary is skipped, and
one without (a killed run) is resumed by replay. ``results/evo-merge.md`` is built from the
run directories by ``scripts/merge_report.py``, never from numbers typed in.

The paper's scale (300 user examples, 400 + 800 evaluations) is out of reach of a 2-core
CPU; the defaults here are the scaled configuration stated in the report (see --help).

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python scripts/merge_grid.py --lock /tmp/bbx-heavy.lock \\
        [--tasks sst-2 trec] [--seeds 42 13 87]
    .venv/bin/python scripts/merge_report.py        # the table only
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

TASKS = ["sst-2", "trec"]  # both held out of the zoo (blackbox/methods/merge/zoo.py)
SEEDS = [42, 13, 87]
# cheapest and most informative first: a grid cut short still has the comparisons that matter
VARIANTS = ["base", "uniform", "best-single", "evo", "lorahub", "ties", "dare",
            "evo-no-sign", "evo-no-denoise", "evo-no-scale"]
# variants that read no user data and draw no random numbers: run once per task
DETERMINISTIC = {"ties"}


def scaled_config(args: argparse.Namespace) -> dict:
    """The recipe fields every cell shares (the scaled-down configuration)."""
    stage = {"optimizer": "cma", "popsize": args.popsize, "sigma0": 0.05}
    return {
        "user_examples": args.user_examples,
        "test_limit": args.test_limit,
        "stage1": {**stage, "evaluations": args.stage1},
        "stage2": {**stage, "evaluations": args.stage2},
        "lorahub": {"optimizer": "ng:NGOpt", "evaluations": args.lorahub, "popsize": 1},
        "l1": 0.05,
        "backend": {"kind": "local", "model": args.model, "adapters": args.zoo,
                    "dtype": args.dtype},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tasks", nargs="+", default=TASKS)
    ap.add_argument("--seeds", nargs="+", type=int, default=SEEDS)
    ap.add_argument("--variants", nargs="+", default=VARIANTS)
    ap.add_argument("--model", default="default")
    ap.add_argument("--zoo", default="zoo", help="adapter folder (default: the built zoo)")
    # fp32, not "auto": in bf16 the small loss differences between nearby mixtures that
    # CMA-ES ranks would be partly rounding (bf16 keeps ~3 significant digits)
    ap.add_argument("--dtype", default="float32", help="engine dtype (auto picks bf16 on "
                    "CPUs with native bf16)")
    # 48: at least 8 per class for trec's 6 classes (24 per class for sst-2), stratified
    ap.add_argument("--user-examples", type=int, default=48)
    ap.add_argument("--test-limit", type=int, default=None, help="default: the full test split")
    ap.add_argument("--stage1", type=int, default=100, help="stage-1 evaluations (paper: 400)")
    ap.add_argument("--stage2", type=int, default=200, help="stage-2 evaluations (paper: 800)")
    ap.add_argument("--lorahub", type=int, default=40, help="LoraHub steps (paper: 40)")
    ap.add_argument("--popsize", type=int, default=20)
    ap.add_argument("--runs", type=Path, default=REPO / "results" / "merge-runs")
    ap.add_argument("--lock", default=None,
                    help="hold this flock file per cell (not for the whole grid), so other "
                    "heavy jobs on a shared machine can run between cells")
    ap.add_argument("--stop-at", default=None,
                    help="UTC HH:MM: start no new cell after this time (the grid resumes)")
    args = ap.parse_args()

    from blackbox.api import merge
    from blackbox.grid import Cell, run_grid

    args.runs.mkdir(parents=True, exist_ok=True)
    cfg = scaled_config(args)

    def cell(task: str, seed: int, variant: str) -> Cell:
        def run(rd: Path) -> None:
            s = merge(task=task, variant=variant, seed=seed, run_dir=rd, progress=False,
                      output_dir=str(args.runs), name=rd.name, **cfg).summary
            test = s.get("test") or {}
            print(f"   test acc {test.get('accuracy')}  loss {test.get('loss')}  "
                  f"queries {s['usage']['queries']}", flush=True)
        return Cell(args.runs / f"{task}-s{seed}-{variant}", run)

    # seed-major: every task gets a first seed before any second one; variants that read no
    # user data and draw no random numbers run once per task (the first seed's stands for all)
    cells = [cell(task, seed, variant) for seed in args.seeds for task in args.tasks
             for variant in args.variants
             if not (variant in DETERMINISTIC and seed != args.seeds[0])]
    run_grid(cells, lock=args.lock, stop_at=args.stop_at, log=lambda m: print(m, flush=True))


if __name__ == "__main__":
    main()
