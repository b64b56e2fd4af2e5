"""What a distill run leaves for people: the label-noise report and the learning-curve plot.

Both are written from finished results (the rounds file and the labelled items), after the
active-learning loop, never inside it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np


def disagreement(workers: np.ndarray, student: np.ndarray) -> np.ndarray:
    """Total-variation distance between two ``(n, C)`` distributions, row by row (0..1)."""
    return 0.5 * np.abs(np.asarray(workers) - np.asarray(student)).sum(axis=1)


def noise_rows(
    texts: Sequence[str],
    worker_dists: np.ndarray,
    posterior: np.ndarray,
    student_probs: np.ndarray,
    labels: Sequence[str],
    gold: np.ndarray | None = None,
) -> list[dict[str, Any]]:
    """One row per labelled item, most disagreeing first.

    ``worker_dists`` is ``(M, n, C)``, ``posterior`` the aggregated ``(n, C)`` labels and
    ``student_probs`` the student's held-out (cross-fitted) ``(n, C)`` predictions: an item
    the student could not have memorised and still disputes is the likeliest mislabel.
    """
    dis = disagreement(posterior, student_probs)
    rows = []
    for i in np.argsort(-dis, kind="stable"):
        agg = int(posterior[i].argmax())
        stu = int(student_probs[i].argmax())
        row: dict[str, Any] = {
            "text": texts[i][:300],
            "disagreement": round(float(dis[i]), 4),
            "workers": [labels[int(d.argmax())] for d in worker_dists[:, i]],
            "aggregated": labels[agg],
            "aggregated_confidence": round(float(posterior[i, agg]), 4),
            "student": labels[stu],
            "student_confidence": round(float(student_probs[i, stu]), 4),
        }
        if gold is not None and gold[i] >= 0:
            row["gold"] = labels[int(gold[i])]
        rows.append(row)
    return rows


def noise_summary(rows: list[dict[str, Any]], top_fraction: float = 0.1) -> dict[str, Any]:
    """How useful the report is where gold labels are known: the error rate of the aggregated
    labels among the most disputed ``top_fraction`` of items, against the overall rate."""
    out: dict[str, Any] = {"items": len(rows),
                           "student_disagrees": sum(r["aggregated"] != r["student"] for r in rows)}
    known = [r for r in rows if "gold" in r]
    if known and len(known) == len(rows):
        k = max(1, int(round(top_fraction * len(rows))))
        wrong = [r["aggregated"] != r["gold"] for r in rows]
        out["label_error_rate"] = round(float(np.mean(wrong)), 4)
        key = f"label_error_rate_top{int(top_fraction * 100)}pct"
        out[key] = round(float(np.mean(wrong[:k])), 4)
    return out


def write_noise_report(path_jsonl: Path, path_md: Path, rows: list[dict[str, Any]],
                       top: int) -> None:
    """All rows as JSONL; the ``top`` most disputed as a Markdown table."""
    with path_jsonl.open("w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    has_gold = any("gold" in r for r in rows)
    lines = ["# Label-noise report", "",
             "Items the LLM workers labelled, most disputed first: the student (trained without "
             "the item, by cross-fitting) disagrees with the workers' aggregated label. "
             "Check these first.", "",
             "| # | disagreement | workers | aggregated | student |"
             + (" gold |" if has_gold else "") + " text |",
             "|---|---|---|---|---|" + ("---|" if has_gold else "") + "---|"]
    for i, r in enumerate(rows[:top], 1):
        text = r["text"][:120].replace("|", "\\|").replace("\n", " ")
        gold = f" {r.get('gold', '')} |" if has_gold else ""
        lines.append(f"| {i} | {r['disagreement']:.2f} | {', '.join(r['workers'])} | "
                     f"{r['aggregated']} ({r['aggregated_confidence']:.2f}) | "
                     f"{r['student']} ({r['student_confidence']:.2f}) |{gold} {text} |")
    path_md.write_text("\n".join(lines) + "\n", encoding="utf-8")


def plot_learning_curve(rounds: list[dict[str, Any]], path: Path, title: str,
                        refs: dict[str, float | None]) -> Path:
    """Student accuracy against LLM queries, with horizontal reference lines (``refs``)."""
    from blackbox.plots import Line, Panel, Series, draw

    styles = iter(["--", ":", "-.", (0, (5, 1))])
    panel = Panel(series=[Series([r["queries"] for r in rounds], [r["accuracy"] for r in rounds],
                                 label="student", marker="o")],
                  lines=[Line(value, label=name, ls=next(styles, "--"))
                         for name, value in refs.items() if value is not None],
                  title=title, xlabel="LLM queries (workers x items)",
                  ylabel="student accuracy (evaluation set)")
    return draw([panel], path, figsize=(6, 4), dpi=120)
