"""``bbx report`` for a merge run (Evo-Merging): the mixture found and its test accuracy."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import RenderableType
from rich.table import Table

from blackbox.methods.view import Row, accuracy_row, artefact_rows, pct, report


def render(summary: dict[str, Any], run_dir: Path | str | None = None) -> RenderableType:
    """The merge run's report: held-out accuracy, the user examples it was fit on, each
    search stage, and the mixture (per adapter: keep-fraction α and scale β)."""
    test, user = summary.get("test") or {}, summary.get("user") or {}
    rows: list[Row] = [("task", f"{summary.get('task', '-')}, variant "
                                f"{summary.get('variant', '-')}")]
    if test.get("accuracy") is not None:
        rows.append(accuracy_row(test["accuracy"], test.get("n")))
    if user:
        rows.append(("user examples", f"{pct(user.get('accuracy'))} on {user.get('n')} "
                                      f"(cross-entropy {user.get('loss', 0):.3f})"))
    for name, st in (summary.get("stages") or {}).items():
        kept = "" if "kept" not in st else (", kept" if st["kept"] else ", not kept (stage 1 "
                                            "fit the examples better)")
        rows.append((f"search {name}", f"{st.get('optimizer')}: {st.get('evaluations')} "
                                       f"mixtures, stopped by {st.get('stopped')}{kept}"))
    spec = summary.get("adapter")
    if not isinstance(spec, dict):
        rows.append(("adapter found", "the base model (no adapter)" if spec is None
                     else f"[bold]{spec}[/]"))
    if summary.get("materialized"):
        rows.append(("saved as", ", ".join(f"{k} {v}" for k, v in
                                           summary["materialized"].items())))
    rows += artefact_rows(run_dir, mixture="mixture.json")
    extra = [_mixture_table(spec)] if isinstance(spec, dict) else []
    return report("bbx merge (Evo-Merging)", rows, summary, run_dir, extra)


def _mixture_table(spec: dict[str, Any]) -> Table:
    # A* = Σ β·sparse(A, α), B* = Σ β·B: the two numbers a user can check per adapter
    table = Table(title="mixture found", title_justify="left")
    for col in ("adapter", "keep α", "scale β"):
        table.add_column(col, justify="left" if col == "adapter" else "right")
    for name, a, b in zip(spec.get("adapters", []), spec.get("alpha", []), spec.get("beta", []),
                          strict=False):
        table.add_row(name, f"{a:.2f}", f"{b:+.2f}")
    return table
