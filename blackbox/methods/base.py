"""What a method gets to work with: :class:`RunContext`."""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from blackbox.progress import Stages
from blackbox.runs import RunDir, child_rng

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping, Sequence

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
    drop_overlap: bool = False  # the recipe's drop_overlap (see :meth:`fit_only`)
    label: str = "bbx"  # what leads each progress line: the method's name
    _stages: Stages | None = field(default=None, init=False, repr=False)

    def check_leak(self, fit: Mapping[str, Sequence[Any]],
                   held_out: Mapping[str, Sequence[Any]]) -> None:
        """The leak guard (:mod:`blackbox.data.leak`): refuse when a text the method fits or
        selects on is also one it reports on; with ``allow_overlap`` the run goes on and its
        summary's notes list the overlap."""
        from blackbox.data.leak import check

        found = check(fit, held_out, self.allow_overlap)
        if found:
            self.notes.setdefault("overlap", []).extend(found)

    def fit_only(self, name: str, items: list[Any], *held_out: Sequence[Any]) -> list[Any]:
        """``items`` (a set the method fits or selects on, called ``name``) without the
        texts it reports on, where the recipe sets ``drop_overlap`` (the notes count what was
        left out); else ``items`` as they are, for :meth:`check_leak` to judge."""
        if not self.drop_overlap:
            return items
        from blackbox.data.leak import without

        kept, dropped = without(items, held_out)
        if dropped:
            self.notes.setdefault("dropped_overlap", {})[name] = dropped
        return kept

    def rng(self, name: str) -> np.random.Generator:
        """A generator for purpose ``name``, independent of every other name."""
        return child_rng(self.seed, name)

    @property
    def stages(self) -> Stages:
        """The run's progress display (:mod:`blackbox.progress`): bars on a terminal, one
        line per stage elsewhere, each stage counting the queries paid through the backend;
        silent when progress is off. One per run, so nested stages share one display."""
        if self._stages is None:
            self._stages = Stages(self.label, queries=lambda: self.backend.usage.queries,
                                  enabled=self.show_progress)
        return self._stages

    @contextmanager
    def progress(self) -> Iterator[Stages | None]:
        """The run's display for functions that take ``progress=`` (``None`` when off)."""
        yield self.stages if self.show_progress else None
