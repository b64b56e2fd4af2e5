"""``bbx report`` for a decode run: the decoder fit (against zero-shot), or its predictions."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import RenderableType

from blackbox.methods.view import Row, accuracy_row, artefact_rows, num, report, variants_table


def render(summary: dict[str, Any], run_dir: Path | str | None = None) -> RenderableType:
    """A fit: held-out accuracy (zero-shot → the decoder when compared), what the decoder
    reads, where its file is, the compared variants. A predict: how many texts, the labels."""
    if summary.get("action") == "predict":
        return _predict(summary, run_dir)
    variants = summary.get("variants") or {}
    main = summary.get("decoder")
    before = (variants.get("zero-shot") or {}).get("accuracy") if main != "zero-shot" else None
    rows: list[Row] = [("task", f"{summary.get('task', '-')} ({summary.get('shots', '-')} "
                                "shots per class)")]
    if summary.get("accuracy") is not None:
        rows.append(accuracy_row(summary["accuracy"], summary.get("n_eval"), before,
                                 "zero-shot", str(summary.get("eval_split", "test"))))
    info = variants.get(main) or {}
    rows.append(("decoder found", f"[bold]{main}[/]: {info.get('prompts', '-')} prompts, "
                                  f"{info.get('label_words_per_class', '-')} label words per "
                                  f"class, fit on {summary.get('n_train', '-')} train + "
                                  f"{summary.get('n_dev', '-')} dev items in "
                                  f"{summary.get('fit_s', '-')} s"))
    rows.append(("queries per text", num(summary.get("queries_per_example", "-"))))
    if summary.get("decoder_file"):
        rows.append(("decoder file", str(summary["decoder_file"])))
    rows += artefact_rows(run_dir, predictions="predictions.jsonl")
    extra = ([variants_table("compared on the same items", variants, summary.get("n_eval"),
                             main)] if len(variants) > 1 else [])
    return report("bbx decode fit", rows, summary, run_dir, extra)


def _predict(summary: dict[str, Any], run_dir: Path | str | None) -> RenderableType:
    rows: list[Row] = [("task", str(summary.get("task", "-"))),
                       ("texts labelled", num(summary.get("n", 0)))]
    if summary.get("accuracy") is not None:
        rows.append(accuracy_row(summary["accuracy"], summary.get("n_labelled"),
                                 split="labelled"))
    counts = summary.get("predicted") or {}
    rows.append(("predicted", ", ".join(f"{k} {v}" for k, v in counts.items())))
    rows.append(("decoder file", str(summary.get("decoder_file", "-"))))
    rows += [("predictions", str(p)) for p in summary.get("predictions", [])]
    return report("bbx decode predict", rows, summary, run_dir)
