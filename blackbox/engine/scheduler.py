"""The decode scheduler of ``bbx serve``: one thread running a continuous batch
(:class:`~blackbox.engine.decode.DecodeBatch`) that concurrent generation requests join.

Requests :meth:`~DecodeScheduler.submit` their rows into a bounded queue (a full queue is a
:class:`QueueFull`, which the server answers with a 503 and ``Retry-After``). Each
iteration of the thread, holding the backend's model for that iteration only (scoring calls
of the dynamic batcher interleave between iterations):

1. drops the rows whose client went away (``Ticket.cancel``), queued or decoding;
2. admits queued rows while the batch has room (their prefill, their first token), and
   hands each one's first text to its ticket's sink;
3. decodes one token for every row in the batch, and hands each row's new text over.

A cancelled row therefore costs at most the step it was in when its client left.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from blackbox.engine.decode import DecodeBatch, DecodeStats, Row
from blackbox.errors import BbxError

log = logging.getLogger(__name__)
DEFAULT_MAX_QUEUE = 256
# A sink gets (row, new text, error): the text may be "" (the row only finished); an error
# ends the row. Called on the scheduler's thread: it must only hand the event over.
Sink = Callable[[Row, str, BaseException | None], None]


class QueueFull(Exception):
    """The decode queue has no room for a request's rows: try again in ``retry_after`` s."""

    def __init__(self, queued: int, limit: int, retry_after: int) -> None:
        super().__init__(f"the server is busy: {queued} sequences are waiting to be decoded "
                         f"(at most {limit}); retry in {retry_after} s")
        self.retry_after = retry_after


class Ticket:
    """One request's rows in the scheduler."""

    def __init__(self, scheduler: DecodeScheduler, rows: list[Row], sink: Sink) -> None:
        self.rows = rows
        self.sink = sink
        self._scheduler = scheduler

    def cancel(self) -> None:
        """Stop the rows at the next step boundary (the client went away)."""
        for r in self.rows:
            r.cancelled = True
        self._scheduler.wake()


class DecodeScheduler:
    """Continuous batching over a backend with ``locked()`` and ``factors()`` (the local
    backend); see module docs. ``max_queue`` bounds the rows waiting for a place in the
    batch (one request larger than that waits alone); ``max_rows`` and ``max_tokens`` size
    the batch (see DecodeBatch)."""

    def __init__(self, backend: Any, max_queue: int = DEFAULT_MAX_QUEUE,
                 max_rows: int | None = None, max_tokens: int | None = None) -> None:
        self.backend = backend
        self.max_queue = max(0, max_queue)
        self.max_rows = max_rows
        self.max_tokens = max_tokens
        self.stats = DecodeStats()
        self._cv = threading.Condition()
        self._queue: deque[Row] = deque()
        self._batch: DecodeBatch | None = None
        self._stop = False
        self._row_s = 0.0  # a running mean of a row's time in the batch, for Retry-After
        self._joining: list[Row] = []  # taken from the queue, not yet in the batch
        self._thread = threading.Thread(target=self._loop, name="bbx-decode", daemon=True)
        self._thread.start()

    # ---- the requests' side -------------------------------------------------------------

    def submit(self, rows: list[Row], sink: Sink) -> Ticket:
        """Queue a request's rows; their text goes to ``sink`` as it is generated."""
        ticket = Ticket(self, rows, sink)
        with self._cv:
            if self._stop:
                raise BbxError("the server is shutting down")
            # a request larger than the whole queue is taken when the queue is empty
            if self._queue and len(self._queue) + len(rows) > self.max_queue:
                raise QueueFull(len(self._queue), self.max_queue, self._retry_after())
            for r in rows:
                r.tag = ticket
            self._queue.extend(rows)
            self._cv.notify()
        return ticket

    def queued(self) -> int:
        """Rows waiting for a place in the batch."""
        return len(self._queue)

    def running(self) -> int:
        """Rows in the decode batch."""
        return len(self._batch.rows) if self._batch is not None else 0

    def wake(self) -> None:
        """Make the thread look at its rows now (a cancelled one, say)."""
        with self._cv:
            self._cv.notify()

    def close(self) -> None:
        """Stop the thread; rows still queued or decoding get an error."""
        with self._cv:
            self._stop = True
            self._cv.notify()
        self._thread.join(timeout=60)

    def as_dict(self) -> dict[str, float]:
        """The counters, with the queue's and the batch's sizes now."""
        return {**self.stats.as_dict(), "queued": self.queued(), "running": self.running(),
                "max_queue": self.max_queue}

    def _retry_after(self) -> int:
        rows = self._batch.max_rows if self._batch is not None else 1
        waits = math.ceil(len(self._queue) / rows) * self._row_s
        return max(1, min(60, math.ceil(waits)))

    # ---- the thread ---------------------------------------------------------------------

    def _loop(self) -> None:
        while True:
            with self._cv:
                while not (self._stop or self._queue or self.running()):
                    self._cv.wait()
                if self._stop:
                    break
            try:
                self._iteration()
            except Exception as e:  # noqa: BLE001 - every row in flight gets the error
                if not isinstance(e, BbxError):
                    log.exception("a decode step failed")
                self._fail_all(e)
        self._fail_all(BbxError("the server is shutting down"))

    def _iteration(self) -> None:
        with self.backend.locked() as engine:
            if self._batch is None:
                self._batch = DecodeBatch(engine, self.max_rows, self.max_tokens, self.stats)
            batch = self._batch
            batch.prune()  # the step boundary: rows whose client left go now
            with self._cv:
                for r in [r for r in self._queue if r.cancelled]:
                    self._queue.remove(r)
                    self.stats.cancelled += 1
                self._joining = [self._queue.popleft() for _ in range(batch.room(self._queue))]
            admitted = []
            for r in self._joining:
                try:  # a mixture is composed here, on this thread, not on the event loop
                    r.factors = self.backend.factors(r.adapter)
                    admitted.append(r)
                except BbxError as e:  # an adapter unloaded since the request came
                    r.finish = "error"
                    r.tag.sink(r, "", e)
            batch.admit(admitted)
            self._joining = []
            # the sinks only hand the text over: the first tokens leave before the step
            self._report(admitted)
            stepped = list(batch.rows)
            batch.step()
            self._report(stepped)

    def _report(self, rows: list[Row]) -> None:
        now = time.perf_counter()
        for r in rows:
            if r.finish is not None:
                self._row_s += 0.1 * ((now - r.joined_at) - self._row_s)
            if not r.cancelled:
                r.tag.sink(r, r.take_text(), None)

    def _fail_all(self, error: BaseException) -> None:
        with self._cv:
            rows = list(self._queue)
            self._queue.clear()
        rows += self._joining
        self._joining = []
        if self._batch is not None:
            rows += self._batch.rows
            self._batch = None  # its cache may be half-updated: start afresh
        for r in rows:  # finished ones too: the step that finished them was not reported
            if r.finish != "error" and not r.cancelled:
                r.finish = "error"
                r.tag.sink(r, "", error)
