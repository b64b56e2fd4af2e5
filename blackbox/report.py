"""``bbx report``: a finished run as a person reads it.

Each method renders its own summary (``blackbox/methods/<folder>/render.py``, a
``render(summary, run_dir)`` returning a rich renderable, built from
:mod:`blackbox.methods.view` so that all reports read alike); this module picks the renderer
by the summary's method name, draws chains as one table across their steps, and falls back
to a generic view for a kind of run it does not know (a plug-in method without a renderer).
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from rich.console import RenderableType
from rich.table import Table

from blackbox.methods import METHODS
from blackbox.methods.view import Row, accuracy_row, duration, num, pct, report
from blackbox.runs import held_out


def render(summary: dict[str, Any], run_dir: Path | str | None = None) -> RenderableType:
    """The report of any run's summary: its method's renderer, the chain table, or generic."""
    method = summary.get("method")
    if method == "chain":
        return render_chain(summary, run_dir)
    renderer = _renderer(method) if isinstance(method, str) else None
    if renderer is None:
        return render_generic(summary, run_dir)
    return renderer(summary, run_dir)


def _renderer(method: str) -> Any:
    """``<method package>.render.render``, or None for a method that has none."""
    if method not in METHODS:
        return None
    try:
        module = importlib.import_module(METHODS.target(method).partition(":")[0] + ".render")
    except ModuleNotFoundError:
        return None
    return getattr(module, "render", None)


def render_generic(summary: dict[str, Any], run_dir: Path | str | None = None) -> RenderableType:
    """A run of a kind without its own renderer: the held-out number, then the summary's
    short top-level fields (nested ones stay in ``--json``)."""
    rows: list[Row] = []
    shown = held_out(summary)
    if shown is not None:
        split, n, acc = shown
        rows.append(accuracy_row(acc, n, split=split))
    skip = {"method", "usage", "run_wall_s", "notes", "status", "error", "correct",
            "gold_only_correct", "ledger", "ledger_rows_this_run"}
    for key, value in summary.items():
        if key in skip or isinstance(value, (dict, list)):
            continue
        text = f"{value:.4f}" if isinstance(value, float) else num(value)
        rows.append((key, text if len(text) <= 200 else text[:197] + "..."))
    return report(f"bbx {summary.get('method', 'run')}", rows, summary, run_dir)


def render_chain(summary: dict[str, Any], run_dir: Path | str | None = None) -> RenderableType:
    """One table across a chain's steps: held-out accuracy, what each found and paid."""
    steps = summary.get("steps") or []
    priced = any(r.get("usd") is not None for r in steps)
    table = Table(title="bbx chain", title_justify="left")
    for col in ("step", "method", "held-out accuracy", "queries paid", "cached", "tokens",
                *(["cost"] if priced else []), "wall time", "found"):
        table.add_column(col, overflow="fold",
                         justify="right" if col in ("queries paid", "cached", "tokens", "cost")
                         else "left")
    for r in steps:
        acc = (f"{pct(r['accuracy'])} ({r['split']}, {r['n']} items)"
               if r.get("accuracy") is not None else "-")
        art = r.get("artefact")
        found = ("-" if art is None else repr(art) if r["method"] == "search-prompt"
                 else str(art))
        table.add_row(r["step"], r["method"], acc, num(r.get("queries", 0)),
                      num(r.get("cached", 0)), num(r.get("tokens", 0)),
                      *([f"${r['usd']:.4f}" if r.get("usd") is not None else "-"]
                        if priced else []),
                      duration(r["wall_s"]) if r.get("wall_s") else "-", found)
    usage = summary.get("usage") or {}
    rows: list[Row] = [("paid in all", f"{num(usage.get('queries', 0))} queries, "
                                       f"{num(usage.get('tokens', 0))} tokens")]
    if summary.get("run_wall_s"):
        rows.append(("wall time", duration(float(summary["run_wall_s"]))))
    if summary.get("deploy") is not None:
        rows.append(("deploy", str(summary["deploy"])))
    if run_dir is not None:
        rows.append(("run directory", str(run_dir)))
    foot = Table(show_header=False, box=None)
    foot.add_column("field", style="bold")
    foot.add_column("value", overflow="fold")
    for k, v in rows:
        foot.add_row(k, v)
    from rich.console import Group

    return Group(table, foot)
