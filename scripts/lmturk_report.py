"""Tables and plots of results/lmturk.md from the LMTurk grid's run directories.

Reads ``<runs>/<task>-s<seed>-<acquisition>-<label mode>/`` (summary.json, rounds.jsonl,
recipe.yaml), as scripts/lmturk_grid.py writes them (the earlier grid's
``<task>-s<seed>-<acquisition>/`` read the same: each run's recipe names its cell), and
rewrites the part of ``--out`` between the ``generated`` markers (the hand-written text around
it stays), plus one learning-curve plot per task in the folder named after ``--out``
(``results/lmturk/``). Per task × acquisition × label mode, on the same evaluation items: the
linear and the fine-tuned student, each against the workers, against its gold-only
counterpart, and (linear) against the student of the workers' labels for the whole pool; soft
minus hard labels, and each acquisition function minus random; per seed and as the mean over
seeds, with 95% bootstrap intervals over the items, the verdicts they give, and the paper's
claim beside what was found. Nothing here queries a model: every number comes from the runs.

    .venv/bin/python scripts/lmturk_report.py [--runs results/lmturk-grid-runs]
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))

from blackbox.paths import portable  # noqa: E402
from blackbox.runs import iter_runs, machines_lines  # noqa: E402
from blackbox.stats import format_diff, paired_bootstrap, pooled_bootstrap, verdict  # noqa: E402

START, END = "<!-- generated:start -->", "<!-- generated:end -->"
ACQ_ORDER = ["random", "entropy", "least-confidence", "margin", "kmeans"]
TASK_ORDER = ["sst-2", "agnews", "trec", "bbc-news"]
MODES = ["soft", "hard"]
VERDICTS = ("beats", "is not distinguishable from", "loses to")


def load_runs(root: Path) -> list[dict[str, Any]]:
    """Every finished distill run under ``root``, keyed by its cell (task, seed, acquisition,
    label mode), with its learning curve."""
    runs = []
    for r in iter_runs(root):
        if r["status"] != "finished" or r["recipe"].get("method") != "distill":
            continue
        s, rd = r["summary"], Path(r["path"])
        rounds = [json.loads(x) for x in (rd / "rounds.jsonl").read_text().splitlines()]
        runs.append({"dir": rd, "recipe": r["recipe"], "summary": s, "rounds": rounds,
                     "task": s["task"], "seed": r["recipe"]["seed"], "acq": s["acquisition"],
                     "mode": r["recipe"].get("label_mode", "soft")})
    return runs


def ms(values: list[float | None], digits: int = 3) -> str:
    """``mean ± sd`` (sd over seeds; just the value for one seed)."""
    v = [x for x in values if x is not None]
    if not v:
        return "—"
    if len(v) == 1:
        return f"{v[0]:.{digits}f}"
    return f"{np.mean(v):.{digits}f} ± {np.std(v, ddof=1):.{digits}f}"


def _at(summary: dict[str, Any], path: tuple[str, ...]) -> Any:
    value: Any = summary
    for key in path:
        value = value.get(key) if isinstance(value, dict) else None
    return value


def _sorted_cells(runs: list[dict[str, Any]]) -> list[tuple[str, str]]:
    cells = {(r["acq"], r["mode"]) for r in runs}
    return sorted(cells, key=lambda c: (ACQ_ORDER.index(c[0]) if c[0] in ACQ_ORDER else 99,
                                        c[0], MODES.index(c[1])))


# -- paired comparisons -------------------------------------------------------------------

#: within one run: (table row, sentence subject, sentence object, the subject's per-item
#: record, the object's)
WITHIN = [
    ("linear − workers", "the linear student", "the workers", ("correct",),
     ("workers_eval", "correct")),
    ("fine-tuned − workers", "the fine-tuned student", "the workers", ("finetuned", "correct"),
     ("workers_eval", "correct")),
    ("linear − linear on gold only", "the linear student", "the linear student on gold only",
     ("correct",), ("gold_only_correct",)),
    ("fine-tuned − fine-tuned on gold only", "the fine-tuned student",
     "the fine-tuned student on gold only", ("finetuned", "correct"),
     ("finetuned", "gold_only_correct")),
    ("linear: budget − whole pool", "the linear student (active learning)",
     "the linear student of the whole pool", ("correct",), ("whole_pool", "correct")),
]
#: across two runs of one seed: (row prefix, the student, its per-item record)
STUDENTS = [("linear", "the linear student", ("correct",)),
            ("fine-tuned", "the fine-tuned student", ("finetuned", "correct"))]


def _compare(row: str, subject: str, obj: str, cell: str, pairs: dict[int, tuple[str, str]],
             same_items: bool) -> dict[str, Any]:
    per = {sd: paired_bootstrap(a, b) for sd, (a, b) in sorted(pairs.items())}
    pooled = (pooled_bootstrap([pairs[sd] for sd in per], same_items) if len(per) > 1
              else next(iter(per.values())))
    return {"row": row, "subject": subject, "object": obj, "cell": cell, "seeds": per,
            "pooled": pooled}


def comparisons(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every paired comparison of one task's runs: each :data:`WITHIN` pair per (acquisition,
    label mode); soft minus hard labels per acquisition; each acquisition minus random per
    label mode. ``seeds``: seed -> the difference on that seed's evaluation items;
    ``pooled``: their mean over seeds (items drawn once for every seed where the seeds share
    the evaluation set, per seed where each seed has its own)."""
    same = runs[0]["summary"]["pool_source"] != "seeded half of the test split"
    by = {(r["seed"], r["acq"], r["mode"]): r["summary"] for r in runs}
    cells = _sorted_cells(runs)
    out = []

    def pair(x: Any, y: Any) -> bool:
        return isinstance(x, str) and isinstance(y, str) and len(x) == len(y) > 0

    for row, subject, obj, mine, theirs in WITHIN:
        for acq, mode in cells:
            got = {sd: (_at(s, theirs), _at(s, mine)) for (sd, a, m), s in by.items()
                   if (a, m) == (acq, mode)}
            got = {sd: p for sd, p in got.items() if pair(*p)}
            if got:
                out.append(_compare(row, subject, obj, f"{acq}, {mode}", got, same))
    for short, subject, path in STUDENTS:
        for acq in dict.fromkeys(a for a, _ in cells):
            got = {sd: (_at(h, path), _at(s, path)) for (sd, a, m), s in by.items()
                   if a == acq and m == "soft" and (h := by.get((sd, a, "hard")))}
            got = {sd: p for sd, p in got.items() if pair(*p)}
            if got:
                out.append(_compare(f"{short}: soft − hard", f"{subject} on soft labels",
                                    f"{subject} on hard labels", acq, got, same))
        for mode in dict.fromkeys(m for _, m in cells):
            for acq in dict.fromkeys(a for a, _ in cells):
                if acq == "random":
                    continue
                got = {sd: (_at(rnd, path), _at(s, path)) for (sd, a, m), s in by.items()
                       if (a, m) == (acq, mode) and (rnd := by.get((sd, "random", mode)))}
                got = {sd: p for sd, p in got.items() if pair(*p)}
                if got:
                    out.append(_compare(f"{short}: acquisition − random",
                                        f"{subject} with active learning",
                                        f"{subject} with random acquisition",
                                        f"{acq} − random, {mode}", got, same))
    return out


