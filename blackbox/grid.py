"""Results grids: many run directories, each a cell that is skipped once finished.

A grid script lists its cells (a run directory and the call that fills it) and hands them
to :func:`run_grid`, which skips finished cells (:func:`blackbox.runs.is_finished`), resumes
the others (a killed run replays from its response cache), holds an optional ``flock`` per
cell so other heavy jobs on a shared machine can run between cells, and starts no new cell
after a deadline, so a grid can be cut to fit a session and resumed by running it again.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from blackbox.errors import BbxError
from blackbox.runs import is_finished


@dataclass
class Cell:
    """One run of a grid: ``run(run_dir)`` fills ``run_dir`` (and may return a summary)."""

    run_dir: Path
    run: Callable[[Path], Any]


@dataclass
class GridReport:
    """What :func:`run_grid` did: cell names run, skipped as finished, left for later."""

    ran: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    left: list[str] = field(default_factory=list)


def deadline(stop_at: str | None, now: dt.datetime | None = None) -> dt.datetime | None:
    """The next UTC time of day ``"HH:MM"`` after ``now`` (tomorrow's when today's passed:
    a grid started at 23:40 with ``--stop-at 01:35`` runs past midnight)."""
    if stop_at is None:
        return None
    try:
        hh, mm = (int(x) for x in stop_at.split(":"))
        at = dt.time(hh, mm)
    except ValueError:
        raise BbxError(f"stop-at must be a UTC time HH:MM, got {stop_at!r}") from None
    now = now or dt.datetime.now(dt.UTC)
    when = dt.datetime.combine(now.date(), at, tzinfo=dt.UTC)
    return when if when > now else when + dt.timedelta(days=1)


#: pause after releasing the lock, long enough for a waiting grid to take it
_HANDOVER_S = 1.0


@contextlib.contextmanager
def _locked(path: str | None) -> Iterator[None]:
    if path is None:
        yield
        return
    import fcntl

    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
    # flock is not fair: a grid that asks again at once wins over the ones already waiting
    # (they are woken, it is running), so one grid would starve the others until it ends
    time.sleep(_HANDOVER_S)


def run_grid(cells: Iterable[Cell], lock: str | None = None, stop_at: str | None = None,
             log: Callable[[str], None] = print) -> GridReport:
    """Run every unfinished cell in order (see module docs); one line per cell to ``log``."""
    until = deadline(stop_at)
    report = GridReport()
    for cell in cells:
        name = cell.run_dir.name
        if is_finished(cell.run_dir):
            report.skipped.append(name)
            continue
        if until is not None and dt.datetime.now(dt.UTC) >= until:
            report.left.append(name)
            continue
        log(f"== {name}")
        t0 = time.perf_counter()
        with _locked(lock):
            cell.run(cell.run_dir)
        report.ran.append(name)
        log(f"   {name} done in {time.perf_counter() - t0:.0f} s")
    if report.left:
        log(f"stop-at {stop_at} reached: {len(report.left)} cells left; rerun to continue")
    return report
