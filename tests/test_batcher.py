"""The dynamic batcher on its own: jobs queued while a call runs share the next call. How
long it lingers for clients trickling back is a timing heuristic that no test times (its
effect shows in the concurrent-client rows of scripts/bench_serve.py)."""

from __future__ import annotations

import threading
import time
from typing import Any

from blackbox.serve.batcher import Batcher, Job


class SlowBackend:
    """Answers label_logprobs after a fixed delay and records each call's size."""

    def __init__(self, delay_s: float) -> None:
        self.delay_s = delay_s
        self.sizes: list[int] = []

    def label_logprobs(self, prompts: list[str], words: list[str], adapter: Any = None
                       ) -> list[list[float]]:
        self.sizes.append(len(prompts))
        time.sleep(self.delay_s)
        return [[0.0] * len(words) for _ in prompts]


def wave(b: Batcher, n: int, gap_s: float) -> None:
    futures = []
    for i in range(n):
        futures.append(b.submit(Job("label_logprobs", ("a", "b"), [f"p{i}"])))
        time.sleep(gap_s)
    for f in futures:
        assert f.result(timeout=10) == [[0.0, 0.0]]


class GateBackend(SlowBackend):
    """Its first call waits until the test opens the gate: jobs queue up behind it."""

    def __init__(self) -> None:
        super().__init__(0.0)
        self.gate = threading.Event()

    def label_logprobs(self, prompts: list[str], words: list[str], adapter: Any = None
                       ) -> list[list[float]]:
        if not self.sizes:
            self.sizes.append(len(prompts))
            assert self.gate.wait(timeout=30)
            return [[0.0] * len(words) for _ in prompts]
        return super().label_logprobs(prompts, words, adapter)


def _until(cond: Any, what: str) -> None:
    for _ in range(3000):  # a state to reach, not a time to meet (30 s at most)
        if cond():
            return
        time.sleep(0.01)
    raise AssertionError(f"never reached: {what}")


def test_jobs_that_arrive_during_a_call_go_together_into_the_next_one() -> None:
    backend = GateBackend()
    b = Batcher(backend, max_batch=64, max_wait_s=0.004)
    try:
        first = b.submit(Job("label_logprobs", ("a", "b"), ["p0"]))
        _until(lambda: backend.sizes == [1], "the first call running")
        later = [b.submit(Job("label_logprobs", ("a", "b"), [f"p{i}"])) for i in range(1, 9)]
        _until(lambda: b._queue.qsize() == 8, "8 jobs queued behind it")
        backend.gate.set()
        assert [f.result(timeout=30) for f in [first, *later]] == [[[0.0, 0.0]]] * 9
    finally:
        b.close()
    assert backend.sizes == [1, 8]
    stats = b.stats.as_dict()  # what /health reports
    assert stats["calls"] == 2 and stats["items"] == 9


def test_a_lone_client_gets_one_call_per_request() -> None:
    # the previous call answered 1 item, so the batcher expects no one else to come back
    fast = SlowBackend(0.0)
    b = Batcher(fast, max_batch=64, max_wait_s=0.004)
    try:
        for _ in range(5):
            wave(b, 1, 0.0)
    finally:
        b.close()
    assert fast.sizes == [1] * 5


class RowsBackend:
    """Like the local backend: per-row verbs go through ``call_rows`` to an engine that has
    no ``embed``; embeddings are the backend's own method."""

    def __init__(self) -> None:
        self.verbs: list[str] = []

    def call_rows(self, verb: str, args: tuple[Any, ...], adapters: list[Any],
                  **kwargs: Any) -> list[Any]:
        if verb != "label_logprobs":  # what the Engine answers: getattr(engine, verb)
            raise AttributeError(f"'Engine' object has no attribute '{verb}'")
        self.verbs.append(verb)
        return [[0.0] * len(args[1]) for _ in args[0]]

    def embed(self, texts: list[str]) -> list[list[float]]:
        self.verbs.append("embed")
        return [[float(len(t))] for t in texts]


def test_embed_on_a_per_row_backend_calls_the_backends_embed() -> None:
    # the default server (local backend, MiniLM) answered every /v1/embeddings with a 500
    backend = RowsBackend()
    b = Batcher(backend, max_batch=64, max_wait_s=0.0, rows=True)
    try:
        assert b.submit(Job("embed", None, ["a", "bb"])).result(timeout=10) == [[1.0], [2.0]]
        words = Job("label_logprobs", ("x",), ["p"], adapter="a1")
        assert b.submit(words).result(timeout=10) == [[0.0]]
    finally:
        b.close()
    assert backend.verbs == ["embed", "label_logprobs"]