def against_comparisons(runs: list[dict[str, Any]], base: list[dict[str, Any]], name: str
                        ) -> list[dict[str, Any]]:
    """One task's students and workers minus the same cell's in another grid (``base``,
    called ``name``: the same seeds, items and labels, another recipe setting)."""
    same = runs[0]["summary"]["pool_source"] != "seeded half of the test split"
    theirs = {(r["task"], r["seed"], r["acq"], r["mode"]): r["summary"] for r in base}
    who = [*STUDENTS, ("workers", "the workers", ("workers_eval", "correct"))]
    out = []
    for short, subject, path in who:
        for acq, mode in _sorted_cells(runs):
            got = {r["seed"]: (_at(b, path), _at(r["summary"], path)) for r in runs
                   if (r["acq"], r["mode"]) == (acq, mode)
                   and (b := theirs.get((r["task"], r["seed"], acq, mode)))}
            got = {sd: p for sd, p in got.items()
                   if all(isinstance(x, str) for x in p) and len(p[0]) == len(p[1]) > 0}
            if got:
                out.append(_compare(f"{short}: this grid − {name}", subject,
                                    f"{subject} of {name}", f"{acq}, {mode}", got, same))
    return out


def paired_lines(comps: list[dict[str, Any]], n_eval: list[int], same: bool) -> list[str]:
    """The table of one task's comparisons: a column per seed, the mean over seeds and its
    verdict."""
    if not comps:
        return []
    seeds = sorted({sd for c in comps for sd in c["seeds"]})
    items = ("the same items for every seed" if same else
             "each seed's own (a seeded half of the test split), resampled per seed")
    out = ["Paired differences at the end of the budget, accuracy points [95% bootstrap "
           f"interval over the {'/'.join(map(str, n_eval))} evaluation items per seed, "
           f"{items}; 10,000 resamples]:", "",
           "| comparison | cell | " + " | ".join(f"s{s}" for s in seeds)
           + " | mean over seeds | verdict |", "|---|---|" + "---:|" * (len(seeds) + 1)
           + "---|"]
    for c in comps:
        cols = [format_diff(c["seeds"][sd]) if sd in c["seeds"] else "–" for sd in seeds]
        pooled = format_diff(c["pooled"]) if len(c["seeds"]) > 1 else "–"
        out.append(f"| {c['row']} | {c['cell']} | " + " | ".join(cols)
                   + f" | {pooled} | {verdict(c['pooled'])} |")
    return [*out, ""]


