"""``bbx report``: every kind of run directory renders as a person reads it, with the numbers
its summary holds (accuracy and test size, what was found, what was paid)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import REPO, bbx
from rich.console import Console

from blackbox.api import report, run_recipe
from blackbox.methods.view import pct
from blackbox.report import render

# one committed run directory of each kind (the shapes real runs leave behind)
COMMITTED = {
    "search-prompt": "results/claps-runs/20261201-071803-claps-genetic-sst-2-s42",
    "distill": "results/lmturk-runs/agnews-s13-entropy",
    "decode": "results/mpd-runs/20261201-211111-mpd-sst-2-k16-s13",
    "own-eval": "results/own-data-runs/zero-shot/20261201-205209-eval-own-task-s42",
    "own-decode": "results/own-data-runs/decode/20261201-205512-decode-own-task-s42",
    "own-distill": "results/own-data-runs/distill/20261201-205547-distill-own-task-s42",
    "own-search-prompt":
        "results/own-data-runs/search-prompt/20261201-205309-search-prompt-own-task-s42",
}


def text_of(renderable: object) -> str:
    """What a terminal of 200 columns shows, without styles."""
    console = Console(width=200, record=True, color_system=None, file=open("/dev/null", "w"))  # noqa: SIM115
    console.print(renderable)
    return console.export_text()


def _accuracy_and_n(summary: dict) -> tuple[float, int]:
    from blackbox.runs import held_out

    shown = held_out(summary)
    assert shown is not None
    return shown[2], shown[1]


@pytest.mark.parametrize("kind", sorted(COMMITTED))
def test_committed_runs_render_their_key_numbers(kind: str) -> None:
    run_dir = REPO / COMMITTED[kind]
    if not run_dir.is_dir():
        pytest.skip(f"{COMMITTED[kind]} is not in this checkout")
    rep = report(run_dir)
    out = text_of(rep.renderable())
    acc, n = _accuracy_and_n(rep.summary)
    assert f"{pct(acc)}" in out and f"on {n} items" in out
    assert f"{rep.summary['usage']['queries']:,}" in out  # queries paid
    assert f"{rep.summary['usage']['tokens']:,}" in out
    assert str(run_dir) in out
    assert "ledger_rows_this_run" not in out  # raw keys stay behind --json
    if rep.summary["method"] == "search-prompt":
        assert repr(rep.summary["best_prompt"]) in out
        pruning = json.loads((run_dir / "pruning.json").read_text())
        assert f"{pct(pruning['empty_prompt']['acc'])} (no prompt) → " in out  # before → after
    if rep.summary["method"] == "distill":
        assert pct(rep.summary["gold_only_accuracy"]) in out  # before → after
    if rep.summary["method"] == "decode" and "zero-shot" in rep.summary["variants"]:
        assert pct(rep.summary["variants"]["zero-shot"]["accuracy"]) + " (zero-shot)" in out


def test_the_cli_report_renders_a_committed_run_and_keeps_json() -> None:
    run_dir = COMMITTED["search-prompt"]
    proc = bbx("report", run_dir)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads((REPO / run_dir / "summary.json").read_text())
    assert pct(summary["test"]["accuracy"]) in proc.stdout and "prompt found" in proc.stdout
    raw = json.loads(bbx("report", run_dir, "--json").stdout)
    assert raw["test"]["accuracy"] == summary["test"]["accuracy"] and "ledger" in raw


def _merge(tmp_path: Path) -> Path:
    recipe = REPO / "recipes" / "merge-dry-run.yaml"
    return run_recipe(recipe, overrides=[f"output_dir={tmp_path}", "test_limit=20",
                                         "stage1.evaluations=8", "stage2.evaluations=8"],
                      progress=False).run_dir


def test_merge_run_shows_the_mixture_and_each_stage(tmp_path: Path) -> None:
    rep = report(_merge(tmp_path))
    out = text_of(rep.renderable())
    assert pct(rep.summary["test"]["accuracy"]) in out and "on 20 items" in out
    assert "search stage1" in out and "mixture found" in out
    for name in rep.summary["adapter"]["adapters"]:
        assert name in out


def test_chain_renders_one_table_across_its_steps(tmp_path: Path) -> None:
    chain = {"name": "c", "task": "sst-2", "backend": {"kind": "fake"},
             "output_dir": str(tmp_path / "runs"),
             "steps": [{"name": "zero", "method": "eval", "limit": 20},
                       {"name": "dec", "method": "decode", "shots": 2, "test_limit": 20,
                        "neighbours": 1}]}
    result = run_recipe(chain, progress=False)
    out = text_of(report(result.run_dir).renderable())
    assert "bbx chain" in out and "zero" in out and "dec" in out
    for row in result.summary["steps"]:
        assert f"{pct(row['accuracy'])} (test, {row['n']} items)" in out
    assert str(result.summary["deploy"]) in out


def test_dollars_are_shown_when_the_usage_has_them() -> None:
    summary = {"method": "eval", "task": "t", "accuracy": 0.5, "n": 10, "split": "test",
               "template": "{text}", "usage": {"queries": 10, "tokens": 99, "cached": 0,
                                                "usd": 0.0123}}
    out = text_of(render(summary))
    assert "$0.0123" in out and "50.0% on 10 items" in out
    assert "$" not in text_of(render({**summary, "usage": {"queries": 1, "tokens": 1}}))


def test_unknown_and_failed_runs_fall_back_to_a_generic_view() -> None:
    out = text_of(render({"method": "my-plugin", "score": 0.25, "test": {"accuracy": 0.8,
                                                                          "n": 5}}))
    assert "bbx my-plugin" in out and "80.0% on 5 items" in out and "0.2500" in out
    failed = text_of(render({"status": "failed", "error": "budget exhausted",
                             "usage": {"queries": 3, "tokens": 7}}))
    assert "failed" in failed and "budget exhausted" in failed


def test_decode_predict_summary_renders() -> None:
    out = text_of(render({"method": "decode", "action": "predict", "task": "t", "n": 4,
                          "predicted": {"a": 3, "b": 1}, "decoder_file": "d.safetensors",
                          "predictions": ["p.jsonl"], "n_labelled": 4, "accuracy": 0.75}))
    assert "75.0% on 4 items" in out and "a 3, b 1" in out and "p.jsonl" in out


@pytest.mark.parametrize("method", ["eval", "search-prompt", "decode", "distill", "merge"])
def test_every_renderer_shows_a_failed_run(method: str) -> None:
    out = text_of(render({"method": method, "status": "failed", "error": "budget exhausted",
                          "usage": {"queries": 3, "tokens": 7, "cached": 0},
                          "run_wall_s": 1.5}))
    assert "failed: budget exhausted" in out and "1.5 s" in out


def test_a_failed_run_directory_is_reported_by_its_recipes_method(tmp_path: Path) -> None:
    (tmp_path / "recipe.yaml").write_text("method: search-prompt\ntask: sst-2\n")
    (tmp_path / "summary.json").write_text(json.dumps(
        {"status": "failed", "error": "budget.max_queries reached", "paid_rows": 5,
         "usage": {"queries": 5, "tokens": 50, "cached": 0}, "run_wall_s": 2.0}))
    out = text_of(report(tmp_path).renderable())
    assert "bbx search-prompt (ClaPS)" in out and "failed: budget.max_queries reached" in out


def test_a_seed_split_over_machines_is_named_with_the_dtype_its_cells_share(
        tmp_path: Path) -> None:
    from blackbox.runs import machines_lines

    def cell(name: str, cpu: str, dtype: str) -> Path:
        d = tmp_path / name
        d.mkdir()
        (d / "manifest.json").write_text(json.dumps({
            "host": {"cpu": cpu, "cpu_units": ["avx2"]},
            "backend": {"capabilities": {"extra": {"dtype": dtype}}}}))
        return d

    lines = machines_lines([(cell("a", "CPU A", "float32"), "mr s100"),
                            (cell("b", "CPU B", "float32"), "mr s100"),
                            (cell("c", "CPU A", "float32"), "mr s42"),
                            (cell("d", "CPU A", "bfloat16"), "sst-2 s13"),
                            (cell("e", "CPU B", "float32"), "sst-2 s13")])
    only32 = machines_lines([(tmp_path / "a", "mr s100"), (tmp_path / "b", "mr s100")])
    assert ("- split over machines, every cell float32 (their paired differences include the "
            "machines' float differences): mr s100") in only32
    assert "- CPU A (avx2): 3 cells (mr s100 ×1, mr s42 ×1, sst-2 s13 ×1)" in lines
    assert ("- split over machines (their paired differences include the machines' float "
            "differences): mr s100 (every cell float32), sst-2 s13") in lines
