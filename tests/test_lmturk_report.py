"""The LMTurk report on hand-made run directories of the grid (no model): its paired
differences, verdicts, the paper's claim beside what was found, the reproduce command."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))

import lmturk_report  # noqa: E402

ALL, NONE = "1" * 10, "0" * 10
HALF = "0" * 5 + "1" * 5


def _summary(task: str, acq: str, mode: str, student: str, whole: str = ALL,
             workers: str = NONE) -> dict:
    acc = student.count("1") / len(student)
    return {
        "task": task, "acquisition": acq, "aggregation": "mean", "workers": 3, "gold": 32,
        "pool": 40, "pool_source": "seeded half of the test split", "eval": len(student),
        "features": "minilm", "query_budget": 90, "queries": 90, "labelled": 30, "accuracy": acc,
        "gold_only_accuracy": 0.0, "correct": student, "gold_only_correct": NONE,
        "upper_bound_accuracy": 0.9, "label_accuracy": {"mean": 0.8},
        "workers_eval": {"items": len(workers), "per_worker": [0.1, 0.2, 0.3], "mean": 0.0,
                         "majority": 0.0, "dawid-skene": 0.0, "tokens_per_item": 50.0,
                         "correct": workers},
        "finetuned": {"accuracy": 0.0, "correct": workers, "gold_only_accuracy": 1.0,
                      "gold_only_correct": ALL},
        "whole_pool": {"items": 40, "queries": 120, "accuracy": 1.0, "correct": whole},
        "usage": {"by_verb": {"label_logprobs": 100}}, "run_wall_s": 6.0,
    }


def _write(root: Path, summary: dict, seed: int, mode: str, extra: list[str]) -> None:
    from blackbox.recipes import load_recipe

    cell = [f"task={summary['task']}", f"seed={seed}", f"acquisition={summary['acquisition']}",
            f"label_mode={mode}", *extra]
    recipe = load_recipe(REPO / "recipes" / "lmturk-grid.yaml", cell).model_dump(mode="json")
    d = root / f"{summary['task']}-s{seed}-{summary['acquisition']}-{mode}"
    d.mkdir(parents=True)
    (d / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    (d / "summary.json").write_text(json.dumps(summary))
    (d / "rounds.jsonl").write_text(
        json.dumps({"round": 0, "queries": 0, "accuracy": 0.0}) + "\n"
        + json.dumps({"round": 1, "queries": 90, "accuracy": summary["accuracy"]}) + "\n")


def _grid(root: Path) -> None:
    """sst-2, seeds 13 and 42, random and entropy, soft and hard: the soft linear student is
    right everywhere, the hard one nowhere (as the workers); trec: one seed, one cell."""
    for seed in (13, 42):
        for acq in ("random", "entropy"):
            _write(root, _summary("sst-2", acq, "soft", ALL), seed, "soft", ["eval_limit=10"])
            _write(root, _summary("sst-2", acq, "hard", NONE), seed, "hard", ["eval_limit=10"])
    trec = _summary("trec", "random", "soft", HALF, workers="0101010101")
    trec["stopped"] = "pool exhausted"  # the budget labelled the whole pool
    trec["notes"] = {"overlap": [{"fit": "pool", "held_out": "evaluation set", "count": 1,
                                  "of": 10, "example": "What is diabetes ?"}]}
    _write(root, trec, 13, "soft", ["eval_limit=10"])


FULL, ZERO, LOST = "+100.0 [+100.0, +100.0]", "+0.0 [+0.0, +0.0]", "-100.0 [-100.0, -100.0]"


def test_paired_rows_and_verdicts(tmp_path: Path) -> None:
    _grid(tmp_path)
    runs = lmturk_report.load_runs(tmp_path)
    assert len(runs) == 9
    sst = [r for r in runs if r["task"] == "sst-2"]
    comps = lmturk_report.comparisons(sst)
    lines = lmturk_report.paired_lines(comps, [10], same=False)
    assert lines[0].startswith("Paired differences at the end of the budget, accuracy points "
                               "[95% bootstrap interval over the 10 evaluation items per seed, "
                               "each seed's own")
    for row in [
        f"| linear − workers | random, soft | {FULL} | {FULL} | {FULL} | beats |",
        f"| linear − workers | entropy, hard | {ZERO} | {ZERO} | {ZERO} "
        "| is not distinguishable from |",
        f"| fine-tuned − fine-tuned on gold only | random, soft | "
        f"{LOST} | {LOST} | {LOST} | loses to |",
        f"| linear: budget − whole pool | random, hard | {LOST} | {LOST} | {LOST} | loses to |",
        f"| linear: soft − hard | entropy | {FULL} | {FULL} | {FULL} | beats |",
        f"| linear: acquisition − random | entropy − random, soft | {ZERO} | {ZERO} | {ZERO} "
        "| is not distinguishable from |",
    ]:
        assert row in lines, row
    said = lmturk_report.verdict_lines("sst-2", comps)
    assert said[0] == (
        f"- sst-2: the linear student beats the workers in 2 of 4 cells: random, soft ({FULL}), "
        f"entropy, soft ({FULL}); is not distinguishable from the workers in 2 of 4 cells: "
        f"random, hard ({ZERO}), entropy, hard ({ZERO}) (mean over 2 seeds).")
    claim = "\n".join(lmturk_report.claim_lines({"sst-2": comps}, sst))
    assert ("- the linear student (logistic regression on frozen MiniLM features) beats the "
            "workers in 2 of 4 cells (task × acquisition × labels, mean over seeds), is not "
            "distinguishable in 2, loses in 0; it is not below the workers in 4 of 4 "
            "cells;") in claim
    assert ("- the fine-tuned student (MiniLM fine-tuned end to end) beats the workers in 0 of "
            "4 cells (task × acquisition × labels, mean over seeds), is not distinguishable in "
            "4, loses in 0; it is not below the workers in 4 of 4 cells;") in claim
    assert ("against the workers labelling the whole pool (120 queries): the linear student "
            "beats the linear student of the whole pool in 0 of 4 cells") in claim
    assert "loses in 2 (sst-2 random/hard, sst-2 entropy/hard)." in claim


def test_one_seed_interval_is_that_seeds_own(tmp_path: Path) -> None:
    from blackbox.stats import format_diff, paired_bootstrap

    _grid(tmp_path)
    trec = [r for r in lmturk_report.load_runs(tmp_path) if r["task"] == "trec"]
    comps = lmturk_report.comparisons(trec)
    lines = lmturk_report.paired_lines(comps, [10], same=False)
    d = format_diff(paired_bootstrap("0101010101", HALF))
    assert (f"| linear − workers | random, soft | {d} | – | "
            "is not distinguishable from |") in lines
    assert lmturk_report.verdict_lines("trec", comps)[0] == (
        f"- trec: the linear student is not distinguishable from the workers in 1 of 1 cells: "
        f"random, soft ({d}) (one seed).")


def test_report_script_renders_the_grid(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    runs, out = tmp_path / "runs", tmp_path / "lmturk.md"
    _grid(runs)
    # scripts/lmturk_labels.py's file beside the runs, for trec only: its table goes there
    cell = {"task": "trec", "seed": 13, "items": 8, "eval": 4, "gold": 6, "same_items": False,
            "workers_label_accuracy": 0.5, "gold_only": "1100", "workers": "0000",
            "workers_unweighted": "1000", "workers_at_test": "1110",
            "noise": {"matched": {"accuracy": 0.5, "draws": 1, "hits": [1, 1, 0, 1]},
                      "1.0": {"accuracy": 1.0, "draws": 1, "hits": [1, 1, 1, 1]}}}
    (runs / "label-quality.json").write_text(json.dumps(
        {"draws": 1, "accuracies": [1.0], "cells": [cell]}))
    out.write_text("# kept\n<!-- generated:start -->\nold\n<!-- generated:end -->\ntail\n")
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "lmturk_report.py"),
                           "--runs", str(runs), "--out", str(out)], capture_output=True,
                          text=True, cwd=REPO, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    text = out.read_text()
    assert text.startswith("# kept\n") and text.endswith("tail\n") and "\nold\n" not in text
    assert "**The paper's claim beside what was found.**" in text
    assert "evaluation set: 10 items per seed (the other half)" in text
    assert ("| random | soft | 1.000 ± 0.000 | 0.000 ± 0.000 | 0.000 ± 0.000 | 1.000 ± 0.000 "
            "| 90 | 2 |") in text
    # the grid command, its overrides read back from the runs' recipes
    assert (" --tasks sst-2 trec --seeds 13 42 --acquisitions random entropy --label-modes "
            "soft hard --set eval_limit=10 --lock /tmp/bbx-heavy.lock") in text
    assert "recipes/lmturk-grid.yaml" in text
    assert ("(allow_overlap; from their notes): trec s13: 1 of 10 evaluation set texts also in "
            "the pool (e.g. 'What is diabetes ?').") in text
    # trec's pool ran out before its budget: its acquisition rows cannot say anything, and
    # the report says why (once: sst-2's runs spent their budget)
    assert text.count("The budget outlasts this pool") == 1
    assert ("every run stopped with the pool exhausted after labelling all 40 items (90 of 90 "
            "queries), so every acquisition function ends on the same labelled set") in text
    assert text.index("### trec") < text.index("The budget outlasts this pool")
    assert text.count("**How right must the labels be?**") == 1
    assert text.index("### trec") < text.index("**How right must the labels be?**")
    assert "| gold labels (all right) | 1.00 | 1.000 | +75.0" in text
    assert ".venv/bin/python scripts/lmturk_labels.py --runs " in text
    assert (tmp_path / "lmturk" / "lmturk-sst-2.png").is_file()
    assert "![sst-2 learning curves](lmturk/lmturk-sst-2.png)" in text


def test_label_balance_counts_each_seeds_labels_once(tmp_path: Path) -> None:
    """Workers that say "positive" to 3 of 4 items, half of them negative: the table shows
    0.75 against the gold 0.50, counted once per seed although two label modes ran."""
    _grid(tmp_path)
    rows = [{"aggregated": "positive", "gold": g} for g in ("positive", "negative")] + [
        {"aggregated": "positive", "gold": "positive"}, {"aggregated": "negative",
                                                         "gold": "negative"}]
    for d in tmp_path.glob("sst-2-s*-random-*"):
        (d / "label_noise.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    runs = [r for r in lmturk_report.load_runs(tmp_path) if r["task"] == "sst-2"]
    lines = lmturk_report.balance_lines(runs)
    assert "| random | 8 | 0.25 / 0.50 | 0.75 / 0.50 |" in lines
    assert not any(line.startswith("| entropy") for line in lines)  # no label rows there



def test_against_another_grid_pairs_the_same_cells(tmp_path: Path) -> None:
    """A grid whose trec linear student is right on the half the other one misses: +0.0 for
    every sst-2 cell, and the trec difference is that seed's paired one."""
    from blackbox.stats import format_diff, paired_bootstrap

    _grid(tmp_path / "a")
    _grid(tmp_path / "b")
    run = tmp_path / "b" / "trec-s13-random-soft" / "summary.json"
    s = json.loads(run.read_text())
    s["correct"] = "1" * 5 + "0" * 5  # HALF reversed
    run.write_text(json.dumps(s))
    a = lmturk_report.load_runs(tmp_path / "a")
    b = lmturk_report.load_runs(tmp_path / "b")
    trec = lmturk_report.against_comparisons([r for r in a if r["task"] == "trec"], b, "B")
    linear = next(c for c in trec if c["row"] == "linear: this grid − B")
    assert format_diff(linear["pooled"]) == format_diff(paired_bootstrap("1" * 5 + "0" * 5, HALF))
    assert linear["object"] == "the linear student of B"
    sst = lmturk_report.against_comparisons([r for r in a if r["task"] == "sst-2"], b, "B")
    assert {format_diff(c["pooled"]) for c in sst} == {ZERO}
    assert len(sst) == 3 * 4  # linear, fine-tuned, workers x 4 cells
