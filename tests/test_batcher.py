"""The dynamic batcher on its own: closed-loop clients trickling back share one call."""

from __future__ import annotations

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


def test_clients_returning_after_a_call_are_gathered_into_one_call() -> None:
    # 8 clients answered by a 3 s call come back 8 ms apart (more than max_wait): the
    # batcher waits for them (up to a tenth of the call: 250 ms at most, room for a loaded
    # machine oversleeping the gaps) instead of running 8 small calls
    backend = SlowBackend(3.0)
    b = Batcher(backend, max_batch=64, max_wait_s=0.004)
    try:
        wave(b, 8, 0.0)
        wave(b, 8, 0.008)
    finally:
        b.close()
    assert backend.sizes == [8, 8]
    stats = b.stats.as_dict()  # what /health reports
    assert stats["calls"] == 2 and stats["items"] == 16 and stats["jobs_per_call"] == 8
    assert stats["busy_s"] >= 6.0  # two 3 s calls: the model's busy time (a sleep's floor)


def test_without_linger_the_trickle_is_split_and_a_lone_client_never_waits_long() -> None:
    backend = SlowBackend(0.2)
    b = Batcher(backend, max_batch=64, max_wait_s=0.004, linger=0.0)
    try:
        wave(b, 8, 0.0)
        wave(b, 8, 0.008)
    finally:
        b.close()
    assert len(backend.sizes) > 2  # the behaviour the linger fixes

    # one client alone: the previous call answered 1 item, so nothing is waited for
    fast = SlowBackend(0.0)
    b = Batcher(fast, max_batch=64, max_wait_s=0.004)
    try:
        t0 = time.perf_counter()
        for _ in range(5):
            wave(b, 1, 0.0)
        assert time.perf_counter() - t0 < 1.0
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
    b = Batcher(backend, max_batch=64, max_wait_s=0.0)
    try:
        assert b.submit(Job("embed", None, ["a", "bb"])).result(timeout=10) == [[1.0], [2.0]]
        words = Job("label_logprobs", ("x",), ["p"], adapter="a1")
        assert b.submit(words).result(timeout=10) == [[0.0]]
    finally:
        b.close()
    assert backend.verbs == ["embed", "label_logprobs"]
