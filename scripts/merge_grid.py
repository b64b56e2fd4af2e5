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

A paper condition varied (fewer adapters, the paper's budget, more user examples) is the same
grid with one flag changed, in a runs folder named after the main one (``<runs>-<what>``),
which ``merge_report.py`` reads beside it, e.g.
``--runs results/merge-runs-6-adapters --variants evo lorahub --adapters NAME ...``.
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
        "user_seeds": args.user_seeds,
        "test_limit": args.test_limit,
        "stage1": {**stage, "evaluations": args.stage1},
        "stage2": {**stage, "evaluations": args.stage2},
        "lorahub": {"optimizer": "ng:NGOpt", "evaluations": args.lorahub, "popsize": 1},
        "l1": 0.05,
        "adapters": args.adapters,
        "backend": {"kind": "local", "model": args.model, "adapters": args.zoo,
                    "dtype": args.dtype},
    }


def _zoo_identity(manifest: dict) -> dict:
    """What tells two zoo builds apart: each adapter's spec and final training loss (a
    rebuild on another CPU trains other weights, and its losses differ)."""
    return {name: (a["spec"], round(a["final_loss"], 3))
            for name, a in manifest.get("adapters", {}).items()}


def same_adapters(part: dict, whole: dict) -> bool:
    """Whether every adapter of zoo manifest ``part`` is in ``whole`` and of the same build:
    a condition grid may run on a zoo built only as far as the adapters it merges."""
    mine, theirs = _zoo_identity(part), _zoo_identity(whole)
    return bool(mine) and all(theirs.get(name) == ident for name, ident in mine.items())


def keep_zoo_description(args: argparse.Namespace) -> None:
    """Copy the zoo's ``zoo.json`` next to the runs: the zoo lives in the user cache of the
    machine that built it, the runs are committed, and the report describes the zoo from this
    copy. A grid resumed against another build of the zoo is refused (cells measured on two
    zoos would be compared as if on one)."""
    import json

    from blackbox.methods.merge.zoo import default_zoo_dir

    folder = default_zoo_dir(args.model) if args.zoo == "zoo" else Path(args.zoo)
    built, kept = folder / "zoo.json", args.runs / "zoo.json"
    if not built.is_file():
        return  # the merge itself says how to build the zoo
    new = json.loads(built.read_text())
    if unknown := sorted(set(args.adapters or ()) - set(new.get("adapters", {}))):
        raise SystemExit(f"error: --adapters names {', '.join(unknown)}, not in the zoo in "
                         f"{folder} (it holds {', '.join(new.get('adapters', {}))})")
    if kept.is_file() and _zoo_identity(json.loads(kept.read_text())) != _zoo_identity(new):
        raise SystemExit(f"error: the zoo in {folder} is another build than the one the runs in "
                         f"{args.runs} were measured on ({kept}); pass --runs to a new folder "
                         "(or move those runs aside) to start the grid on this zoo")
    if not kept.is_file():
        kept.write_text(json.dumps(new, indent=2) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tasks", nargs="+", default=TASKS)
    ap.add_argument("--seeds", nargs="+", type=int, default=SEEDS)
    ap.add_argument("--variants", nargs="+", default=VARIANTS)
    ap.add_argument("--model", default="default")
    ap.add_argument("--zoo", default="zoo", help="adapter folder (default: the built zoo)")
    ap.add_argument("--adapters", nargs="+", default=None,
                    help="merge only these adapters of the zoo (default: all); for the "
                    "adapter-count condition, in a runs folder of its own")
    # fp32, not "auto": in bf16 the small loss differences between nearby mixtures that
    # CMA-ES ranks would be partly rounding (bf16 keeps ~3 significant digits)
    ap.add_argument("--dtype", default="float32", help="engine dtype (auto picks bf16 on "
                    "CPUs with native bf16)")
    # 48: at least 8 per class for trec's 6 classes (24 per class for sst-2), stratified
    ap.add_argument("--user-examples", type=int, default=48)
    ap.add_argument("--user-seeds", nargs="+", type=int, default=None,
                    help="draw the user examples from these seeds' 16-shot files (default: "
                    "the cell's seed): more than one seed's files hold, for the "
                    "user-example condition")
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
    keep_zoo_description(args)
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
