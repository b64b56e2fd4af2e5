"""Every plot bbx draws: ``bbx plot`` over run directories, the learning curve a distill run
leaves, and the figures of the results scripts.

Two halves. :func:`draw` turns panels of already-computed series into a PNG (matplotlib's Agg
backend: servers have no display), so scripts keep computing their own numbers and only
describe what to draw. :func:`plot_runs` (``bbx plot``) reads what runs leave behind: the trial
logs of search methods (ClaPS ``trials.jsonl``, merge ``trials-<stage>.jsonl``) and a distill
run's ``rounds.jsonl``, and draws them against queries paid, several runs on one axis.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from blackbox.errors import BbxError

FIGSIZE = (6.4, 4.2)  # inches: one panel, the size of ``bbx plot``'s PNGs
DPI = 120


@dataclass
class Series:
    """One line (or, with ``scatter``, a cloud of points) of a panel."""

    x: Sequence[float]
    y: Sequence[float]
    label: str | None = None
    band: tuple[Sequence[float], Sequence[float]] | None = None  # shaded (low, high)
    marker: str | None = None
    ms: float = 3
    lw: float = 1.5
    ls: Any = "-"
    color: str | None = None
    alpha: float = 1.0
    step: bool = False  # best-so-far curves: hold each value until the next improvement
    scatter: bool = False


@dataclass
class Line:
    """A horizontal (``axis="h"``) or vertical reference line."""

    at: float
    label: str | None = None
    axis: str = "h"
    ls: Any = "--"
    color: str = "gray"
    lw: float = 1.0


@dataclass
class Panel:
    """One axis: its series, reference lines, labels and scale."""

    series: list[Series] = field(default_factory=list)
    lines: list[Line] = field(default_factory=list)
    title: str = ""
    xlabel: str = ""
    ylabel: str = ""
    log2_x: bool = False
    xticks: Sequence[float] | None = None
    legend: bool = True
    legend_loc: str = "best"
    legend_size: float = 8


def draw(panels: Sequence[Panel], path: str | Path, figsize: tuple[float, float] = FIGSIZE,
         dpi: int = DPI) -> Path:
    """Draw ``panels`` side by side into the PNG ``path`` (parents made); returns the path."""
    import matplotlib

    matplotlib.use("Agg")  # before pyplot is imported: no display on servers
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, max(1, len(panels)), figsize=figsize, dpi=dpi, squeeze=False)
    for ax, panel in zip(axes[0], panels, strict=False):
        _draw_panel(ax, panel)
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=dpi)
    plt.close(fig)
    return out


def _draw_panel(ax: Any, panel: Panel) -> None:
    for s in panel.series:
        style = {"label": s.label, "color": s.color, "alpha": s.alpha}
        if s.scatter:
            ax.scatter(s.x, s.y, s=s.ms, **style)
            continue
        ax.plot(s.x, s.y, marker=s.marker, ms=s.ms, lw=s.lw, ls=s.ls,
                drawstyle="steps-post" if s.step else "default", **style)
        if s.band is not None:
            ax.fill_between(s.x, s.band[0], s.band[1], color=ax.lines[-1].get_color(),
                            alpha=0.12)
    for line in panel.lines:
        draw_line = ax.axhline if line.axis == "h" else ax.axvline
        draw_line(line.at, ls=line.ls, color=line.color, lw=line.lw, label=line.label)
    if panel.log2_x:
        ax.set_xscale("log", base=2)
    if panel.xticks is not None:
        ax.set_xticks(list(panel.xticks), [f"{t:g}" for t in panel.xticks])
    ax.set_title(panel.title)
    ax.set_xlabel(panel.xlabel)
    ax.set_ylabel(panel.ylabel)
    ax.grid(alpha=0.3)
    if panel.legend and any(s.label for s in panel.series):
        ax.legend(fontsize=panel.legend_size, loc=panel.legend_loc)


# -- bbx plot: what run directories leave behind ---------------------------------------------

@dataclass
class _Curve:
    """A run's curve: each trial (or round), and the best so far, against queries."""

    label: str
    x: list[float]
    y: list[float]
    best: list[float]
    ylabel: str
    xlabel: str
    bounds: list[float] = field(default_factory=list)  # queries where a stage starts
    refs: dict[str, float] = field(default_factory=dict)
    search: bool = True  # trials (dots + best so far) rather than one learning curve


def _jsonl(path: Path) -> list[dict[str, Any]]:
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a row cut off by a kill
    return rows


def _best_so_far(ys: list[float], higher: bool) -> list[float]:
    out: list[float] = []
    for y in ys:
        out.append(y if not out else (max if higher else min)(out[-1], y))
    return out


def _claps(run: Path, summary: dict[str, Any], recipe: dict[str, Any]) -> _Curve | None:
    trials = _jsonl(run / "trials.jsonl") if (run / "trials.jsonl").is_file() else []
    if not trials:
        return None
    # each trial scores the prompt on the train batch; pruning paid before the first trial
    n = int((summary.get("train") or {}).get("n") or recipe.get("train_batch") or 1)
    start = int((summary.get("queries") or {}).get("pruning") or 0)
    ys = [float(t["info"]["acc"]) if "acc" in t.get("info", {}) else -float(t["loss"])
          for t in trials]
    acc = all("acc" in t.get("info", {}) for t in trials)
    return _Curve(str(summary.get("searcher") or "search"),
                  [start + (k + 1) * n for k in range(len(trials))], ys,
                  _best_so_far(ys, higher=True),
                  "train accuracy" if acc else "train reward (-loss)",
                  "train queries (pruning included)", bounds=[start] if start else [])


