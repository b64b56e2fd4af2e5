"""``bbx report`` for a distill run (LMTurk): the student, against gold-only and the LLM."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import RenderableType

from blackbox.methods.view import Row, accuracy_row, artefact_rows, num, pct, report


def render(summary: dict[str, Any], run_dir: Path | str | None = None) -> RenderableType:
    """The distill run's report: the student's held-out accuracy (the student fit on the gold
    examples alone → the distilled one), the LLM workers and the gold-pool bound beside it,
    what the workers labelled, and the files a user deploys or checks."""
    rows: list[Row] = [("task", f"{summary.get('task', '-')} ({summary.get('gold', '-')} gold "
                                f"examples, a pool of {num(summary.get('pool', '-'))})")]
    if summary.get("accuracy") is not None:
        rows.append(accuracy_row(summary["accuracy"], summary.get("eval"),
                                 summary.get("gold_only_accuracy"), "gold examples only"))
    workers = summary.get("workers_eval") or {}
    agg = summary.get("aggregation", "mean")
    refs = []
    if workers.get(agg) is not None:
        refs.append(f"LLM workers ({agg}) {pct(workers[agg])} on {workers.get('items', '-')}")
    if summary.get("upper_bound_accuracy") is not None:
        refs.append(f"student on the gold-labelled pool {pct(summary['upper_bound_accuracy'])}")
    if refs:
        rows.append(("for reference", "; ".join(refs)))
    rows.append(("student found", f"logistic regression on {summary.get('features', '-')} "
                                  f"features, {summary.get('labelled', 0)} items labelled by "
                                  f"{summary.get('workers', '-')} workers "
                                  f"({summary.get('acquisition', '-')}, {agg})"))
    rows.append(("LLM queries", f"{num(summary.get('queries', 0))} of "
                                f"{num(summary.get('query_budget', '-'))} in "
                                f"{summary.get('rounds', '-')} rounds"
                                + (f", stopped: {summary['stopped']}" if summary.get("stopped")
                                   else "")))
    noise = summary.get("label_noise") or {}
    if noise:
        rows.append(("label noise", f"the student disputes {noise.get('student_disagrees', 0)}"
                                    f" of {noise.get('items', 0)} worker labels"))
    fine = summary.get("finetuned") or {}
    if fine.get("accuracy") is not None:
        rows.append(("fine-tuned student", pct(fine["accuracy"])))
    if summary.get("student"):
        rows.append(("student file", str(summary["student"])))
    rows += artefact_rows(run_dir, learning_curve="learning_curve.png",
                          label_noise="label_noise.md", rounds="rounds.jsonl")
    return report("bbx distill (LMTurk)", rows, summary, run_dir)
