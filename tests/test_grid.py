"""run_grid: finished cells are skipped, unfinished ones run in order, none starts after
the deadline, and the deadline is the next time of day (a grid may run past midnight)."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest

from blackbox.errors import BbxError
from blackbox.grid import Cell, deadline, run_grid


def test_the_deadline_is_the_next_such_time_of_day() -> None:
    late = dt.datetime(2026, 12, 1, 23, 40, tzinfo=dt.UTC)
    assert deadline("01:35", late) == dt.datetime(2026, 12, 2, 1, 35, tzinfo=dt.UTC)
    assert deadline("23:50", late) == dt.datetime(2026, 12, 1, 23, 50, tzinfo=dt.UTC)
    assert deadline(None, late) is None
    with pytest.raises(BbxError, match="stop-at must be a UTC time HH:MM, got '1535'"):
        deadline("1535", late)


def _finish(rd: Path) -> None:
    rd.mkdir(parents=True, exist_ok=True)
    (rd / "summary.json").write_text(json.dumps({"accuracy": 1.0}))


def test_finished_cells_are_skipped_and_the_rest_run_in_order(tmp_path: Path) -> None:
    ran: list[str] = []

    def run(rd: Path) -> None:
        ran.append(rd.name)
        _finish(rd)

    _finish(tmp_path / "b")
    (tmp_path / "c").mkdir()  # a killed run: no summary, so it is resumed
    (tmp_path / "c" / "summary.json").write_text(json.dumps({"status": "failed"}))
    cells = [Cell(tmp_path / n, run) for n in "abcd"]
    report = run_grid(cells, log=lambda m: None)
    assert ran == ["a", "c", "d"]
    assert (report.ran, report.skipped, report.left) == (["a", "c", "d"], ["b"], [])
    again = run_grid(cells, log=lambda m: None)
    assert (again.ran, again.skipped) == ([], ["a", "b", "c", "d"])


def test_no_cell_starts_after_the_deadline(tmp_path: Path, monkeypatch) -> None:
    import blackbox.grid as grid

    now = dt.datetime.now(dt.UTC)
    past = (now - dt.timedelta(minutes=1)).strftime("%H:%M")
    # the deadline a minute ago is tomorrow's by the rule; pin it to the past instead
    monkeypatch.setattr(grid, "deadline", lambda s: now - dt.timedelta(minutes=1))
    lines: list[str] = []
    report = run_grid([Cell(tmp_path / "a", _finish)], stop_at=past, log=lines.append)
    assert report.left == ["a"] and not (tmp_path / "a").exists()
    assert lines == [f"stop-at {past} reached: 1 cells left; rerun to continue"]
