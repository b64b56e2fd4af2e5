"""``bbx report`` for a ClaPS run (``search-prompt``): the prompt found and what it cost."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import RenderableType

from blackbox.methods.view import Row, accuracy_row, artefact_rows, duration, num, pct, report


def render(summary: dict[str, Any], run_dir: Path | str | None = None) -> RenderableType:
    """The search-prompt run's report: held-out accuracy of the prompt found, the search."""
    test, dev, train = (summary.get(k) or {} for k in ("test", "dev", "train"))
    rows: list[Row] = [("task", str(summary.get("task", "-")))]
    if test.get("accuracy") is not None:
        rows.append(accuracy_row(test["accuracy"], test.get("n")))
    empty = _empty_prompt_accuracy(run_dir)
    if train.get("accuracy") is not None:
        rows.append(accuracy_row(train["accuracy"], train.get("n"), empty, "no prompt",
                                 split="train"))
    if dev.get("accuracy") is not None:
        rows.append(("dev accuracy", f"{pct(dev['accuracy'])} (picks among the top prompts)"))
    if "best_prompt" in summary:
        rows.append(("prompt found", f"[bold]{summary['best_prompt']!r}[/]"))
    rows.append(("template", repr(summary.get("template", ""))))
    search = summary.get("search") or {}
    if search:
        stopped = summary.get("stopped") or search.get("stopped")
        rows.append(("search", f"{search.get('searcher', summary.get('searcher'))}: "
                               f"{search.get('trials', 0)} of {search.get('trial_budget', '-')}"
                               f" trials, best at trial {search.get('best_trial', '-')}"
                               + (f", stopped by {stopped}" if stopped else "")))
    vocab = summary.get("vocab") or {}
    if vocab:
        rows.append(("vocabulary", " → ".join(
            f"{num(vocab[k])} {k}" for k in ("candidates", "clustered", "pruned") if k in vocab)))
    q = summary.get("queries") or {}
    if q:
        parts = ", ".join(f"{k} {num(q.get(k, 0))}" for k in ("pruning", "search"))
        rows.append(("train queries", f"{num(q.get('train_total', 0))} of "
                                      f"{num(q.get('budget', '-'))} ({parts}; cached count)"))
    wall = summary.get("wall_s") or {}
    stages = [f"{k} {duration(v)}" for k, v in wall.items() if k != "total" and v >= 0.5]
    if stages:
        rows.append(("time by stage", ", ".join(stages)))
    rows += artefact_rows(run_dir, trials="trials.jsonl", pruning="pruning.json")
    return report("bbx search-prompt (ClaPS)", rows, summary, run_dir)


def _empty_prompt_accuracy(run_dir: Path | str | None) -> float | None:
    """The train accuracy without a prompt, which influence pruning measures first (its
    ``pruning.json``): the one "before" a search-prompt run holds."""
    import json

    path = Path(run_dir) / "pruning.json" if run_dir is not None else None
    if path is None or not path.is_file():
        return None
    try:
        acc = (json.loads(path.read_text()).get("empty_prompt") or {}).get("acc")
    except (json.JSONDecodeError, AttributeError):
        return None
    return float(acc) if isinstance(acc, (int, float)) else None