def verdict_lines(task: str, comps: list[dict[str, Any]]) -> list[str]:
    """One sentence per comparison: the cells grouped by the verdict their interval gives."""
    out = []
    for subject, obj in dict.fromkeys((c["subject"], c["object"]) for c in comps):
        mine = [c for c in comps if (c["subject"], c["object"]) == (subject, obj)]
        n = max(len(c["seeds"]) for c in mine)
        parts = []
        for word in VERDICTS:
            cells = [f"{c['cell']} ({format_diff(c['pooled'])})" for c in mine
                     if verdict(c["pooled"]) == word]
            if cells:
                parts.append(f"{word} {obj} in {len(cells)} of {len(mine)} cells: "
                             + ", ".join(cells))
        over = f"mean over {n} seeds" if n > 1 else "one seed"
        out.append(f"- {task}: {subject} " + "; ".join(parts) + f" ({over}).")
    return [*out, ""] if out else []


def claim_lines(all_comps: dict[str, list[dict[str, Any]]], runs: list[dict[str, Any]]
                ) -> list[str]:
    """The LMTurk paper's claim, and what the grid found for it, from the verdicts."""
    def count(subject: str, obj: str) -> tuple[str, str]:
        cs = [(t, c) for t, comps in all_comps.items() for c in comps
              if (c["subject"], c["object"]) == (subject, obj)]
        if not cs:
            return "not measured (no run recorded both)", "0 of 0"
        words = [verdict(c["pooled"]) for _, c in cs]
        losses = [f"{t} {c['cell']}" for t, c in cs if verdict(c["pooled"]) == "loses to"]
        losses = [x.replace(", ", "/") for x in losses]
        return (f"beats {obj} in {words.count('beats')} of {len(cs)} cells (task × acquisition "
                f"× labels, mean over seeds), is not distinguishable in "
                f"{words.count('is not distinguishable from')}, loses in "
                f"{words.count('loses to')}" + (f" ({', '.join(losses)})" if losses else ""),
                f"{len(cs) - len(losses)} of {len(cs)}")

    lin, lin_ok = count("the linear student", "the workers")
    ft, ft_ok = count("the fine-tuned student", "the workers")
    gold, _ = count("the linear student", "the linear student on gold only")
    ft_gold, _ = count("the fine-tuned student", "the fine-tuned student on gold only")
    whole, _ = count("the linear student (active learning)",
                     "the linear student of the whole pool")
    s = runs[0]["summary"]
    feats = "/".join(sorted({"MiniLM" if r["summary"]["features"] == "minilm" else
                             f"{r['summary']['features']}" for r in runs}))
    pool_q = sorted({r["summary"]["whole_pool"]["queries"] for r in runs
                     if r["summary"].get("whole_pool")})
    return [
        "**The paper's claim beside what was found.** *Paper* (Zhao et al. 2022, LMTurk: "
        "few-shot learners as crowdsourcing workers): a small model trained on the labels of "
        "few-shot LLM workers approaches or exceeds the workers' own accuracy. *Found*:", "",
        f"- the linear student (logistic regression on frozen {feats} features) {lin}; it is "
        f"not below the workers in {lin_ok} cells;",
        f"- the fine-tuned student (MiniLM fine-tuned end to end) {ft}; it is not below the "
        f"workers in {ft_ok} cells;",
        f"- what the workers' labels add: the linear student {gold}; the fine-tuned student "
        f"{ft_gold};",
        f"- active learning ({s['query_budget']} annotation queries) against the workers "
        f"labelling the whole pool ({'/'.join(map(str, pool_q)) or 'not run'} queries): the "
        f"linear student {whole}.", ""]


