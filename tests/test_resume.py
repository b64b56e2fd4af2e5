"""Resuming a search from trials.jsonl: replay, torn lines, mismatches, and a real SIGKILL."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from blackbox.errors import BbxError, BudgetExceeded
from blackbox.optim import BoxSpace, DiscreteSpace, make_optimizer, run_search

ROOT = Path(__file__).resolve().parent.parent
WORKER = Path(__file__).resolve().parent / "resume_worker.py"


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _comparable(rows: list[dict]) -> list[tuple]:
    return [(r["index"], r["batch"], r["value"], r["loss"], r["info"]) for r in rows]


def _counting_sphere(calls: list[list]):
    def objective(values):
        calls.extend(values)
        return [(sum((v - 0.3) ** 2 for v in x), {"n": len(x)}) for x in values]

    return objective


def _search(path: Path | None, calls: list[list], max_trials: int = 24, seed: int = 0,
            name: str = "ng:OnePlusOne"):
    opt = make_optimizer(name, BoxSpace(3, lower=-1.0, upper=1.0), seed=seed, batch_size=4,
                         budget=24)
    return run_search(_counting_sphere(calls), opt, max_trials=max_trials, batch_size=4,
                      trials_path=path, progress=False)


@pytest.mark.parametrize("name", ["ng:OnePlusOne", "cma", "random"])
def test_resume_replays_without_calling_the_objective(tmp_path, name):
    path = tmp_path / "trials.jsonl"
    reference = _search(None, [], name=name)
    first_calls: list[list] = []
    _search(path, first_calls, max_trials=12, name=name)  # a run stopped after 3 batches
    assert len(first_calls) == 12
    calls: list[list] = []
    resumed = _search(path, calls, name=name)
    assert resumed.n_replayed == 12 and len(calls) == 12  # only the 12 new trials evaluated
    assert resumed.history == reference.history
    assert resumed.best_value == reference.best_value
    assert [r["index"] for r in _rows(path)] == list(range(24))
    # a finished run resumed again evaluates nothing
    again: list[list] = []
    assert _search(path, again, name=name).n_replayed == 24 and again == []


def test_a_torn_last_line_is_ignored_and_repaired(tmp_path):
    path = tmp_path / "trials.jsonl"
    reference = _search(None, [])
    _search(path, [], max_trials=12)
    lines = path.read_text().splitlines(keepends=True)
    # keep batches 0-1 and one trial of batch 2, then a half-written row with no newline
    path.write_text("".join(lines[:9]) + lines[9][:25])
    calls: list[list] = []
    resumed = _search(path, calls)
    assert resumed.n_replayed == 9
    assert len(calls) == 24 - 9  # the torn batch's missing trials, then the rest
    assert resumed.history == reference.history
    rows = _rows(path)  # parses: the torn text was cut before new rows were appended
    assert [r["index"] for r in rows] == list(range(24))


def test_budget_running_out_while_completing_a_torn_batch_keeps_the_recorded_trials(tmp_path):
    path = tmp_path / "trials.jsonl"
    _search(path, [], max_trials=12)
    path.write_text("".join(path.read_text().splitlines(keepends=True)[:10]))

    def broke(values):
        raise BudgetExceeded("query budget reached")

    opt = make_optimizer("ng:OnePlusOne", BoxSpace(3, lower=-1.0, upper=1.0), seed=0,
                         batch_size=4, budget=24)
    result = run_search(broke, opt, max_trials=24, batch_size=4, trials_path=path,
                        progress=False)
    assert result.stopped == "budget"
    assert result.n_trials == result.n_replayed == 10
    assert result.best_loss == min(r["loss"] for r in _rows(path))


def test_a_changed_optimizer_asks_for_a_new_run_directory(tmp_path):
    path = tmp_path / "trials.jsonl"
    _search(path, [], max_trials=8, seed=0)
    with pytest.raises(BbxError, match="new run directory"):
        _search(path, [], seed=1)
    with pytest.raises(BbxError, match="new run directory"):
        _search(path, [], name="random")


def test_a_corrupt_complete_line_is_a_user_error(tmp_path):
    path = tmp_path / "trials.jsonl"
    path.write_text('{"index": 0, "value": [1], "loss": 1.0}\nnot json\n')
    with pytest.raises(BbxError, match="line 2"):
        _search(path, [])


def test_replayed_discrete_values_match_exactly(tmp_path):
    path = tmp_path / "trials.jsonl"

    def run(max_trials):
        opt = make_optimizer("ng:DiscreteOnePlusOne", DiscreteSpace(3, 6), seed=2, batch_size=3)
        return run_search(lambda vs: [float(sum(v)) for v in vs], opt, max_trials=max_trials,
                          batch_size=3, trials_path=path, progress=False)

    run(9)
    resumed = run(18)
    assert resumed.n_replayed == 9 and resumed.n_trials == 18


# -- a real SIGKILL ---------------------------------------------------------------------------
def _paid(ledger_lines: list[str]) -> list[str]:
    return [row["key"] for row in map(json.loads, ledger_lines) if not row["cached"]]


def test_a_search_killed_with_sigkill_resumes_and_pays_nothing_twice(tmp_path):
    import resume_worker  # tests/ is on sys.path under pytest

    killed, clean = tmp_path / "killed", tmp_path / "clean"
    resume_worker.main(clean, 0.0)  # the uninterrupted reference, same seed
    # The victim is forked so it starts without re-importing nevergrad (seconds on a busy
    # machine); it sleeps after paying for each batch and before recording it.
    victim = multiprocessing.get_context("fork").Process(target=resume_worker.main,
                                                          args=(killed, 0.3))
    victim.start()
    trials = killed / "trials.jsonl"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and victim.is_alive():
        if trials.exists() and len(trials.read_text().splitlines()) >= 12:  # 3 batches in
            break
        time.sleep(0.02)
    time.sleep(0.15)  # into the next batch: paid for and cached, not yet recorded
    os.kill(victim.pid, signal.SIGKILL)
    victim.join(timeout=30)
    assert victim.exitcode == -signal.SIGKILL, "the worker finished before it was killed"
    assert not (killed / "result.json").exists()
    n_before = len(_rows(trials))
    assert 12 <= n_before < resume_worker.MAX_TRIALS
    first_ledger = (killed / "ledger.jsonl").read_text().splitlines()
    assert len(first_ledger) > n_before  # the batch in flight was paid for

    # the restart is a fresh interpreter (its own hash seed, nothing inherited), like a user's
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    restart = subprocess.run([sys.executable, str(WORKER), str(killed), "0"], cwd=ROOT,
                             env=env, capture_output=True, text=True, timeout=120)
    assert restart.returncode == 0, restart.stderr

    rows = _rows(trials)
    indices = [r["index"] for r in rows]
    assert indices == list(range(resume_worker.MAX_TRIALS))  # none twice, none lost
    assert _comparable(rows) == _comparable(_rows(clean / "trials.jsonl"))
    result = json.loads((killed / "result.json").read_text())
    reference = json.loads((clean / "result.json").read_text())
    assert result["n_replayed"] == n_before
    assert result == {**reference, "n_replayed": n_before,
                      "paid_queries": result["paid_queries"]}

    all_ledger = (killed / "ledger.jsonl").read_text().splitlines()
    assert all_ledger[: len(first_ledger)] == first_ledger
    paid_first = _paid(first_ledger)
    paid_second = _paid(all_ledger[len(first_ledger):])
    assert not set(paid_first) & set(paid_second)  # the restart re-bought nothing
    assert result["paid_queries"] == len(paid_second)
    # between them the two processes paid for exactly what the uninterrupted run paid for
    assert sorted(paid_first + paid_second) == sorted(_paid(
        (clean / "ledger.jsonl").read_text().splitlines()))


def test_a_manifest_names_the_cpu_and_the_units_that_change_its_floats(tmp_path):
    """Runs compared across machines (a grid resumed elsewhere) must say where each ran."""
    from blackbox.machine import cpu_description
    from blackbox.runs import RunDir

    info = "model name\t: AMD EPYC 9R14\nflags\t\t: fpu sse2 avx2 avx512f avx512_bf16\n"
    assert cpu_description(info) == {"cpu": "AMD EPYC 9R14",
                                     "cpu_units": ["avx2", "avx512f", "avx512_bf16"]}
    assert cpu_description("")["cpu_units"] == []
    rd = RunDir.open({"seed": 1}, tmp_path, run_dir=tmp_path / "run")
    rd.write_manifest(method="x")
    host = json.loads((tmp_path / "run" / "manifest.json").read_text())["host"]
    assert host["cpu"] and isinstance(host["cpu_units"], list)


def test_a_saved_recipe_keeps_paths_inside_the_checkout_relative(tmp_path):
    """Committed grid runs must not carry a machine's folder names, and a run directory
    still resumes when it is reopened with the absolute form of the same output folder."""
    from blackbox.paths import repo_root
    from blackbox.runs import RunDir

    root = repo_root()
    assert root is not None
    recipe = {"seed": 1, "output_dir": str(root / "results" / "runs")}
    RunDir.open(recipe, tmp_path, run_dir=tmp_path / "run")
    import yaml

    saved = yaml.safe_load((tmp_path / "run" / "recipe.yaml").read_text())
    assert saved["output_dir"] == str(Path("results") / "runs")
    RunDir.open(recipe, tmp_path, run_dir=tmp_path / "run")  # same recipe: resumes
    with pytest.raises(BbxError, match="different recipe"):
        RunDir.open({**recipe, "seed": 2}, tmp_path, run_dir=tmp_path / "run")
