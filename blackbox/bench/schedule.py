"""When a benchmark's requests go out.

* ``sync``: one request at a time (a closed loop of one client);
* ``concurrency``: N clients in a closed loop, each sending its next request as soon as its
  last one ends;
* ``rate``: an open loop, requests sent at Poisson arrival times (exponential gaps of mean
  ``1/rate``, drawn from ``seed``) whether or not earlier ones have ended.

Every mode stops issuing at ``requests`` requests or ``duration`` seconds, whichever comes
first; requests in flight then run to their end (each is bounded by the client timeout).
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

from blackbox.errors import BbxError

MODES = ("sync", "concurrency", "rate")


@dataclass(frozen=True)
class Schedule:
    """A validated schedule: ``mode`` with its ``concurrency`` or Poisson ``rate`` and
    ``seed``, bounded by ``requests`` and ``duration`` (seconds)."""

    mode: str = "sync"
    concurrency: int = 1
    rate: float | None = None
    seed: int = 0
    requests: int = 100
    duration: float = 300.0

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise BbxError(f"unknown mode '{self.mode}': use one of {', '.join(MODES)}")
        if self.mode == "rate" and not (self.rate and self.rate > 0):
            raise BbxError("mode rate needs --rate R (requests per second, > 0)")
        if self.mode == "concurrency" and self.concurrency < 1:
            raise BbxError("mode concurrency needs --concurrency N >= 1")
        if self.requests < 1 or self.duration <= 0:
            raise BbxError("--requests must be >= 1 and --duration > 0")

    @property
    def clients(self) -> int:
        """Closed-loop clients (``rate`` mode has none: its concurrency is unbounded)."""
        return 1 if self.mode == "sync" else self.concurrency


def poisson_offsets(rate: float, n: int, seed: int) -> list[float]:
    """``n`` Poisson arrival times (seconds from 0, increasing) at ``rate`` per second: the
    cumulative sum of exponential gaps of mean ``1/rate``, the same for the same seed."""
    if rate <= 0:
        raise BbxError("a Poisson rate must be > 0")
    gaps = np.random.default_rng(seed).exponential(1.0 / rate, size=n)
    return np.cumsum(gaps).tolist()


R = TypeVar("R")


async def drive(schedule: Schedule, send: Callable[[int, float], Coroutine[Any, Any, R]],
                clock: Callable[[], float] = time.perf_counter) -> list[R]:
    """Call ``send(index, due)`` as ``schedule`` says (``due``: when the request was due, on
    ``clock``); the results in the order requests were issued.
    An open loop's Poisson offsets count from when this starts."""
    t0 = clock()

    def now() -> float:
        return clock() - t0

    if schedule.mode == "rate":
        assert schedule.rate is not None
        tasks: list[asyncio.Task[R]] = []
        for i, at in enumerate(poisson_offsets(schedule.rate, schedule.requests,
                                               schedule.seed)):
            if at >= schedule.duration:
                break
            delay = at - now()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(send(i, t0 + at)))  # open loop: never wait here
        return list(await asyncio.gather(*tasks))
    counter = itertools.count()
    results: dict[int, R] = {}

    async def client() -> None:
        while True:
            # checked before each send: a closed loop never starts one past either bound
            i = next(counter)
            if i >= schedule.requests or now() >= schedule.duration:
                return
            results[i] = await send(i, clock())

    await asyncio.gather(*(client() for _ in range(schedule.clients)))
    return [results[i] for i in sorted(results)]