# -- learning curves ----------------------------------------------------------------------

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


def _group(run: dict[str, Any], by_mode: bool) -> str:
    return f"{run['acq']} ({run['mode']} labels)" if by_mode else run["acq"]


def goal_lines(by_acq: dict[str, list[dict[str, Any]]], acqs: list[str],
               rand: str) -> list[str]:
    """Does active learning reach random acquisition's final accuracy with <= 50% of its
    queries? Judged on the seed-mean curves."""
    rand_curves = [r["rounds"] for r in by_acq[rand]]
    target = float(np.mean([c[-1]["accuracy"] for c in rand_curves]))
    start = float(np.mean([c[0]["accuracy"] for c in rand_curves]))
    rand_q = int(np.mean([c[-1]["queries"] for c in rand_curves]))
    acqs = [a for a in acqs if a.split(" ")[1:] == rand.split(" ")[1:]]  # its label mode
    gain = {a: float(np.mean([r["rounds"][-1]["accuracy"] - r["rounds"][0]["accuracy"]
                              for r in by_acq[a]])) for a in acqs}
    lines = [f"{rand}: final accuracy {target:.3f} after {rand_q} queries (seed mean; the "
             f"gold-only student at 0 queries: {start:.3f}). Final minus gold-only, per curve: "
             + ", ".join(f"{a} {g:+.3f}" for a, g in gain.items()) + ".", ""]
    if target <= start:
        return [*lines, "*Goal (random's final accuracy in at most half its queries) not "
                "measurable here: with random acquisition the workers' labels did not lift "
                "the student above the gold-only student, so every curve 'reaches' random's "
                "final accuracy at 0 queries.*", ""]
    if len(acqs) < 2:
        return lines
    lines += [f"Queries each curve needs to reach {rand}'s final accuracy (seed-mean curve):",
              ""]
    for a in acqs:
        if a == rand:
            continue
        q = first_reach([r["rounds"] for r in by_acq[a]], target)
        lines.append(f"- {a}: " + ("not reached" if q is None else
                                   f"{q} queries ({q / rand_q:.0%} of random's) — "
                                   + ("**goal met**" if q <= 0.5 * rand_q else "goal not met")))
    return [*lines, ""]


