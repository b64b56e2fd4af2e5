"""The one search loop: ask a batch, evaluate it in one call, record it, tell, repeat.

Every method's search goes through :func:`run_search`, which owns the trial budget, the
progress display, ``trials.jsonl`` and stopping on :class:`~blackbox.errors.BudgetExceeded`.

Checkpoints are ``trials.jsonl`` itself; no optimizer state is ever pickled. Optimizers are
seeded and deterministic given what they are told, so a restarted search rebuilds its
optimizer by *replay*: it asks the fresh optimizer batch by batch exactly as the first run
did, checks each proposal equals the recorded value, and tells the recorded loss without
calling the objective. After the recorded trials it simply continues. A run killed at any
point therefore loses at most the batch in flight, and that batch costs nothing to redo when
the objective goes through the metered backend (its answers are in the cache).
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from blackbox.errors import BbxError, BudgetExceeded
from blackbox.optim.base import Candidate, Optimizer, Value
from blackbox.optim.trials import TrialWriter, read_trials
from blackbox.progress import Stages

Objective = Callable[[list[Value]], Sequence[float] | Sequence[tuple[float, dict[str, Any]]]]
Describe = Callable[[Value], str]


@dataclass
class SearchResult:
    """What a search found. ``best_value`` is ``None`` when no trial finished with a finite
    loss (e.g. the budget ran out during the first batch)."""

    best_value: Value | None
    best_loss: float
    best_info: dict[str, Any]
    n_trials: int
    n_replayed: int
    stopped: Literal["max_trials", "budget"]
    history: list[float] = field(default_factory=list)
    best_index: int | None = None
    optimizer: dict[str, Any] = field(default_factory=dict)  # its state_dict at the end


def _same(asked: Value, recorded: Any) -> bool:
    if not isinstance(recorded, list) or len(asked) != len(recorded):
        return False
    for a, r in zip(asked, recorded, strict=True):
        if isinstance(a, int) and not isinstance(a, bool):
            if a != r:
                return False
        elif not (isinstance(r, (int, float))
                  and math.isclose(a, r, rel_tol=1e-9, abs_tol=1e-12)):
            return False
    return True


def _short(value: Any, n: int = 6) -> str:
    if isinstance(value, list) and len(value) > n:
        return "[" + ", ".join(map(repr, value[:n])) + ", ...]"
    return repr(value)


def _unpack(out: Any, n: int) -> tuple[list[float], list[dict[str, Any]]]:
    """Split an objective's answer into losses and info dicts (validated as a bug, not input)."""
    out = list(out)
    if len(out) != n:
        raise ValueError(f"the objective returned {len(out)} results for {n} candidates")
    losses, infos = [], []
    for item in out:
        if isinstance(item, (tuple, list)) and len(item) == 2 and isinstance(item[1], dict):
            losses.append(float(item[0]))
            infos.append(dict(item[1]))
        else:
            losses.append(float(item))
            infos.append({})
    return losses, infos


@contextlib.contextmanager
def _progress(progress: bool | Stages, name: str, total: int) -> Iterator[Any]:
    """The search's stage on the caller's display (or a display of its own: ``True``)."""
    stages = progress if isinstance(progress, Stages) else Stages("search", enabled=progress)
    with stages.stage(name, total, unit="trials") as st:
        # the best so far is the status a person watches a search for
        yield lambda n, best: st.update(n, info=f"best {best}")


