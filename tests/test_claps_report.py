"""The ClaPS report: its paired differences and verdicts on hand-made runs (exact lines), and
the grid and report scripts end to end on the dry-run fake: a partial grid (one task, one
seed, three methods) still renders every table, marks the missing cells, counts the
finished runs, draws the efficiency plot and states the command that reproduces it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))

import claps_report  # noqa: E402


def _run(task: str, seed: int, method: str, correct: str) -> dict:
    return {"task": task, "seed": seed, "method": method, "test_correct": correct,
            "test_n": len(correct), "train_queries": 800, "pruning_queries": 0}


def test_paired_differences_and_verdicts_from_the_intervals() -> None:
    none, all_ = "0" * 10, "1" * 10
    runs = [_run("sst-2", sd, m, c) for sd in (13, 21) for m, c in (
        ("manual", none), ("random-search", all_), ("random-prune", all_),
        ("claps-greedy", all_), ("claps-genetic", none))]
    runs.append(_run("trec", 13, "manual", "0101010101"))
    runs.append(_run("trec", 13, "claps-greedy", "0101010101"))
    comps = claps_report.comparisons(runs)
    # 2 variants x 3 baselines on sst-2; trec: greedy vs manual only (one seed)
    assert [(c["task"], c["method"], c["base"]) for c in comps][-1] == (
        "trec", "claps-greedy", "manual") and len(comps) == 7
    lines = claps_report.paired_tables(comps)
    assert "*sst-2*: 10 test items per seed, the same items for every seed and method." in lines
    full = "+100.0 [+100.0, +100.0]"
    assert (f"| ClaPS-greedy − manual (no prompt) | {full} | {full} | {full} | beats |"
            in lines)
    zero = "+0.0 [+0.0, +0.0]"
    assert (f"| ClaPS-greedy − random search, full vocab | {zero} | {zero} | {zero} "
            "| is not distinguishable from |") in lines
    lost = "-100.0 [-100.0, -100.0]"
    assert (f"| ClaPS-genetic − random pruning + genetic | {lost} | {lost} | {lost} "
            "| loses to |") in lines
    assert f"| ClaPS-greedy − manual (no prompt) | {zero} | – | is not distinguishable from |" \
        in lines  # trec: one seed, no mean over seeds
    said = claps_report.verdict_lines(comps)
    assert said[0] == (
        "- sst-2, ClaPS-greedy (mean over 2 seeds, points [95% interval]): beats manual (no "
        f"prompt), {full} (seed by seed: 2 above zero, 0 below, 0 holding zero); is not "
        f"distinguishable from random search, full vocab, {zero} (seed by seed: 0 above zero, "
        "0 below, 2 holding zero); is not distinguishable from random pruning + genetic, "
        f"{zero} (seed by seed: 0 above zero, 0 below, 2 holding zero).")
    assert said[-1] == ("- trec, ClaPS-greedy (one seed, points [95% interval]): is not "
                        f"distinguishable from manual (no prompt), {zero} (seed 13 only).")
    claim = "\n".join(claps_report.claim_lines(runs, comps, []))
    assert ("of 7 comparisons (task × ClaPS variant × baseline, mean over seeds), ClaPS beats "
            "the baseline in 1, is not distinguishable from it in 4 and loses to it in 2 "
            "(sst-2: ClaPS-genetic − random search, full vocab; sst-2: ClaPS-genetic − random "
            "pruning + genetic). ClaPS ≥ every baseline (no loss) holds for 2 of 3 (task, "
            "variant) pairs: sst-2 ClaPS-greedy, trec ClaPS-greedy.") in claim
    assert "ClaPS-greedy 800; ClaPS-genetic 800; random search, full vocab 800." in claim


def test_pooled_interval_draws_the_shared_items_once() -> None:
    from blackbox.stats import paired_bootstrap

    a, b = "0011001100", "1011101110"
    runs = [_run("mr", sd, m, c) for sd in (13, 21) for m, c in (("manual", a),
                                                                 ("claps-greedy", b))]
    pooled = claps_report.comparisons(runs)[0]["pooled"]
    # both seeds are the same pair, so the mean over seeds is that pair's own interval
    assert pooled["diff"] == paired_bootstrap(a, b)["diff"] == 0.3
    assert (pooled["lo"], pooled["hi"]) == (paired_bootstrap(a, b)["lo"],
                                            paired_bootstrap(a, b)["hi"])


def _script(name: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(REPO / "scripts" / name), *args],
                          capture_output=True, text=True, cwd=REPO, timeout=600)


def test_partial_grid_report(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    runs = tmp_path / "runs"
    # the earlier scaled recipe as the base, its queries as they are (--search-trials 0)
    old = ["--base", str(REPO / "recipes" / "claps-sst2.yaml"), "--search-trials", "0"]
    grid = _script("claps_grid.py", "--fake", "--runs", str(runs), "--tasks", "sst-2",
                   "--seeds", "13", "--methods", "manual", "random-search", "claps-greedy",
                   "--set", "test_limit=40", *old)
    assert grid.returncode == 0, grid.stderr[-2000:]
    assert grid.stdout.count("== claps-") == 3
    assert (runs / "responses").is_dir()  # the dry run keeps its cache with its runs
    again = _script("claps_grid.py", "--fake", "--runs", str(runs), "--tasks", "sst-2",
                    "--seeds", "13", "--methods", "manual", "--set", "test_limit=40", *old)
    assert "== " not in again.stdout  # finished cells are skipped

    out = tmp_path / "claps.md"
    out.write_text("# prose kept\n\n<!-- BEGIN generated by scripts/claps_report.py: do not "
                   "edit by hand -->\nstale generated table\n<!-- END generated -->\ntail kept\n")
    plot, js = tmp_path / "eff.png", tmp_path / "runs.json"
    rep = _script("claps_report.py", "--runs", str(runs), "--out", str(out), "--plot",
                  str(plot), "--json", str(js), old[0], old[1])
    assert rep.returncode == 0, rep.stderr[-2000:]
    text = out.read_text()
    assert text.startswith("# prose kept") and text.endswith("tail kept\n")
    assert "stale generated table" not in text
    assert "**3 of 100 grid runs finished**" in text and "97 missing" in text
    rows = {ln.split(" | ")[0].strip("| "): ln for ln in text.splitlines()
            if ln.startswith("| ") and " | sst-2 | " not in ln}
    assert "(1/5)" in rows["ClaPS-greedy"] and "missing" in rows["ClaPS-greedy"]
    assert rows["ClaPS-genetic"].count("missing") == 7  # 4 tasks + queries, paid, wall
    eff = [ln for ln in text.splitlines() if ln.startswith("| sst-2 | 13 |")]
    # the two efficiency rows (train accuracy, train reward), the searched runs' prompts
    assert len(eff) == 4
    for row in eff[:2]:
        assert "of 5000" in row and row.rstrip(" |").endswith("missing")  # genetic: not run
    assert "Goal (at most 20%" in text
    paired = [ln for ln in text.splitlines() if ln.startswith("| ClaPS-greedy − ")]
    # vs manual and vs random search, seed 13 only: no mean over seeds, the seed's verdict
    assert len(paired) == 2 and all(" | – | " in ln and "[" in ln for ln in paired)
    assert "*sst-2*: 40 test items per seed" in text
    assert "- sst-2, ClaPS-greedy (one seed, points [95% interval]): " in text
    assert "**The paper's claims beside what was found.**" in text
    # the command that makes these runs, read back from their recipes
    assert (" --base recipes/claps-sst2.yaml --tasks sst-2 --seeds 13 --methods manual "
            "random-search claps-greedy --search-trials 0 --set test_limit=40 "
            "--lock /tmp/bbx-heavy.lock`") in text
    assert "scripts/claps_grid.py --fake --runs " in text
    assert plot.stat().st_size > 10_000
    data = json.loads(js.read_text())
    assert len(data["runs"]) == 3 and data["efficiency"][0]["task"] == "sst-2"