def _merge(run: Path, summary: dict[str, Any], recipe: dict[str, Any]) -> _Curve | None:
    # stage files in the order the method runs them; each mixture costs one query per example
    n = int((summary.get("user") or {}).get("n") or recipe.get("user_examples") or 1)
    xs: list[float] = []
    ys: list[float] = []
    bounds: list[float] = []
    for stage in ("stage1", "lorahub", "stage2"):
        f = run / f"trials-{stage}.jsonl"
        if not f.is_file():
            continue
        bounds.append(len(xs) * n)
        for t in _jsonl(f):
            xs.append((len(xs) + 1) * n)
            ys.append(float(t["loss"]))
    if not xs:
        return None
    return _Curve(str(summary.get("variant") or recipe.get("variant") or "merge"), xs, ys,
                  _best_so_far(ys, higher=False), "loss on the user examples (CE + L1)",
                  "user-example queries", bounds=bounds[1:])


def _distill(run: Path, summary: dict[str, Any], recipe: dict[str, Any]) -> _Curve | None:
    rounds = _jsonl(run / "rounds.jsonl") if (run / "rounds.jsonl").is_file() else []
    if not rounds:
        return None
    ys = [float(r["accuracy"]) for r in rounds]
    refs = {}
    if summary.get("upper_bound_accuracy") is not None:
        refs["upper bound (gold pool)"] = float(summary["upper_bound_accuracy"])
    agg = summary.get("aggregation", "mean")
    workers = (summary.get("workers_eval") or {}).get(agg)
    if workers is not None:
        refs[f"workers ({agg})"] = float(workers)
    return _Curve(str(summary.get("acquisition") or recipe.get("acquisition") or "student"),
                  [float(r["queries"]) for r in rounds], ys, ys,
                  "student accuracy (evaluation set)", "LLM queries (workers x items)",
                  refs=refs, search=False)


def _curves(run: Path) -> list[_Curve]:
    """The curves one run directory holds (a chain: those of its steps)."""
    from blackbox.runs import read_run

    info = read_run(run)
    summary, recipe = info["summary"] or {}, info["recipe"] or {}
    method = summary.get("method") or recipe.get("method")
    if method == "chain" or (not method and "steps" in recipe):
        return [c for step in sorted((run / "steps").glob("*/recipe.yaml"))
                for c in _curves(step.parent)]
    reader = {"search-prompt": lambda: _claps(run, summary, recipe),
              "merge": lambda: _merge(run, summary, recipe),
              "distill": lambda: _distill(run, summary, recipe)}.get(str(method))
    curve = reader() if reader is not None else None
    return [] if curve is None else [curve]


def plot_runs(run_dirs: Sequence[str | Path], out: str | Path | None = None) -> Path:
    """``bbx plot``: the curves of ``run_dirs`` on one axis, as a PNG; returns its path.

    Search runs (ClaPS, merge) show each trial and the best so far against queries paid, a
    distill run its learning curve. The PNG goes to ``out``, else next to the run
    (``<run_dir>.png``; for several runs, next to the first). A run with nothing to plot, or
    runs whose curves measure different things, are a user error.
    """
    if not run_dirs:
        raise BbxError("bbx plot: give at least one run directory")
    curves: list[tuple[Path, _Curve]] = []
    for rd in map(Path, run_dirs):
        found = _curves(rd)
        if not found:
            raise BbxError(f"{rd}: nothing to plot (plots are drawn for search-prompt, merge "
                           "and distill runs: trial logs or rounds.jsonl)")
        curves += [(rd, c) for c in found]
    kinds = {c.ylabel for _, c in curves}
    if len(kinds) > 1:
        raise BbxError("bbx plot: these runs measure different things "
                       f"({', '.join(sorted(kinds))}): plot them separately")
    labels = [c.label for _, c in curves]
    panel = Panel(title=Path(run_dirs[0]).name if len(run_dirs) == 1 else "",
                  xlabel=curves[0][1].xlabel, ylabel=curves[0][1].ylabel, legend_size=7)
    for k, (rd, c) in enumerate(curves):
        label = c.label if labels.count(c.label) == 1 else f"{c.label} ({rd.name})"
        color = f"C{k % 10}"
        if c.search:  # search: each trial faint, the best so far as a step line
            panel.series.append(Series(c.x, c.y, scatter=True, ms=4, alpha=0.25, color=color))
            panel.series.append(Series(c.x, c.best, label=f"{label}: best so far", step=True,
                                       color=color))
        else:
            panel.series.append(Series(c.x, c.y, label=label, marker="o", color=color))
        panel.lines += [Line(b, axis="v", ls=":", lw=0.8) for b in c.bounds]
        if len(curves) == 1:
            panel.lines += [Line(v, label=name, ls=ls) for (name, v), ls
                            in zip(c.refs.items(), ["--", ":", "-."], strict=False)]
    first = Path(run_dirs[0])
    path = Path(out) if out is not None else first.with_name(
        first.name + (".png" if len(run_dirs) == 1 else f"+{len(run_dirs) - 1}.png"))
    return draw([panel], path)