class _Search:
    """State of one run_search call (split out to keep each step small)."""

    def __init__(self, objective: Objective, optimizer: Optimizer, writer: TrialWriter | None,
                 describe: Describe | None) -> None:
        self.objective = objective
        self.optimizer = optimizer
        self.writer = writer
        self.describe = describe
        self.history: list[float] = []
        self.best: tuple[float, int, Value, dict[str, Any]] | None = None
        self.n_batches = 0
        self.n_replayed = 0

    @property
    def n(self) -> int:
        return len(self.history)

    def best_text(self) -> str:
        if self.best is None:
            return "-"
        loss, _, value, _ = self.best
        text = f"{loss:.4g}"
        return f"{text}  {self.describe(value)}" if self.describe else text

    def evaluate(self, cands: list[Candidate], start: int) -> tuple[list[float], list[dict]]:
        """Score ``cands`` in one objective call and append their rows (may raise
        BudgetExceeded, in which case nothing is recorded)."""
        values = [c.value for c in cands]
        losses, infos = _unpack(self.objective(values), len(values))
        if self.writer is not None:
            now = round(time.time(), 3)
            rows = []
            for j, (v, loss, info) in enumerate(zip(values, losses, infos, strict=True)):
                row = {"index": start + j, "batch": self.n_batches, "value": list(v),
                       "loss": loss, "info": info, "time": now}
                if self.describe is not None:
                    row["desc"] = self.describe(v)
                rows.append(row)
            self.writer.write(rows)
        return losses, infos

    def record(self, cands: list[Candidate], losses: list[float],
               infos: list[dict[str, Any]]) -> None:
        """Tell the optimizer and update best/history."""
        self.optimizer.tell(cands, losses)
        for c, loss, info in zip(cands, losses, infos, strict=True):
            # a failed trial (NaN/inf) never becomes the best
            if math.isfinite(loss) and (self.best is None or loss < self.best[0]):
                self.best = (loss, self.n, list(c.value), info)
            self.history.append(loss)
        self.n_batches += 1

    def replay(self, rows: list[dict[str, Any]], k: int, path: Path) -> None:
        """Re-ask one batch, check it against ``rows`` (≤ k recorded trials), tell the
        recorded losses and evaluate only the trials missing from a torn last batch."""
        start = self.n
        cands = self.optimizer.ask(k)
        recorded = rows[start: start + k]
        for j, row in enumerate(recorded):
            if not _same(cands[j].value, row["value"]):
                raise BbxError(
                    f"{path} does not match this search: trial {start + j} was "
                    f"{_short(row['value'])} but the optimizer now proposes "
                    f"{_short(cands[j].value)} (changed optimizer, seed, space or batch "
                    "size?); use a new run directory"
                )
        losses = [float(r["loss"]) for r in recorded]
        infos = [dict(r.get("info") or {}) for r in recorded]
        self.n_replayed += len(recorded)
        if len(recorded) < k:
            try:
                more_losses, more_infos = self.evaluate(cands[len(recorded):],
                                                        start + len(recorded))
            except BudgetExceeded:
                # keep what the file already had in the result before stopping
                self.record(cands[: len(recorded)], losses, infos)
                raise
            losses += more_losses
            infos += more_infos
        self.record(cands, losses, infos)


def run_search(
    objective: Objective,
    optimizer: Optimizer,
    *,
    max_trials: int,
    batch_size: int,
    trials_path: str | Path | None = None,
    progress: bool | Stages = True,
    describe: Describe | None = None,
    stage: str | None = None,
) -> SearchResult:
    """Minimize ``objective`` with ``optimizer`` for at most ``max_trials`` evaluations.

    ``objective(values)`` scores a whole batch at once (one batched backend call) and returns
    one loss, or one ``(loss, info)`` pair, per value; ``info`` (e.g. accuracy) is stored in
    the trial's row. Each batch is ``min(batch_size, trials left)`` candidates.

    ``trials_path`` (the run directory's ``trials.jsonl``) gets one row per finished trial,
    flushed after every batch. If it already holds rows, the search resumes by replaying them
    into ``optimizer``, which must be freshly built with the same name, space, seed, batch
    size and budget as the first run (see the module docstring); a mismatch is a
    :class:`BbxError` asking for a new run directory. Rows past ``max_trials`` are left in the
    file but not replayed.

    The search stops after ``max_trials`` trials (``stopped="max_trials"``) or when the
    objective raises :class:`BudgetExceeded` (``stopped="budget"``; the batch in flight is
    dropped, the best so far returned). ``describe(value)`` renders a value for the progress
    line and the rows (e.g. the prompt text behind token indices). ``progress`` is a
    run's display (:class:`~blackbox.progress.Stages`) or whether to show one of its own;
    ``stage`` names the search's stage on it (default ``search (<optimizer>)``).
    """
    if not isinstance(max_trials, int) or max_trials < 0:
        raise BbxError(f"max_trials must be a non-negative integer, got {max_trials!r}")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise BbxError(f"batch_size must be a positive integer, got {batch_size!r}")
    path = Path(trials_path) if trials_path is not None else None
    rows = read_trials(path) if path is not None else []
    writer = TrialWriter(path) if path is not None else None
    search = _Search(objective, optimizer, writer, describe)
    stopped: Literal["max_trials", "budget"] = "max_trials"
    try:
        with _progress(progress, stage or f"search ({optimizer.name})", max_trials) as update:
            try:
                while search.n < min(len(rows), max_trials):
                    k = min(batch_size, max_trials - search.n)
                    assert path is not None  # rows only come from a path
                    search.replay(rows, k, path)
                    update(search.n, search.best_text())
                while search.n < max_trials:
                    cands = optimizer.ask(min(batch_size, max_trials - search.n))
                    losses, infos = search.evaluate(cands, search.n)
                    search.record(cands, losses, infos)
                    update(search.n, search.best_text())
            except BudgetExceeded:
                stopped = "budget"
    finally:
        if writer is not None:
            writer.close()
    best = search.best
    return SearchResult(
        best_value=best[2] if best else None,
        best_loss=best[0] if best else math.inf,
        best_info=best[3] if best else {},
        n_trials=search.n,
        n_replayed=search.n_replayed,
        stopped=stopped,
        history=search.history,
        best_index=best[1] if best else None,
        optimizer=optimizer.state_dict(),
    )
