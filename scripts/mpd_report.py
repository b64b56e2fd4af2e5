"""Build ``results/mpd.md`` (+ ``results/mpd-grid.json``, ``results/mpd.png``) from the MPD
grid's run directories. Called by ``scripts/mpd_grid.py``; runnable alone:

    .venv/bin/python scripts/mpd_report.py [RUNS_DIR]
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from blackbox.paths import portable  # noqa: E402
from blackbox.runs import machines_lines  # noqa: E402

METHODS = [("zero-shot", "zero-shot"), ("zero-shot-cal", "calibrated zero-shot"),
           ("dect", "DecT"), ("mpd", "MPD"),
           ("mpd-mean", "MPD mean-pool"), ("mpd-nocal", "MPD no-calib"),
           ("mpd-1word", "MPD 1 word")]
TASK_ORDER = ["sst-2", "mr", "trec", "agnews", "sst-5"]


def collect(runs: Path) -> list[dict]:
    """One row per finished fit run: task, shots, seed, per-variant accuracy and fit time."""
    rows = []
    for s in sorted(runs.glob("*/summary.json")):
        summ = json.loads(s.read_text())
        if summ.get("action") != "fit":
            continue
        r = yaml.safe_load((s.parent / "recipe.yaml").read_text())
        manifest = json.loads((s.parent / "manifest.json").read_text())
        rows.append({
            "run": s.parent.name, "task": r["task"], "shots": r["shots"], "seed": r["seed"],
            "test_limit": r.get("test_limit"), "n_eval": summ["n_eval"],
            "backend": manifest["backend"]["fingerprint"],
            "dtype": (r.get("backend") or {}).get("dtype", "auto"),
            "cpu": manifest.get("host", {}).get("cpu"),
            "cpu_units": manifest.get("host", {}).get("cpu_units"),
            "neighbours_route": summ.get("notes", {}).get("label_word_neighbours"),
            "logprobs_from_hidden": bool(r.get("logprobs_from_hidden")),
            "variants": {k: {"accuracy": v["accuracy"], "fit_s": v.get("fit_s", 0.0),
                             "queries_per_example": v["queries_per_example"],
                             "cal_weight": v.get("cal_weight"), "correct": v.get("correct")}
                         for k, v in summ["variants"].items()},
            "run_wall_s": summ["run_wall_s"], "paid_queries": summ["usage"]["queries"],
            "overlap": sum(o["count"] for o in summ.get("notes", {}).get("overlap", [])),
        })
    return rows


def _cell(xs: list[float]) -> str:
    if not xs:
        return "–"
    a = 100 * np.asarray(xs)
    return f"{a.mean():.1f} ± {a.std(ddof=1) if len(a) > 1 else 0.0:.1f}"


def paired_table(by: dict, tasks: list[str], shots: list[int], other: str) -> list[str]:
    """MPD minus ``other`` per (task, shots) and seed, on the same test items: points with a
    95% bootstrap interval over the items."""
    from blackbox.stats import format_diff, paired_bootstrap

    seeds = sorted({r["seed"] for rs in by.values() for r in rs})
    out = ["| task | shots | " + " | ".join(f"s{s}" for s in seeds) + " |",
           "|---|---|" + "---:|" * len(seeds)]
    for t in tasks:
        for k in shots:
            per = {r["seed"]: r["variants"] for r in by.get((t, k), [])}
            cols = []
            for sd in seeds:
                v = per.get(sd, {})
                a, b = (v.get(other) or {}).get("correct"), (v.get("mpd") or {}).get("correct")
                cols.append(format_diff(paired_bootstrap(a, b)) if a and b else "–")
            if any(c != "–" for c in cols):
                out.append(f"| {t} | {k} | " + " | ".join(cols) + " |")
    return out if len(out) > 2 else []


def write_report(runs: Path, out: Path, limit: int | None, argv: list[str]) -> None:
    """Write the markdown table, the per-run JSON and the plot."""
    # runs on another test subset share the folder (a larger --test-limit reuses the
    # features): report only those scored on the subset asked for
    rows = [r for r in collect(runs) if r["test_limit"] == limit]
    if not rows:
        raise SystemExit(f"no finished MPD runs with test limit {limit} under {runs}")
    by = defaultdict(list)
    for r in rows:
        by[(r["task"], r["shots"])].append(r)
    tasks = [t for t in TASK_ORDER if any(k[0] == t for k in by)]
    shots = sorted({k[1] for k in by})
    lines = ["| task | shots | seeds | " + " | ".join(n for _, n in METHODS) + " |",
             "|---|---|---|" + "---|" * len(METHODS)]
    wins = []
    for t in tasks:
        for k in shots:
            rs = by.get((t, k), [])
            if not rs:
                continue
            accs = {m: [r["variants"][m]["accuracy"] for r in rs if m in r["variants"]]
                    for m, _ in METHODS}
            best = max((np.mean(v) for v in accs.values() if v), default=0)
            cells = [(f"**{_cell(v)}**" if v and np.isclose(np.mean(v), best) else _cell(v))
                     for v in accs.values()]
            lines.append(f"| {t} | {k} | {len(rs)} | " + " | ".join(cells) + " |")
            if accs["mpd"] and accs["dect"]:
                wins.append((t, k, np.mean(accs["mpd"]) - np.mean(accs["dect"])))
    # the average over tasks, per shot count (each task's seed-mean, then the mean of those)
    avg_lines = []
    for k in shots:
        vals = {}
        for m, _ in METHODS:
            per_task = [np.mean([r["variants"][m]["accuracy"] for r in by[(t, k)]])
                        for t in tasks if by.get((t, k))]
            vals[m] = 100 * np.mean(per_task) if per_task else float("nan")
        n_tasks = sum(1 for t in tasks if by.get((t, k)))
        avg_lines.append(f"| mean of {n_tasks} tasks | {k} | | "
                         + " | ".join(f"{vals[m]:.1f}" for m, _ in METHODS) + " |")
    fit = {m: [r["variants"][m]["fit_s"] for r in rows if m in r["variants"]]
           for m, _ in METHODS if m != "zero-shot"}
    qpe = {m: rows[0]["variants"][m]["queries_per_example"] for m, _ in METHODS
           if m in rows[0]["variants"]}
    lp_note = ("Label-word log-probs were read off the returned hidden states with the "
               "model's output-embedding matrix (`logprobs_from_hidden`; equal to "
               "`label_logprobs` within 1e-5), so the grid paid P forward passes per example."
               if rows[0].get("logprobs_from_hidden") else "")
    fit_txt = " | ".join(f"{np.mean(fit[m]):.2f} / {np.max(fit[m]):.2f}"
                         for m, _ in METHODS if m in fit)
    seeds = sorted({r["seed"] for r in rows})
    n_eval = {t: by[(t, shots[0])][0]["n_eval"] for t in tasks if by.get((t, shots[0]))}
    # the command that makes these runs, from the runs themselves (so a regeneration from
    # the committed summaries writes the same file)
    cmd = ("flock /tmp/bbx-heavy.lock .venv/bin/python scripts/mpd_grid.py --seeds "
           + " ".join(map(str, seeds)) + f" --test-limit {limit or 0}")
    paired_dect = paired_table(by, tasks, shots, "dect")
    leaks = [f"{r['task']} {r['shots']}-shot seed {r['seed']} ({r['overlap']})" for r in rows
             if r.get("overlap")]
    leak_txt = ("Leak guard: every run's train and dev texts were checked against its test "
                "items; the shipped splits share texts with the test set in "
                + "; ".join(leaks) + " (test items whose text is in train/dev, counted "
                "after normalization; those runs ran with allow_overlap)."
                if leaks else "Leak guard: no run's train or dev text is one of its test "
                "items.")
    paired_zc = paired_table(by, tasks, shots, "zero-shot-cal")
    win_txt = ", ".join(f"{t}@{k}: {d * 100:+.1f}" for t, k, d in wins)
    n_win = sum(d > 0 for *_, d in wins)
    by_shot = ", ".join(f"{k} shots: {100 * np.mean([d for _, kk, d in wins if kk == k]):+.1f}"
                        for k in shots if any(kk == k for _, kk, _ in wins))
    machines = "\n".join(machines_lines([(runs / r["run"], f"{r['task']} s{r['seed']}")
                                         for r in rows]))
    md = f"""# MPD vs DecT on SmolLM2-135M-Instruct (`bbx decode`)

