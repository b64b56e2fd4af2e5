"""Dynamic batching: concurrent requests are gathered into shared backend calls.

Each request becomes a :class:`Job` (a verb, a compatibility key, its items and its adapter).
One worker thread takes the oldest job, then gathers every queued job with the same verb
and key, waiting at most ``max_wait_s`` for more while the batch holds fewer than
``max_batch`` items, and runs them as ONE call. Clients usually send their next request as
soon as the last one is answered, and those requests trickle in over tens of milliseconds:
so while the batch holds fewer items than the previous call answered, the worker waits
longer, up to ``linger`` times that call's duration (at most ``max_linger_s``), rather than
run a small batch now and leave the rest for a second full-price call.

Each call then runs:

* on a backend with per-row adapters (``call_rows``, the local backend) jobs naming different
  adapters or mixtures share the call, each row with its own low-rank factors;
* on any other backend the gathered jobs are split by adapter, one call each;
* ``embed`` calls the backend's own ``embed`` on every backend (embeddings take no adapter).

A job whose input is bad must not fail the jobs batched with it: when a shared call raises
a :class:`~blackbox.errors.BbxError`, each job is run again on its own, so only the bad one
gets the error.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, InvalidStateError
from dataclasses import dataclass, field
from typing import Any

from blackbox.backends.base import Adapter, normalize_adapter
from blackbox.errors import BbxError

log = logging.getLogger(__name__)

# The verbs a per-row backend answers through ``call_rows``: they are Engine methods that take
# one adapter per row. Embeddings are not (MiniLM ignores adapters, and the Engine has no
# ``embed``): they go to the backend's own ``embed`` on every backend.
_ROW_VERBS = {"label_logprobs", "score", "hidden", "mean_hidden", "generate"}


@dataclass
class Job:
    """One request: ``items`` are prompts (or ``(prompt, continuation)`` pairs for ``score``);
    ``key`` is what must match for jobs to share a call (label words, generation params...);
    ``call`` runs the verb for (items, per-item adapters) when ``verb`` is not a Backend verb.
    """

    verb: str
    key: Any  # hashable: label words, generation params, ...
    items: list[Any]
    adapter: Adapter = None
    call: Callable[[list[Any], list[Adapter]], list[Any]] | None = None
    future: Future = field(default_factory=Future)
    t_submit: float = field(default_factory=time.perf_counter)


@dataclass
class BatchStats:
    """Counters for ``/health`` and the benchmark: how much batching happened."""

    calls: int = 0
    jobs: int = 0
    items: int = 0
    max_items: int = 0
    busy_s: float = 0.0  # time inside backend calls: busy_s / uptime is the model's load

    def as_dict(self) -> dict[str, float]:
        return {"calls": self.calls, "jobs": self.jobs, "items": self.items,
                "max_items": self.max_items, "busy_s": round(self.busy_s, 3),
                "jobs_per_call": round(self.jobs / self.calls, 3) if self.calls else 0.0}


class Batcher:
    """Gathers concurrent jobs into shared calls on one worker thread (see module docs)."""

    def __init__(self, backend: Any, max_batch: int = 64, max_wait_s: float = 0.004,
                 linger: float = 0.1, max_linger_s: float = 0.25, rows: bool = False) -> None:
        self.backend = backend
        self.max_batch = max(1, max_batch)
        self.max_wait_s = max(0.0, max_wait_s)
        self.linger = max(0.0, linger)
        self.max_linger_s = max(0.0, max_linger_s)
        self._expect = 0  # items the previous call answered: their clients tend to come back
        self._last_call_s = 0.0
        # per-row adapters in one engine call (the backend's declared engine ability, which
        # the server reads from its capabilities): else one call per adapter
        self.rows = rows
        self.stats = BatchStats()
        self._queue: queue.Queue[Job | None] = queue.Queue()
        self._held: list[Job] = []  # taken from the queue but not compatible with the last batch
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="bbx-batcher", daemon=True)
        self._thread.start()

    def submit(self, job: Job) -> Future:
        """Queue a job; its future gets the per-item results (or the error)."""
        if self._stop.is_set():
            raise BbxError("the server is shutting down")
        self._queue.put(job)
        return job.future

    def close(self) -> None:
        """Stop the worker after the jobs already queued."""
        self._stop.set()
        self._queue.put(None)
        self._thread.join(timeout=60)

    # ---- the worker ---------------------------------------------------------------------

    def _next(self, timeout: float | None) -> Job | None:
        """The oldest held job, else the next queued one (``None`` after ``timeout``)."""
        if self._held:
            return self._held.pop(0)
        try:
            if timeout is None:
                return self._queue.get()
            return self._queue.get(timeout=timeout) if timeout > 0 else self._queue.get_nowait()
        except queue.Empty:
            return None

    def _fits(self, first: Job, job: Job, n: int) -> bool:
        return (job.verb == first.verb and job.key == first.key
                and n + len(job.items) <= self.max_batch)

    def _gather(self, first: Job) -> list[Job]:
        batch, n = [first], len(first.items)
        kept: list[Job] = []
        for job in self._held:  # jobs set aside earlier come first, in order
            if self._fits(first, job, n):
                batch.append(job)
                n += len(job.items)
            else:
                kept.append(job)
        self._held = kept
        start = time.perf_counter()
        deadline = start + self.max_wait_s
        # waiting a tenth of a call to fill the batch costs less than a second call
        linger = start + min(self.linger * self._last_call_s, self.max_linger_s)
        while n < self.max_batch:
            until = deadline if n >= min(self._expect, self.max_batch) else max(deadline, linger)
            left = until - time.perf_counter()
            try:
                got = self._queue.get(timeout=left) if left > 0 else self._queue.get_nowait()
            except queue.Empty:
                break
            if got is None:  # close(): finish this batch, then stop
                self._queue.put(None)
                break
            if self._fits(first, got, n):
                batch.append(got)
                n += len(got.items)
            else:
                self._held.append(got)
        return batch

    def _loop(self) -> None:
        while True:
            first = self._next(None)
            if first is None:
                if self._stop.is_set():
                    return
                continue
            batch = self._gather(first)
            self._run(batch)

    def _run(self, batch: list[Job]) -> None:
        self.stats.calls += 1
        self.stats.jobs += len(batch)
        n = sum(len(j.items) for j in batch)
        self.stats.items += n
        self.stats.max_items = max(self.stats.max_items, n)
        t0 = time.perf_counter()
        try:
            try:
                results = self._call(batch)
            finally:
                self.stats.busy_s += time.perf_counter() - t0
        except BbxError as e:
            if len(batch) == 1:
                _fail(batch[0], e)
                return
            for job in batch:  # isolate the bad job: run each alone
                try:
                    _resolve(job, self._call([job])[0])
                except Exception as e2:  # noqa: BLE001 - handed to the waiting request
                    _fail(job, e2)
            return
        except Exception as e:  # noqa: BLE001 - a bug; the request gets a 500 envelope
            log.exception("batched %s call failed", batch[0].verb)
            for job in batch:
                _fail(job, e)
            return
        self._expect, self._last_call_s = n, time.perf_counter() - t0
        for job, res in zip(batch, results, strict=True):
            _resolve(job, res)

    def _call(self, batch: list[Job]) -> list[list[Any]]:
        """Run the jobs as shared calls; per job, its list of per-item results."""
        verb = batch[0].verb
        items = [it for job in batch for it in job.items]
        adapters = [job.adapter for job in batch for _ in job.items]
        call = batch[0].call
        if call is not None:
            flat = call(items, adapters) if self.rows else \
                self._by_adapter(batch, lambda its, a: call(its, [a] * len(its)))
        elif self.rows and verb in _ROW_VERBS:
            args, kwargs = self._args(batch[0], items)
            flat = self.backend.call_rows(verb, args, adapters, **kwargs)
        else:
            flat = self._by_adapter(batch, lambda its, a: self._plain(batch[0], its, a))
        out, at = [], 0
        for job in batch:
            out.append(flat[at:at + len(job.items)])
            at += len(job.items)
        return out

    def _args(self, job: Job, items: list[Any]) -> tuple[tuple[Any, ...], dict[str, Any]]:
        if job.verb == "score":
            return ([p for p, _ in items], [c for _, c in items]), {}
        if job.verb == "label_logprobs":
            return (items, list(job.key)), {}
        if job.verb == "hidden":
            return (items, job.key), {}
        if job.verb == "generate":
            return (items,), dict(job.key)
        return (items,), {}

    def _plain(self, job: Job, items: list[Any], adapter: Adapter) -> list[Any]:
        b = self.backend
        if job.verb == "score":
            return b.score([p for p, _ in items], [c for _, c in items], adapter)
        if job.verb == "label_logprobs":
            return b.label_logprobs(items, list(job.key), adapter)
        if job.verb == "hidden":
            return b.hidden(items, job.key, adapter)
        if job.verb == "generate":
            return b.generate(items, dict(job.key), adapter)
        if job.verb == "embed":
            return b.embed(items)
        raise BbxError(f"this backend cannot answer '{job.verb}'")

    def _by_adapter(self, batch: list[Job], run: Callable[[list[Any], Adapter], list[Any]]
                    ) -> list[Any]:
        groups: dict[str, tuple[Adapter, list[int]]] = {}
        flat_items: list[Any] = []
        for job in batch:
            key = repr(normalize_adapter(job.adapter))
            for it in job.items:
                groups.setdefault(key, (job.adapter, []))[1].append(len(flat_items))
                flat_items.append(it)
        out: list[Any] = [None] * len(flat_items)
        for adapter, idx in groups.values():
            for i, r in zip(idx, run([flat_items[i] for i in idx], adapter), strict=True):
                out[i] = r
        return out


def _resolve(job: Job, value: Any) -> None:
    # a request whose client went away has a cancelled future: nobody waits for the answer
    with contextlib.suppress(InvalidStateError):
        job.future.set_result(value)


def _fail(job: Job, error: BaseException) -> None:
    with contextlib.suppress(InvalidStateError):
        job.future.set_exception(error)
