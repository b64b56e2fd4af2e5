"""Whole methods through the remote backend against a third-party server: a tiny LMTurk
distill run and a tiny ``bbx search-prompt``, each with an exact count of what it pays.

Shared by the llama.cpp server tests (``test_remote_llama_server.py``: the C++
``llama-server``; ``test_remote_llamacpp.py``: llama-cpp-python's server). Each function
runs one case against the server at ``url`` with a fresh response cache and asserts on it.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pytest

KEY_ENV = "BBX_TEST_NO_SUCH_KEY"  # unset: a self-hosted server gets the placeholder key
WORDS = [" negative", " positive"]
POSITIVE = ["a warm, funny and moving film", "one of the best movies of the year",
            "the acting is superb and the story is gripping", "a delightful, charming comedy",
            "beautifully shot and wonderfully acted", "i loved every minute of it",
            "a triumph of storytelling", "smart, touching and very entertaining"]
NEGATIVE = ["a dull, lifeless and boring mess", "one of the worst movies of the year",
            "the acting is wooden and the plot makes no sense", "a tedious, unfunny comedy",
            "badly shot and poorly acted", "i hated every minute of it",
            "a complete waste of time", "stupid, clumsy and very annoying"]


def reviews_task(folder: Path) -> dict[str, Any]:
    """A 16-review task in one file, with two templates (so two workers' prompts differ and
    none is paid for twice)."""
    data = folder / "reviews.csv"
    with data.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["text", "label"])
        for pos, neg in zip(POSITIVE, NEGATIVE, strict=True):
            w.writerow([pos, "positive"])
            w.writerow([neg, "negative"])
    return {"name": "reviews", "path": str(data), "labels": ["negative", "positive"],
            "label_words": WORDS,
            "templates": ["Review: {text}\nSentiment:", "Text: {text}\nOpinion:"]}


def distill_with_workers(url: str, tmp_path: Path, api: str) -> dict[str, Any]:
    """A tiny distill run: 2 workers, 6 calibration queries + one round of 2 items x 2
    workers = the budget of 10, all paid (one ledger row each); the workers' labels are
    recorded per item. Returns the summary."""
    from blackbox.api import run_recipe

    result = run_recipe({
        "method": "distill", "task": reviews_task(tmp_path), "shots": 2, "workers": 2,
        "demos_per_class": 1, "batch": 2, "queries": 10, "eval_workers": False,
        "backend": {"kind": "remote", "base_url": url, "api": api, "api_key_env": KEY_ENV,
                    "timeout": 120, "max_concurrency": 4},
        "output_dir": str(tmp_path / "runs"), "cache_dir": str(tmp_path / "cache")},
        progress=False)
    s, rd = result.summary, Path(result.run_dir)
    assert s["queries"] == 10 and s["labelled"] == 2 and s["rounds"] == 1 and s["calibrated"]
    assert s["stopped"] == "query budget reached"
    assert s["usage"]["by_verb"] == {"label_logprobs": 10}
    assert s["usage"]["queries"] == 10 and s["usage"]["cached"] == 0
    assert s["ledger_rows_this_run"] == 10 and s["workers_eval"] is None
    noise = [json.loads(x) for x in (rd / "label_noise.jsonl").read_text().splitlines()]
    assert len(noise) == 2
    assert all(len(r["workers"]) == 2 and set(r["workers"]) <= {"negative", "positive"}
               for r in noise)
    workers = json.loads((rd / "workers.json").read_text())
    assert len(workers) == 2 and all(w["content_free_bias"] for w in workers)
    rounds = [json.loads(x) for x in (rd / "rounds.jsonl").read_text().splitlines()]
    assert [r["queries"] for r in rounds] == [0, 10]
    manifest = json.loads((rd / "manifest.json").read_text())
    assert manifest["backend"]["capabilities"]["extra"]["api"] == api
    assert "label_scores" in s["notes"]  # what the top-k mode costs the workers' labels
    return s


def search_prompt_cli(url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                      api: str) -> dict[str, Any]:
    """``bbx search-prompt`` end to end: the built-in word list (the server lists no
    vocabulary), no clustering or pruning (no embeddings route needed), random search over
    2-word prompts with 4 train queries (2 prompts x the 2 one-shot train examples), each
    re-scored on the 2 dev examples, the winner on 4 test items: 12 paid queries, one
    ledger row each. Returns the summary."""
    from typer.testing import CliRunner

    from blackbox.cli.main import app

    monkeypatch.setenv("BBX_RESPONSES_DIR", str(tmp_path / "responses"))
    res = CliRunner().invoke(app, [
        "search-prompt", "--task", "sst-2", "--shots", "1", "--search", "random",
        "--clusters", "0", "--prune", "none", "--length", "2", "--budget", "4",
        "--train-batch", "2", "--test-limit", "4", "--backend", "remote", "--base-url", url,
        "--api", api, "--api-key-env", KEY_ENV, "--json", "--no-progress",
        "--output-dir", str(tmp_path / "runs")])
    assert res.exit_code == 0, res.output
    s = json.loads(res.stdout)
    assert s["method"] == "search-prompt" and s["vocab"]["source"] == "builtin"
    assert s["queries"] == {"budget": 4, "pruning": 0, "search": 4, "train_total": 4}
    assert s["search"]["trials"] == 2 and s["test"]["n"] == 4
    assert len(s["best_tokens"]) == 2 and s["best_prompt"]
    assert s["usage"]["queries"] == 4 + 2 * 2 + 4 and s["usage"]["cached"] == 0
    assert s["ledger_rows_this_run"] == 12
    assert 0.0 <= s["test"]["accuracy"] <= 1.0
    manifest = json.loads((Path(s["run_dir"]) / "manifest.json").read_text())
    assert manifest["backend"]["capabilities"]["extra"]["api"] == api
    return s
