"""The MPD report from run summaries: numbers read from the runs, paired intervals from
their per-item results, the same file on every regeneration (and, once the grid's runs are
committed, exactly the committed results/mpd.md)."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

from blackbox.api import run_recipe
from blackbox.stats import format_diff, paired_bootstrap

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))

from mpd_grid import COMPARE  # noqa: E402
from mpd_report import write_report  # noqa: E402


def test_report_from_summaries_is_stable_and_reads_the_runs(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    for seed in (13, 42):
        run_recipe({"method": "decode", "task": "sst-2", "shots": 2, "seed": seed,
                    "test_limit": 40, "compare": COMPARE, "neighbours": 2,
                    "backend": {"kind": "fake"}, "output_dir": str(runs),
                    "name": f"mpd-sst-2-k2-s{seed}"}, progress=False)
    out = tmp_path / "mpd.md"
    write_report(runs, out, 40, [])
    first = out.read_text()
    write_report(runs, out, 40, [])
    assert out.read_text() == first  # no timestamp: a regeneration is byte-identical
    s42 = json.loads(next(runs.glob("*-s42/summary.json")).read_text())["variants"]
    want = format_diff(paired_bootstrap(s42["dect"]["correct"], s42["mpd"]["correct"]))
    dect_rows = first.split("MPD − DecT:")[1].split("MPD − calibrated")[0]
    assert "| sst-2 | 2 | " in dect_rows and dect_rows.strip().splitlines()[-1].endswith(
        f"{want} |")
    assert "--seeds 13 42 --test-limit 40" in first
    grid = json.loads((tmp_path / "mpd-grid.json").read_text())
    assert {r["seed"] for r in grid} == {13, 42} and "correct" not in grid[0]["variants"]["mpd"]


COMMITTED = REPO / "results" / "mpd-runs"


def _report_matches_runs() -> bool:
    """Whether results/mpd.md was made from the runs folder as it is (not a grid in progress,
    nor the report of an earlier grid)."""
    import re

    text = (REPO / "results" / "mpd.md").read_text()
    found = re.search(r"from the summaries of (\d+) runs under\s+`results/mpd-runs`", text)
    runs = len(list(COMMITTED.glob("*/summary.json"))) if COMMITTED.is_dir() else 0
    return found is not None and int(found.group(1)) == runs


@pytest.mark.skipif(not _report_matches_runs(),
                    reason="results/mpd.md is not (yet) made from results/mpd-runs as it is")
def test_committed_report_regenerates_from_the_committed_runs(tmp_path: Path) -> None:
    out = tmp_path / "mpd.md"
    shutil.copy(REPO / "results" / "mpd.md", out)  # its notes section is carried over
    write_report(COMMITTED, out, 1000, [])
    assert out.read_text() == (REPO / "results" / "mpd.md").read_text()
