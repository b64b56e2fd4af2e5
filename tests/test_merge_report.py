"""The merge report on a partial grid copied from the committed runs: coverage names the
missing cells, every accuracy is read from a summary, and cells from two machines are
listed as such."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RUNS = REPO / "results" / "merge-runs"


def test_partial_grid_report_reads_every_number_from_the_runs(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    for cell in sorted(RUNS.glob("*-s42-*")):
        shutil.copytree(cell, runs / cell.name, ignore=shutil.ignore_patterns("merged",
                                                                              "ledger.jsonl"))
    assert len(list(runs.iterdir())) == 20  # sst-2 and trec, seed 42, all 10 variants
    manifest = runs / "trec-s42-evo" / "manifest.json"
    data = json.loads(manifest.read_text())
    data["host"].update(cpu="Some CPU", cpu_units=["avx2"])
    manifest.write_text(json.dumps(data))

    out = tmp_path / "evo-merge.md"
    run = subprocess.run([sys.executable, str(REPO / "scripts" / "merge_report.py"), "--runs",
                          str(runs), "--out", str(out), "--zoo", str(tmp_path / "no-zoo")],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    text = out.read_text()
    assert "20 of 56 cells" in text and "sst-2 s13 base" in text and "trec s87 dare" in text
    assert "- Some CPU (avx2): 1 cells (trec s42 ×1)" in text
    assert "not recorded" in text and "19 cells" in text
    for task in ("sst-2", "trec"):
        evo = json.loads((runs / f"{task}-s42-evo" / "summary.json").read_text())
        row = next(line for line in text.split(f"### {task}")[1].splitlines()
                   if line.startswith("| **Evo-Merging**"))
        assert row.split(" | ")[1] == f"{evo['test']['accuracy']:.3f}"  # one seed: no ± sd
        assert f"- {task}: measured order" in text
    assert "## The adapter zoo" not in text  # no zoo here: no zoo table made up