Made by `scripts/mpd_report.py` from the summaries of {len(rows)} runs under
`{portable(runs)}` (committed; per-run numbers: `results/mpd-grid.json`); regenerate with
`.venv/bin/python scripts/mpd_report.py`. The runs:

```bash
{cmd.strip()}
```

{machines}
Setup: backend `local` (bundled SmolLM2-135M-Instruct, engine dtype
{rows[0]['dtype']}; fingerprint
`{rows[0]['backend']}`); tasks {', '.join(tasks)}; shots {shots}; seeds {seeds}.
Train and dev are the k-shot splits of each seed (1 and 4 shots drawn from the shipped
16-shot splits); test is a fixed subset of {limit or 'all'} examples per task, the same for
every seed and method (sizes: {', '.join(f'{t} {n}' for t, n in n_eval.items())}).
P = 3 templates (the task's own), 10 label words per class (route:
{rows[0]['neighbours_route']}), projection 576→128, Q = 3 prototypes, Sinkhorn ε = 0.1
(≤100 iterations), scale 10, Adam lr 1e-2, 30 full-batch epochs; β chosen on dev from
{{0, 0.1, 0.3, 1, 3, 10, 30, 100}}. DecT as its paper's code has it: the first template,
L2-normalized projected features, fixed random unit prototypes, each class radius started
from the data (its examples' mean distance), and λ chosen on dev from the same grid as
MPD's β. Zero-shot = the first template's label words, uncalibrated (what `bbx eval`
reports); calibrated zero-shot = MPD's calibrated class scores over the P templates and 10
words per class with no trained decoder, so MPD − calibrated zero-shot is what the decoder
itself adds. {lp_note}

{leak_txt}

## Test accuracy (%), mean ± std over seeds

Best mean per row in bold.

{chr(10).join(lines)}
{chr(10).join(avg_lines)}

MPD − DecT (points, seed means): {win_txt}. MPD ahead in {n_win} of {len(wins)} cells;
mean gap by shots: {by_shot}.

## Paired differences per seed (points, 95% bootstrap interval over the test items)

MPD − DecT:

{chr(10).join(paired_dect) or 'no pairs yet'}

MPD − calibrated zero-shot (what the trained decoder adds):

{chr(10).join(paired_zc) or 'no pairs yet'}

## Cost

| | {' | '.join(n for m, n in METHODS if m in qpe)} |
|---|{'---|' * len(qpe)}
| queries per example | {' | '.join(str(qpe[m]) for m, _ in METHODS if m in qpe)} |
| training time, mean / max (s) | – | {fit_txt} |

A query is one backend item: MPD asks, per example and template, for the hidden state and the
label-word log-probs (two verbs of the Backend protocol, so 2·P = 6 items; a server answering
both from one forward pass would make it P = 3). Training time is the wall time of fitting
from cached features (normalization statistics, 30 epochs, β search on dev) on this shared
2-core CPU.
"""
    # hand-written notes below the marker survive a regeneration
    marker = "<!-- notes: kept when the table is regenerated -->"
    old = out.read_text() if out.is_file() else ""
    notes = old[old.index(marker):] if marker in old else marker + "\n"
    out.write_text(md + "\n" + notes)
    slim = [{**r, "variants": {k: {m: x for m, x in v.items() if m != "correct"}
                               for k, v in r["variants"].items()}} for r in rows]
    (out.parent / "mpd-grid.json").write_text(json.dumps(slim, indent=1) + "\n")
    _plot(by, tasks, shots, out.parent / "mpd.png")
    print(f"wrote {out}")


def _plot(by: dict, tasks: list[str], shots: list[int], path: Path) -> None:
    from blackbox.plots import Panel, Series, draw

    panels = []
    for i, t in enumerate(tasks):
        panel = Panel(title=t, xlabel="shots per class", log2_x=True, xticks=shots,
                      ylabel="test accuracy (%)" if i == 0 else "", legend=i == len(tasks) - 1,
                      legend_size=7)
        for m, name in METHODS:
            ys = [100 * np.mean([r["variants"][m]["accuracy"] for r in by[(t, k)]])
                  if by.get((t, k)) else np.nan for k in shots]
            panel.series.append(Series(shots, ys, marker="o", ms=6, label=name,
                                       lw=2 if m in ("mpd", "dect") else 1))
        panels.append(panel)
    draw(panels, path, figsize=(3.2 * len(tasks), 3), dpi=110)


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="?", type=Path, default=REPO / "results" / "mpd-runs")
    ap.add_argument("--out", type=Path, default=REPO / "results" / "mpd.md")
    ap.add_argument("--test-limit", type=int, default=1000, help="0: the full test sets")
    a = ap.parse_args()
    write_report(a.runs, a.out, a.test_limit or None, [])
