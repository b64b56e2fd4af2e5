"""Tables and plots of results/lmturk.md from the LMTurk grid's run directories.

Reads ``<runs>/<task>-s<seed>-<acquisition>/`` (summary.json, rounds.jsonl, recipe.yaml), as
written by scripts/lmturk_grid.py, and rewrites the part of results/lmturk.md between the
``generated`` markers (the hand-written text around it stays), plus one learning-curve plot
per task. Nothing here queries a model: every number comes from the run directories.

    .venv/bin/python scripts/lmturk_report.py [--runs results/lmturk-runs]
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from blackbox.stats import format_diff, paired_bootstrap  # noqa: E402

START, END = "<!-- generated:start -->", "<!-- generated:end -->"
ACQ_ORDER = ["random", "entropy", "least-confidence", "margin", "kmeans"]
TASK_ORDER = ["sst-2", "agnews", "trec", "bbc-news"]


def load_runs(root: Path) -> list[dict[str, Any]]:
    """Every finished run under ``root``."""
    runs = []
    for d in sorted(root.glob("*/summary.json")):
        rd = d.parent
        recipe = yaml.safe_load((rd / "recipe.yaml").read_text())
        rounds = [json.loads(x) for x in (rd / "rounds.jsonl").read_text().splitlines()]
        runs.append({"dir": rd, "recipe": recipe, "summary": json.loads(d.read_text()),
                     "rounds": rounds})
    return runs


def ms(values: list[float], digits: int = 3) -> str:
    """``mean ± sd`` (sd over seeds; just the value for one seed)."""
    v = [x for x in values if x is not None]
    if not v:
        return "—"
    if len(v) == 1:
        return f"{v[0]:.{digits}f}"
    return f"{np.mean(v):.{digits}f} ± {np.std(v, ddof=1):.{digits}f}"


def curve_at(rounds: list[dict[str, Any]], q: int) -> float:
    """Student accuracy after the last round that used at most ``q`` queries."""
    return [r["accuracy"] for r in rounds if r["queries"] <= q][-1]


def first_reach(curves: list[list[dict[str, Any]]], target: float) -> int | None:
    """Smallest query count at which the seed-mean curve reaches ``target``."""
    qs = sorted({r["queries"] for c in curves for r in c})
    for q in qs:
        if np.mean([curve_at(c, q) for c in curves]) >= target - 1e-12:
            return q
    return None


def task_section(task: str, runs: list[dict[str, Any]], plot_dir: Path) -> list[str]:
    by_acq: dict[str, list[dict[str, Any]]] = defaultdict(list)
    modes = {r["recipe"].get("label_mode", "soft") for r in runs}
    for r in runs:  # one curve per acquisition function (and label mode, when both ran)
        by_acq[_group(r, len(modes) > 1)].append(r)
    acqs = sorted(by_acq, key=lambda a: (ACQ_ORDER.index(a.split(" ")[0])
                                         if a.split(" ")[0] in ACQ_ORDER else 99, a))
    seeds = sorted({r["recipe"]["seed"] for r in runs})
    s0 = runs[0]["summary"]
    lines = [f"### {task}", "",
             f"Gold: {s0['gold']} examples; pool: {s0['pool']} ({s0['pool_source']}); "
             f"evaluation set: {s0['eval']}; seeds: {', '.join(map(str, seeds))}.", ""]
    # references: one value per seed (they do not depend on the acquisition function)
    per_seed: dict[int, dict[str, Any]] = {}
    for r in runs:
        per_seed.setdefault(r["recipe"]["seed"], r["summary"])
    refs = list(per_seed.values())
    we = [s["workers_eval"] for s in refs if s.get("workers_eval")]
    lines += ["| reference | accuracy | LLM queries |", "|---|---|---|",
              f"| student on the gold examples only | {ms([s['gold_only_accuracy'] for s in refs])}"
              " | 0 |",
              f"| student on gold labels for the whole pool (upper bound) | "
              f"{ms([s['upper_bound_accuracy'] for s in refs])} | 0 (needs {s0['pool']} "
              "human labels) |"]
    if we:
        m = s0["workers"]
        for j in range(m):
            lines.append(f"| worker {j + 1} alone, at test time | "
                         f"{ms([w['per_worker'][j] for w in we])} | 1 per item |")
        for rule in ("majority", "mean", "dawid-skene"):
            lines.append(f"| {m} workers, {rule}, at test time | {ms([w[rule] for w in we])} | "
                         f"{m} per item (~{np.mean([w['tokens_per_item'] for w in we]):.0f} "
                         "prompt tokens in all) |")
        lines.append("")
        lines.append(f"Workers scored on {we[0]['items']} items of the evaluation set per seed.")
    lines.append("")
    # learning curves
    budget = s0["query_budget"]
    marks = sorted({0, budget // 4, budget // 2, 3 * budget // 4, budget})
    lines += ["| acquisition | " + " | ".join(f"{q} queries" for q in marks)
              + " | label accuracy of the queried items |",
              "|---|" + "---|" * (len(marks) + 1)]
    for a in acqs:
        cells = [ms([curve_at(r["rounds"], q) for r in by_acq[a]]) for q in marks]
        lab = ms([r["summary"]["label_accuracy"].get(r["summary"]["aggregation"])
                  for r in by_acq[a]])
        lines.append(f"| {a} | " + " | ".join(cells) + f" | {lab} |")
    lines.append("")
    lines += paired_lines(by_acq, acqs)
    # the goal: reach random's final accuracy with at most half of its queries
    if "random" in by_acq:
        lines += goal_lines(by_acq, acqs)
    plot = plot_task(task, by_acq, acqs, refs, plot_dir)
    lines += [f"![{task} learning curves]({plot.relative_to(REPO / 'results')})", ""]
    return lines


def _group(run: dict[str, Any], by_mode: bool) -> str:
    acq = run["summary"]["acquisition"]
    return f"{acq} ({run['recipe'].get('label_mode', 'soft')} labels)" if by_mode else acq


# (label, the student's per-item record, the reference's), each a path into the summary
PAIRS = [("linear student − linear student on the gold examples only",
          ("correct",), ("gold_only_correct",)),
         ("fine-tuned student − fine-tuned student on the gold examples only",
          ("finetuned", "correct"), ("finetuned", "gold_only_correct")),
         ("linear student − the workers at test time", ("correct",),
          ("workers_eval", "correct")),
         ("fine-tuned student − the workers at test time", ("finetuned", "correct"),
          ("workers_eval", "correct"))]


def _at(summary: dict[str, Any], path: tuple[str, ...]) -> str | None:
    value: Any = summary
    for key in path:
        value = value.get(key) if isinstance(value, dict) else None
    return value if isinstance(value, str) else None


def paired_lines(by_acq: dict[str, list[dict[str, Any]]], acqs: list[str]) -> list[str]:
    """Paired differences on the same evaluation items, seeds pooled (the items of every
    seed side by side), with a 95% bootstrap interval over items."""
    rows = []
    for a in acqs:
        runs = sorted(by_acq[a], key=lambda r: r["recipe"]["seed"])
        for label, mine, theirs in PAIRS:
            got = [(_at(r["summary"], mine), _at(r["summary"], theirs)) for r in runs]
            if not got or any(x is None or y is None or len(x) != len(y) for x, y in got):
                continue
            base = "".join(y for _, y in got)  # type: ignore[misc]
            other = "".join(x for x, _ in got)  # type: ignore[misc]
            rows.append(f"| {a} | {label} | {format_diff(paired_bootstrap(base, other))} | "
                        f"{len(base)} ({len(runs)} seeds) |")
    if not rows:
        return []
    return ["Paired differences at the end of the budget, accuracy points [95% bootstrap "
            "interval over the evaluation items, seeds pooled]:", "",
            "| acquisition | comparison | difference | items |", "|---|---|---:|---:|",
            *rows, ""]


def goal_lines(by_acq: dict[str, list[dict[str, Any]]], acqs: list[str]) -> list[str]:
    """Does active learning reach random acquisition's final accuracy with <= 50% of its
    queries? Judged on the seed-mean curves."""
    rand_curves = [r["rounds"] for r in by_acq["random"]]
    target = float(np.mean([c[-1]["accuracy"] for c in rand_curves]))
    start = float(np.mean([c[0]["accuracy"] for c in rand_curves]))
    rand_q = int(np.mean([c[-1]["queries"] for c in rand_curves]))
    gain = {a: float(np.mean([r["rounds"][-1]["accuracy"] - r["rounds"][0]["accuracy"]
                              for r in by_acq[a]])) for a in acqs}
    lines = [f"Random acquisition's final accuracy: {target:.3f} after {rand_q} queries (seed "
             f"mean; the gold-only student at 0 queries: {start:.3f}). Final minus gold-only, "
             "per function: " + ", ".join(f"{a} {g:+.3f}" for a, g in gain.items()) + ".", ""]
    if target <= start:
        lines += ["*Goal not measurable here: with random acquisition the workers' labels did "
                  "not lift the student above the gold-only student, so every curve 'reaches' "
                  "random's final accuracy at 0 queries.*", ""]
        return lines
    lines += ["Queries each function needs to reach random's final accuracy (seed-mean curve):",
              ""]
    for a in acqs:
        if a == "random":
            continue
        q = first_reach([r["rounds"] for r in by_acq[a]], target)
        verdict = ("not reached" if q is None else
                   f"{q} queries ({q / rand_q:.0%} of random's) — "
                   + ("**goal met**" if q <= 0.5 * rand_q else "goal not met"))
        lines.append(f"- {a}: {verdict}")
    return [*lines, ""]


def plot_task(task: str, by_acq: dict[str, list[dict[str, Any]]], acqs: list[str],
              refs: list[dict[str, Any]], plot_dir: Path) -> Path:
    from blackbox.plots import Line, Panel, Series, draw

    panel = Panel(title=f"LMTurk on {task} (SmolLM2-135M workers), mean over seeds",
                  xlabel="LLM queries (workers x items)",
                  ylabel="student accuracy (evaluation set)", legend_size=7)
    for k, a in enumerate(acqs):
        curves = [r["rounds"] for r in by_acq[a]]
        qs = sorted({x["queries"] for c in curves for x in c})
        acc = np.array([[curve_at(c, q) for q in qs] for c in curves])
        mean = acc.mean(axis=0)
        band = None
        if len(curves) > 1:
            sd = acc.std(axis=0, ddof=1)
            band = (mean - sd, mean + sd)
        panel.series.append(Series(qs, mean, label=a, marker="o", color=f"C{k}", band=band))
    up = [s["upper_bound_accuracy"] for s in refs if s["upper_bound_accuracy"] is not None]
    if up:
        panel.lines.append(Line(float(np.mean(up)), label="upper bound (gold pool)", ls="--",
                                color="black"))
    we = [s["workers_eval"][s["aggregation"]] for s in refs if s.get("workers_eval")]
    if we:
        panel.lines.append(Line(float(np.mean(we)), ls=":", lw=1.2,
                                label=f"workers ({refs[0]['aggregation']}) at test time"))
    return draw([panel], plot_dir / f"lmturk-{task}.png", figsize=(6.4, 4.2), dpi=120)


def config_lines(runs: list[dict[str, Any]]) -> list[str]:
    r = runs[0]["recipe"]
    keys = ["shots", "workers", "demos_per_class", "demo_words", "query_words", "aggregation",
            "batch", "queries", "pool_limit", "eval_limit", "worker_eval_limit", "student_c",
            "label_mode", "features"]
    usage = [x["summary"]["usage"] for x in runs]
    paid = sum(u["by_verb"].get("label_logprobs", 0) for u in usage)
    logical = sum(x["summary"]["queries"] for x in runs)
    wall = sum(x["summary"]["run_wall_s"] for x in runs)
    return ["Configuration (recipes/lmturk-bench.yaml): "
            + ", ".join(f"`{k}={r.get(k)}`" for k in keys) + f"; backend `{r['backend']}`.",
            "",
            f"{len(runs)} runs. Annotation queries on the learning curves: {logical}; LLM calls "
            f"actually paid (worker answers not yet in the shared response cache, evaluation "
            f"of the workers included): {paid}; wall time of all runs: {wall / 60:.0f} min.", ""]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", default=str(REPO / "results" / "lmturk-runs"))
    ap.add_argument("--out", default=str(REPO / "results" / "lmturk.md"))
    args = ap.parse_args()
    runs = load_runs(Path(args.runs))
    if not runs:
        raise SystemExit(f"no finished runs under {args.runs}: run scripts/lmturk_grid.py")
    by_task: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in runs:
        by_task[r["summary"]["task"]].append(r)
    body = config_lines(runs)
    for task in [t for t in TASK_ORDER if t in by_task] + \
            sorted(t for t in by_task if t not in TASK_ORDER):
        body += task_section(task, by_task[task], REPO / "results" / "lmturk")
    generated = "\n".join([START, *body, END])
    out = Path(args.out)
    text = out.read_text() if out.is_file() else f"# LMTurk results\n\n{START}\n{END}\n"
    if START not in text or END not in text:
        text += f"\n{START}\n{END}\n"
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    out.write_text(head + generated + tail)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
