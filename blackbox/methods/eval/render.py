"""``bbx report`` for an eval run: the accuracy of a template (+ prompt) as it is."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import RenderableType

from blackbox.methods.view import Row, accuracy_row, artefact_rows, pct, report


def render(summary: dict[str, Any], run_dir: Path | str | None = None) -> RenderableType:
    """The eval run's report: accuracy on how many of the split's items, what was asked."""
    rows: list[Row] = [("task", str(summary.get("task", "-")))]
    if "accuracy" in summary:
        rows.append(accuracy_row(summary["accuracy"], summary.get("n"),
                                 split=str(summary.get("split", "test"))))
        if summary.get("n_split") and summary["n_split"] != summary.get("n"):
            rows.append(("items", f"a seeded {summary['n']} of the split's {summary['n_split']}"))
    if summary.get("macro_f1") is not None:
        rows.append(("macro F1", f"{summary['macro_f1']:.3f}"))
    per_class = summary.get("per_class_accuracy") or {}
    if per_class:
        rows.append(("per class", ", ".join(f"{k} {pct(v)}" for k, v in per_class.items())))
    rows.append(("template", repr(summary.get("template", ""))))
    if summary.get("prompt"):
        rows.append(("prompt", repr(summary["prompt"])))
    rows += artefact_rows(run_dir, predictions="predictions.jsonl")
    return report("bbx eval", rows, summary, run_dir)
