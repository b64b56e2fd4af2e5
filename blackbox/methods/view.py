"""The pieces every method's ``render.py`` builds its report from, so all reports read alike.

A report answers, in order, what a user asks first: how accurate is it now (and before), on
how many held-out items; what was found (prompt, decoder, student, mixture); what it cost
(queries, tokens, dollars when the backend prices them, wall time); where the artefact is.
The raw summary keys stay behind ``bbx report --json``.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from rich.console import Group, RenderableType
from rich.table import Table

Row = tuple[str, str]


def pct(value: float | None) -> str:
    """An accuracy as people read it: ``75.0%`` (``-`` when missing)."""
    return "-" if value is None else f"{100 * float(value):.1f}%"


def accuracy_row(after: float | None, n: int | None, before: float | None = None,
                 before_name: str = "before", split: str = "test") -> Row:
    """``split accuracy``: ``before → after`` when a baseline is known, with the item count."""
    size = f" on {n} items" if n is not None else ""
    if before is None:
        return f"{split} accuracy", f"[bold]{pct(after)}[/]{size}"
    delta = 100 * (float(after) - float(before)) if after is not None else None
    sign = "" if delta is None else f" ({delta:+.1f} points)"
    return (f"{split} accuracy", f"{pct(before)} ({before_name}) → [bold]{pct(after)}[/]"
            f"{sign}{size}")


def cost_rows(summary: dict[str, Any]) -> list[Row]:
    """What the run paid: queries (and cached answers), tokens, dollars when priced, time."""
    usage = summary.get("usage") or {}
    rows: list[Row] = []
    if usage:
        rows.append(("queries paid", f"{usage.get('queries', 0):,} "
                                     f"(+{usage.get('cached', 0):,} from the cache)"))
        rows.append(("tokens paid", f"{usage.get('tokens', 0):,}"))
        if usage.get("usd") is not None:  # only backends that price their calls set it
            rows.append(("cost", f"${float(usage['usd']):,.4f}"))
    wall = summary.get("run_wall_s")
    if isinstance(wall, (int, float)):
        rows.append(("wall time", duration(float(wall))))
    return rows


def num(value: Any) -> str:
    """An integer with thousands separators; anything else as it is."""
    return f"{value:,}" if isinstance(value, int) and not isinstance(value, bool) else str(value)


def duration(seconds: float) -> str:
    """``42.1 s``, ``3 min 05 s`` or ``2 h 04 min``."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    if seconds < 3600:
        return f"{int(seconds // 60)} min {int(seconds % 60):02d} s"
    return f"{int(seconds // 3600)} h {int(seconds % 3600 // 60):02d} min"


def report(title: str, rows: Iterable[Row], summary: dict[str, Any],
           run_dir: Path | str | None, extra: Iterable[RenderableType] = ()) -> Group:
    """The shape every method's report has: one field/value table (the method's rows, then
    the cost, the failure if any, notes and the run directory), then any extra tables."""
    table = Table(title=title, show_header=False, title_justify="left")
    table.add_column("field", style="bold")
    table.add_column("value", overflow="fold")
    if summary.get("status") == "failed":
        table.add_row("[red]status[/]", f"[red]failed[/]: {summary.get('error')}")
    for key, value in [*rows, *cost_rows(summary)]:
        table.add_row(key, value)
    for key, note in (summary.get("notes") or {}).items():
        table.add_row(f"note: {key}", note if isinstance(note, str) else _short(note))
    if run_dir is not None:
        table.add_row("run directory", str(run_dir))
    return Group(table, *extra)


def _short(value: Any, limit: int = 200) -> str:
    text = str(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def variants_table(title: str, variants: dict[str, dict[str, Any]], n: int | None,
                   main: str | None = None) -> Table:
    """Several compared variants (decoders, baselines) on the same held-out items."""
    table = Table(title=title, title_justify="left")
    table.add_column("variant")
    table.add_column("accuracy", justify="right")
    table.add_column("macro F1", justify="right")
    table.add_column("queries / item", justify="right")
    for name, v in sorted(variants.items(), key=lambda kv: -float(kv[1].get("accuracy", 0))):
        label = f"[bold]{name}[/] (kept)" if name == main else name
        f1 = v.get("macro_f1")
        table.add_row(label, pct(v.get("accuracy")), "-" if f1 is None else f"{f1:.3f}",
                      str(v.get("queries_per_example", "-")))
    if n is not None:
        table.caption = f"each on the same {n} held-out items"
    return table


def artefact_rows(run_dir: Path | str | None, **files: str) -> list[Row]:
    """``label: path`` for each named file the run directory holds (missing ones skipped:
    committed runs leave the large artefacts out)."""
    if run_dir is None:
        return []
    return [(label.replace("_", " "), str(Path(run_dir) / name)) for label, name in files.items()
            if (Path(run_dir) / name).exists()]
