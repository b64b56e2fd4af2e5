"""What a method gets to work with: :class:`RunContext`."""

from __future__ import annotations

import sys
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from blackbox.runs import RunDir, child_rng

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping, Sequence

    from rich.progress import Progress

    from blackbox.backends.metered import MeteredBackend


@dataclass
class RunContext:
    """The metered backend, the run directory, seeded generators and progress display."""

    backend: MeteredBackend
    run_dir: RunDir
    seed: int
    show_progress: bool = True
    notes: dict[str, Any] = field(default_factory=dict)  # extra manifest fields (fallbacks, ...)
    allow_overlap: bool = False  # the recipe's allow_overlap (see :meth:`check_leak`)

    def check_leak(self, fit: Mapping[str, Sequence[Any]],
                   held_out: Mapping[str, Sequence[Any]]) -> None:
        """The leak guard (:mod:`blackbox.data.leak`): refuse when a text the method fits or
        selects on is also one it reports on; with ``allow_overlap`` the run goes on and its
        summary's notes list the overlap."""
        from blackbox.data.leak import check

        found = check(fit, held_out, self.allow_overlap)
        if found:
            self.notes.setdefault("overlap", []).extend(found)

    def rng(self, name: str) -> np.random.Generator:
        """A generator for purpose ``name``, independent of every other name."""
        return child_rng(self.seed, name)

    @contextmanager
    def progress(self) -> Iterator[Progress | None]:
        """A rich progress display on stderr (``None`` when progress is off)."""
        if not self.show_progress:
            yield None
            return
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        console = Console(file=sys.stderr)
        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                      TimeElapsedColumn(), TimeRemainingColumn(), console=console,
                      transient=True) as bar:
            yield bar