def plot_task(task: str, by_acq: dict[str, list[dict[str, Any]]], acqs: list[str],
              refs: list[dict[str, Any]], plot_dir: Path) -> Path:
    from blackbox.plots import Line, Panel, Series, draw

    panel = Panel(title=f"LMTurk on {task}, mean over seeds",
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
    plot_dir.mkdir(parents=True, exist_ok=True)
    return draw([panel], plot_dir / f"lmturk-{task}.png", figsize=(6.4, 4.2), dpi=120)


# -- one task -----------------------------------------------------------------------------

def reference_lines(runs: list[dict[str, Any]]) -> list[str]:
    """What does not depend on the acquisition function or the label mode: one value per
    seed (the gold-only students, the upper bound, the workers on the evaluation set)."""
    per_seed: dict[int, dict[str, Any]] = {}
    for r in runs:
        per_seed.setdefault(r["seed"], r["summary"])
    refs = list(per_seed.values())
    s0 = refs[0]
    lines = ["| reference | accuracy | LLM queries |", "|---|---|---|",
             f"| linear student on the gold examples only | "
             f"{ms([s['gold_only_accuracy'] for s in refs])} | 0 |"]
    ft = [s["finetuned"] for s in refs if s.get("finetuned")]
    if ft:
        lines.append(f"| fine-tuned student on the gold examples only | "
                     f"{ms([f['gold_only_accuracy'] for f in ft])} | 0 |")
    lines.append(f"| linear student on gold labels for the whole pool (upper bound) | "
                 f"{ms([s['upper_bound_accuracy'] for s in refs])} | 0 (needs {s0['pool']} "
                 "human labels) |")
    we = [s["workers_eval"] for s in refs if s.get("workers_eval")]
    if we:
        m = s0["workers"]
        for j in range(m):
            lines.append(f"| worker {j + 1} alone, at test time | "
                         f"{ms([w['per_worker'][j] for w in we])} | 1 per item |")
        for rule in ("majority", "mean", "dawid-skene"):
            lines.append(f"| {m} workers, {rule}, at test time | {ms([w[rule] for w in we])} | "
                         f"{m} per item (~{np.mean([w['tokens_per_item'] for w in we]):.0f} "
                         "prompt tokens in all) |")
        lines += ["", f"Workers scored on {'/'.join(sorted({str(w['items']) for w in we}))} "
                  "items of the evaluation set per seed"
                  + (" (the student's items: paired below)." if all(w.get("correct") for w in we)
                     else " (a subset: not paired with the student).")]
    return [*lines, ""]


def accuracy_lines(runs: list[dict[str, Any]]) -> list[str]:
    """Per (acquisition, label mode), mean ± sd over seeds: the two students, the workers on
    the same items, the whole-pool reference."""
    agg = runs[0]["summary"]["aggregation"]
    lines = ["| acquisition | labels | linear student | fine-tuned student | workers "
             f"({agg}) | linear student of the whole pool | annotation queries | seeds |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    for acq, mode in _sorted_cells(runs):
        ss = [r["summary"] for r in runs if (r["acq"], r["mode"]) == (acq, mode)]
        lines.append(
            f"| {acq} | {mode} | {ms([s['accuracy'] for s in ss])} | "
            f"{ms([_at(s, ('finetuned', 'accuracy')) for s in ss])} | "
            f"{ms([_at(s, ('workers_eval', agg)) for s in ss])} | "
            f"{ms([_at(s, ('whole_pool', 'accuracy')) for s in ss])} | "
            f"{np.mean([s['queries'] for s in ss]):.0f} | {len(ss)} |")
    return [*lines, ""]


def balance_lines(runs: list[dict[str, Any]]) -> list[str]:
    """Class shares of the labels the student learned from, against the gold labels of the
    same items (``label_noise.jsonl``: every labelled item, its aggregated label and gold):
    a worker biased toward one class shows here, and a student that learns the bias too."""
    rows: dict[str, list[dict[str, Any]]] = defaultdict(list)
    seen = set()
    for r in runs:  # the label modes share the answers: one (acquisition, seed) counts once
        f = r["dir"] / "label_noise.jsonl"
        if (r["acq"], r["seed"]) not in seen and f.is_file():
            seen.add((r["acq"], r["seed"]))
            rows[r["acq"]] += [json.loads(x) for x in f.read_text().splitlines()]
    if not rows:
        return []
    classes = sorted({x["gold"] for xs in rows.values() for x in xs})
    lines = ["Class shares of the labelled items (all seeds): the workers' aggregated label "
             "against the gold label of the same items.", "",
             "| acquisition | items | " + " | ".join(f"{c}: workers / gold" for c in classes)
             + " |", "|---|---:|" + "---:|" * len(classes)]
    for acq in sorted(rows, key=lambda a: ACQ_ORDER.index(a) if a in ACQ_ORDER else 99):
        xs = rows[acq]
        cells = [f"{sum(x['aggregated'] == c for x in xs) / len(xs):.2f} / "
                 f"{sum(x['gold'] == c for x in xs) / len(xs):.2f}" for c in classes]
        lines.append(f"| {acq} | {len(xs)} | " + " | ".join(cells) + " |")
    return [*lines, ""]


def task_section(task: str, runs: list[dict[str, Any]], plot_dir: Path, md_dir: Path,
                 labels: dict[str, Any] | None = None,
                 against: tuple[str, list[dict[str, Any]]] | None = None
                 ) -> tuple[list[str], list[dict[str, Any]]]:
    """The task's tables, sentences and plot; and its comparisons (for the claim).
    ``labels``: scripts/lmturk_labels.py's output, whose table for the task goes after the
    paired differences."""
    by_mode = len({r["mode"] for r in runs}) > 1
    by_acq: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in runs:  # one curve per acquisition function (and label mode, when both ran)
        by_acq[_group(r, by_mode)].append(r)
    acqs = [_group({"acq": a, "mode": m}, by_mode) for a, m in _sorted_cells(runs)]
    seeds = sorted({r["seed"] for r in runs})
    s0 = runs[0]["summary"]
    n_eval = sorted({r["summary"]["eval"] for r in runs})
    same = s0["pool_source"] != "seeded half of the test split"
    lines = [f"### {task}", "",
             f"Gold: {s0['gold']} examples; pool: {s0['pool']} ({s0['pool_source']}); "
             f"evaluation set: {'/'.join(map(str, n_eval))} items per seed "
             f"({'the same for every seed' if same else 'the other half'}); seeds: "
             f"{', '.join(map(str, seeds))}.", ""]
    if all(r["summary"].get("stopped") == "pool exhausted" for r in runs):
        # then acquisition cannot matter: say so, or its "not distinguishable" rows read as
        # a finding about active learning
        queries = sorted({r["summary"]["queries"] for r in runs})
        lines += [f"The budget outlasts this pool: every run stopped with the pool exhausted "
                  f"after labelling all {s0['pool']} items "
                  f"({'/'.join(map(str, queries))} of {s0['query_budget']} queries), so every "
                  "acquisition function ends on the same labelled set and active learning is "
                  "the whole-pool reference. The linear student is then the same; the "
                  "fine-tuned one differs only by the order its items came in.", ""]
    lines += reference_lines(runs)
    lines += accuracy_lines(runs)
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
    lines += balance_lines(runs)
    comps = comparisons(runs)
    lines += paired_lines(comps, n_eval, same)
    lines += verdict_lines(task, comps)
    if against is not None:
        vs = against_comparisons(runs, [r for r in against[1] if r["task"] == task],
                                 against[0])
        if vs:
            lines += [f"Against {against[0]}, the same cells:", ""]
            lines += paired_lines(vs, n_eval, same)[2:]  # the header said it above
            lines += verdict_lines(task, vs)
    if labels is not None:
        from lmturk_labels import section_lines  # scripts/ is on sys.path

        lines += section_lines(labels, task)
    for rand in [a for a in acqs if a.split(" ")[0] == "random"]:
        lines += goal_lines(by_acq, acqs, rand)
    refs = list({r["seed"]: r["summary"] for r in runs}.values())
    plot = plot_task(task, by_acq, acqs, refs, plot_dir)
    lines += [f"![{task} learning curves]({plot.relative_to(md_dir)})", ""]
    return lines, comps


# -- the whole file -----------------------------------------------------------------------

def recipe_path(runs: list[dict[str, Any]]) -> Path:
    """The grid's recipe, by the runs' name (``lmturk-grid``: recipes/lmturk-grid.yaml)."""
    name = runs[0]["recipe"].get("name") or "lmturk-grid"
    path = REPO / "recipes" / f"{name}.yaml"
    return path if path.is_file() else REPO / "recipes" / "lmturk-grid.yaml"


def reproduce(runs: list[dict[str, Any]], runs_dir: Path, recipe: Path,
              report_args: str, labels: bool = False) -> list[str]:
    """The grid command that makes these runs (its ``--set`` overrides read back from the
    runs' recipes against the grid recipe with each cell's own settings), and the report's."""
    from blackbox.recipes import load_recipe
    from blackbox.recipes.loader import overrides_between

    extra: set[str] = set()
    for r in runs:
        cell = [f"task={r['task']}", f"seed={r['seed']}", f"acquisition={r['acq']}",
                f"label_mode={r['mode']}"]
        want = yaml.safe_load(yaml.safe_dump(load_recipe(recipe, cell).model_dump(mode="json")))
        extra |= set(overrides_between(want, r["recipe"], skip=("output_dir", "cache_dir")))
    keys = [x.partition("=")[0] for x in extra]
    mixed = sorted({k for k in keys if keys.count(k) > 1})
    modes = [m for m in MODES if any(r["mode"] == m for r in runs)]
    tasks = [t for t in TASK_ORDER if any(r["task"] == t for r in runs)]
    tasks += sorted({r["task"] for r in runs} - set(tasks))
    acqs = [a for a in ACQ_ORDER if any(r["acq"] == a for r in runs)]
    grid = (f".venv/bin/python scripts/lmturk_grid.py --recipe {portable(recipe)} --out "
            f"{portable(runs_dir)} --tasks {' '.join(tasks)} --seeds "
            + " ".join(map(str, sorted({r["seed"] for r in runs})))
            + f" --acquisitions {' '.join(acqs)} --label-modes {' '.join(modes)}"
            + "".join(f" --set {shlex.quote(x)}" for x in sorted(extra))
            + " --lock /tmp/bbx-heavy.lock")
    note = (["", f"(The cells differ in {', '.join(mixed)}: each run's recipe.yaml has its "
             "own.)"] if mixed else [])
    return ["Reproduce (the grid skips finished cells and resumes unfinished ones):", "",
            "```bash", grid,
            *([f".venv/bin/python scripts/lmturk_labels.py --runs {portable(runs_dir)}"
               "  # the label-quality rows: no LLM query"] if labels else []),
            f".venv/bin/python scripts/lmturk_report.py {report_args}", "```",
            *note, ""]


def config_lines(runs: list[dict[str, Any]], recipe: Path) -> list[str]:
    r = runs[0]["recipe"]
    keys = ["shots", "workers", "demos_per_class", "demo_words", "query_words", "aggregation",
            "batch", "queries", "pool_limit", "eval_limit", "worker_eval_limit", "whole_pool",
            "student", "finetune_epochs", "student_c", "features"]
    usage = [x["summary"]["usage"] for x in runs]
    paid = sum(u["by_verb"].get("label_logprobs", 0) for u in usage)
    logical = sum(x["summary"]["queries"] for x in runs)
    wall = sum(x["summary"]["run_wall_s"] for x in runs)
    overlaps = sorted({f"{x['task']} s{x['seed']}: {o['count']} of {o['of']} {o['held_out']} "
                       f"texts also in the {o['fit']} (e.g. {o['example'][:40]!r})"
                       for x in runs for o in (x["summary"].get("notes") or {}).get("overlap", [])})
    shared = ([f"Runs that went on with texts shared between the fit and held-out sets "
               f"(allow_overlap; from their notes): {'; '.join(overlaps)}.", ""]
              if overlaps else [])
    return [f"Configuration ({portable(recipe)}): "
            + ", ".join(f"`{k}={r.get(k)}`" for k in keys) + f"; backend `{r['backend']}`.",
            "",
            f"{len(runs)} runs. Annotation queries on the learning curves: {logical}; LLM calls "
            f"actually paid (worker answers not yet in the shared response cache; the workers "
            f"on the evaluation set and on the whole pool included): {paid}; wall time of all "
            f"runs: {wall / 60:.0f} min.", "", *shared]


def render(runs: list[dict[str, Any]], plot_dir: Path, md_dir: Path,
           reproduce_lines: list[str], recipe: Path,
           labels: dict[str, Any] | None = None,
           against: tuple[str, list[dict[str, Any]]] | None = None) -> list[str]:
    by_task: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in runs:
        by_task[r["task"]].append(r)
    sections, comps = [], {}
    for task in [t for t in TASK_ORDER if t in by_task] + \
            sorted(t for t in by_task if t not in TASK_ORDER):
        lines, comps[task] = task_section(task, by_task[task], plot_dir, md_dir, labels,
                                          against)
        sections += lines
    hosts = machines_lines([(r["dir"], f"{r['task']} s{r['recipe']['seed']}") for r in runs])
    return [*config_lines(runs, recipe), *hosts, *reproduce_lines, *claim_lines(comps, runs),
            *sections]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=Path, default=REPO / "results" / "lmturk-grid-runs")
    ap.add_argument("--out", type=Path, default=REPO / "results" / "lmturk.md",
                    help="the generated part goes between its markers; the plots into the "
                    "folder of the same name (results/lmturk/)")
    ap.add_argument("--recipe", type=Path, default=None,
                    help="the grid's recipe (default: recipes/<the runs' name>.yaml)")
    ap.add_argument("--against", type=Path, default=None,
                    help="another grid's runs: each cell here minus the same cell there")
    args = ap.parse_args()
    runs = load_runs(args.runs)
    if not runs:
        raise SystemExit(f"no finished runs under {args.runs}: run scripts/lmturk_grid.py")
    recipe = args.recipe or recipe_path(runs)
    out = args.out
    report_args = f"--runs {portable(args.runs)} --out {portable(out)}" + (
        f" --recipe {portable(args.recipe)}" if args.recipe else "")
    quality = args.runs / "label-quality.json"  # scripts/lmturk_labels.py's, if it ran
    labels = json.loads(quality.read_text()) if quality.is_file() else None
    against = None if args.against is None else (
        f"the grid in {portable(args.against)}", load_runs(args.against))
    if args.against is not None:
        report_args += f" --against {portable(args.against)}"
    body = render(runs, out.parent / out.stem, out.parent,
                  reproduce(runs, args.runs, recipe, report_args, labels is not None), recipe,
                  labels, against)
    generated = "\n".join([START, *body, END])
    text = out.read_text() if out.is_file() else f"# LMTurk results\n\n{START}\n{END}\n"
    if START not in text or END not in text:
        text += f"\n{START}\n{END}\n"
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    out.write_text(head + generated + tail)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
