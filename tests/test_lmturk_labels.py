"""The label-quality experiment of the LMTurk report (scripts/lmturk_labels.py): its noise
is exactly the rate asked for and never keeps a label, and its table reads the numbers of a
hand-made result file (no model)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))

import lmturk_labels  # noqa: E402


def test_noise_replaces_exactly_the_share_asked_for_with_another_class() -> None:
    y = np.arange(200) % 4
    out = lmturk_labels.noisy(y, 0.7, 4, np.random.default_rng(0))
    assert int(np.sum(out != y)) == 60  # 30% of 200, every one of them a changed class
    assert set(out.tolist()) <= {0, 1, 2, 3}
    assert np.array_equal(lmturk_labels.noisy(y, 1.0, 4, np.random.default_rng(0)), y)


def _cell(seed: int) -> dict:
    return {
        "task": "trec", "seed": seed, "items": 8, "eval": 4, "gold": 6, "same_items": False,
        "workers_label_accuracy": 0.5,
        "gold_only": "1100", "workers": "0000", "workers_unweighted": "1000",
        "workers_at_test": "1110",
        "noise": {"matched": {"accuracy": 0.5, "draws": 2, "hits": [2, 2, 1, 1]},
                  "0.5": {"accuracy": 0.5, "draws": 2, "hits": [2, 2, 1, 1]},
                  "1.0": {"accuracy": 1.0, "draws": 1, "hits": [1, 1, 1, 1]}},
    }


def test_table_and_sentences_come_from_the_file() -> None:
    doc = {"draws": 2, "accuracies": [0.5, 1.0], "cells": [_cell(13), _cell(42)]}
    text = "\n".join(lmturk_labels.section_lines(doc, "trec"))
    assert lmturk_labels.section_lines(doc, "sst-2") == []
    # the matched-noise student scores 0.75 per seed, the workers' labels (weight 1) 0.25
    assert ("| gold labels with uniform errors, as often right as the workers' | "
            "0.500 ± 0.000 | 0.750 ± 0.000 | +50.0") in text
    assert "| gold labels (all right) | 1.00 | 1.000 ± 0.000 |" in text
    assert "| none (the gold examples only) | – | 0.500 ± 0.000 |" in text
    # the workers at test score 0.75: uniform errors at 50% reach them, and beat gold-only
    assert "first reaches the workers' test accuracy (0.750) at 50% right labels" in text
    assert "first exceeds the gold-only student (0.500) at 50%" in text
    assert "the workers' labels are 50% right." in text
