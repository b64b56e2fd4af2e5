"""Progress of long commands, one way everywhere.

A command that pays for model calls splits its work into *stages* (pruning, search, test,
a round of worker labels, ...). On a terminal each running stage is a rich progress bar
(items done of the total, queries paid so far, elapsed time, ETA); wherever the output is
not a terminal (CI, a log file, a pipe) nothing moves and each stage prints one plain line
when it ends, so a log shows where the time went::

    [search-prompt] stage pruning: 500/500 items, 1234 queries, 12.3 s

Both modes print the same line when a stage ends (on a terminal, above the live bars), and
the same :meth:`Stages.note` lines. Everything goes to stderr: stdout stays for results
(``--json``).
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TextIO


class Stage:
    """One running stage: advance it, or show a short status (e.g. the best so far)."""

    def __init__(self, owner: Stages | None, name: str, total: int | None, unit: str) -> None:
        self.owner, self.name, self.total, self.unit = owner, name, total, unit
        self.done = 0
        self.info = ""
        self.t0 = time.perf_counter()
        self.q0 = owner.queries() if owner is not None else 0
        self.task: Any = None  # the rich task id, on a terminal

    def advance(self, n: int = 1) -> None:
        """``n`` more items done."""
        self.update(self.done + n)

    def update(self, done: int | None = None, info: str | None = None) -> None:
        """Set the items done and/or the status text shown after the bar."""
        if done is not None:
            self.done = done
        if info is not None:
            self.info = info
        if self.owner is not None:
            self.owner._refresh(self)

    def paid(self) -> int:
        """Queries paid since the stage began."""
        return (self.owner.queries() - self.q0) if self.owner is not None else 0

    def line(self) -> str:
        """The stage's one plain line (no markup, no escape codes)."""
        assert self.owner is not None
        of = f"/{self.total}" if self.total is not None else ""
        text = (f"[{self.owner.label}] stage {self.name}: {self.done}{of} {self.unit}, "
                f"{self.paid()} queries, {time.perf_counter() - self.t0:.1f} s")
        return f"{text}, {self.info}" if self.info else text


class Stages:
    """The progress display of one command (see the module docstring).

    ``label`` leads every line (the method's name); ``queries`` says how many queries have
    been paid so far (a metered backend's usage), so each stage reports its own share;
    ``enabled=False`` prints nothing; ``terminal`` overrides the detection (tests).
    """

    def __init__(self, label: str = "bbx", queries: Callable[[], int] | None = None,
                 enabled: bool = True, terminal: bool | None = None,
                 stream: TextIO | None = None) -> None:
        self.label = label
        self.queries = queries or (lambda: 0)
        self.enabled = enabled
        self.stream = stream
        self._terminal = terminal
        self._live: Any = None  # the rich Progress while a stage runs on a terminal
        self._running = 0

    @property
    def terminal(self) -> bool:
        """Whether bars can be drawn: stderr is a real terminal (not ``TERM=dumb``). Asked of
        the stream itself, not rich's guess, which ``FORCE_COLOR`` (set by some CI systems)
        turns on: a log file must get plain lines."""
        if self._terminal is None:
            out = self._out()
            self._terminal = bool(getattr(out, "isatty", lambda: False)()) and \
                os.environ.get("TERM") != "dumb"
        return self._terminal

    def _out(self) -> TextIO:
        return self.stream if self.stream is not None else sys.stderr

    @contextmanager
    def stage(self, name: str, total: int | None = None, unit: str = "items") -> Iterator[Stage]:
        """A stage of ``total`` ``unit``; its line is printed when the block ends (also when
        it ends by an error: a log then shows how far it got)."""
        if not self.enabled:
            yield Stage(None, name, total, unit)
            return
        st = Stage(self, name, total, unit)
        if self.terminal:
            self._start_bar(st)
        self._running += 1
        try:
            yield st
        finally:
            self._running -= 1
            if st.task is not None:
                self._live.remove_task(st.task)
            self.note(st.line().removeprefix(f"[{self.label}] "))
            if self._live is not None and self._running == 0:
                self._live.stop()
                self._live = None

    def note(self, text: str) -> None:
        """One line, ``[label] text``: above the bars on a terminal, plain elsewhere."""
        if not self.enabled:
            return
        line = f"[{self.label}] {text}"
        if self._live is not None:
            from rich.text import Text

            self._live.console.print(Text(line))  # Text: brackets are not markup
        else:
            print(line, file=self._out(), flush=True)

    def _start_bar(self, st: Stage) -> None:
        if self._live is None:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            self._live = Progress(
                TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                TextColumn("{task.fields[unit]}, {task.fields[queries]} queries"),
                TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
                TextColumn("{task.fields[info]}"),
                console=Console(file=self._out(), force_terminal=True), transient=True)
            self._live.start()
        from rich.markup import escape

        # escaped: "[search-prompt]" would otherwise be read as a style tag and vanish
        st.task = self._live.add_task(escape(f"[{self.label}] {st.name}"), total=st.total,
                                      unit=st.unit, queries=0, info="")

    def _refresh(self, st: Stage) -> None:
        if st.task is not None and self._live is not None:
            from rich.markup import escape

            self._live.update(st.task, completed=st.done, queries=st.paid(),
                              info=escape(st.info))


@contextmanager
def stage(progress: Stages | None, name: str, total: int | None = None,
          unit: str = "items") -> Iterator[Stage]:
    """``progress.stage(...)``, or a stage that shows nothing when ``progress`` is None (the
    library's functions take an optional display)."""
    if progress is None:
        yield Stage(None, name, total, unit)
        return
    with progress.stage(name, total, unit) as st:
        yield st
