"""The MPD results grid: tasks × shots × seeds through ``bbx decode fit``, then the table.

Every cell is a real run (one run directory each, under ``--runs``); the table in
``results/mpd.md`` is built from those run directories, never from numbers typed in. Test
features per (task, template) are shared by every seed and shot through the response cache,
and the 1- and 4-shot splits are drawn from the shipped 16-shot ones, so the grid pays for
the 16-shot train/dev features of each seed and the test subset once.

    flock /tmp/bbx-heavy.lock .venv/bin/python scripts/mpd_grid.py            # full grid
    .venv/bin/python scripts/mpd_grid.py --report-only                       # table only
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))

TASKS = ["sst-2", "mr", "trec", "agnews", "sst-5"]
SEEDS = [13, 21, 42, 87, 100]
SHOTS = [1, 4, 16]
COMPARE = ["zero-shot", "zero-shot-cal", "dect", "mpd-mean", "mpd-nocal", "mpd-1word"]


def _done(runs: Path) -> dict[tuple[str, int, int, int | None], Path]:
    """Finished runs by (task, shots, seed, test_limit)."""
    out = {}
    for s in sorted(runs.glob("*/summary.json")):
        summ = json.loads(s.read_text())
        rec = (s.parent / "recipe.yaml").read_text()
        import yaml

        r = yaml.safe_load(rec)
        if summ.get("action") == "fit" and summ.get("status") != "failed":
            out[(r["task"], r["shots"], r["seed"], r.get("test_limit"))] = s.parent
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tasks", nargs="+", default=TASKS)
    ap.add_argument("--seeds", nargs="+", type=int, default=SEEDS)
    ap.add_argument("--shots", nargs="+", type=int, default=SHOTS)
    ap.add_argument("--test-limit", type=int, default=1000,
                    help="fixed test subset per task (same for every seed); 0 = full test set")
    # committed without their ledgers, predictions and decoder files (.gitignore)
    ap.add_argument("--runs", type=Path, default=REPO / "results" / "mpd-runs")
    ap.add_argument("--out", type=Path, default=REPO / "results" / "mpd.md")
    ap.add_argument("--report-only", action="store_true")
    ap.add_argument("--logprobs-from-hidden", action=argparse.BooleanOptionalAction,
                    default=True, help="read label-word log-probs off the hidden states "
                    "(one forward pass per example and prompt instead of two; same numbers)")
    args = ap.parse_args()
    limit = args.test_limit or None
    if not args.report_only:
        from blackbox.api import run_recipe
        from blackbox.backends.local import LocalBackend
        from blackbox.recipes import parse_recipe

        class Shared(LocalBackend):
            """One model for the whole grid: a run's end must not unload it."""

            def close(self) -> None:
                pass

        backend = Shared()
        done = _done(args.runs) if args.runs.is_dir() else {}
        # seeds outermost: a grid cut short still has every task and shot for some seeds
        for seed in args.seeds:
            for task in args.tasks:
                for shots in args.shots:
                    if (task, shots, seed, limit) in done:
                        continue
                    t0 = time.time()
                    recipe = parse_recipe({
                        "method": "decode", "task": task, "shots": shots, "seed": seed,
                        "test_limit": limit, "compare": COMPARE, "output_dir": str(args.runs),
                        "name": f"mpd-{task}-k{shots}-s{seed}",
                        "logprobs_from_hidden": args.logprobs_from_hidden,
                        # the shipped benchmark splits share a few texts with their test sets
                        # (TREC's "What is diabetes ?"): run, and let the report list them
                        "allow_overlap": True,
                        "backend": {"kind": "local"}})
                    res = run_recipe(recipe, backend=backend, progress=False)
                    v = res.summary["variants"]
                    print(f"{task:7s} k={shots:2d} seed={seed:3d}  "
                          + "  ".join(f"{n}={m['accuracy']:.3f}" for n, m in v.items())
                          + f"  ({time.time() - t0:.0f}s, paid {res.summary['usage']['queries']})",
                          flush=True)
    from mpd_report import write_report

    write_report(args.runs, args.out, limit, sys.argv)


if __name__ == "__main__":
    main()
