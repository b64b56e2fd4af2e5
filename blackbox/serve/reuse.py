"""Identical scoring requests computed once: finished results kept (LRU), and requests
that arrive while the same item is being computed wait for that computation.

Scoring is a pure function of (token ids, positions, top-k, bias, adapter): the base model's
weights never change while the server runs, so a repeated prompt (ClaPS re-scoring its best
prompts, MPD's fixed templates, a client retrying) can take the earlier answer. vLLM's prefix
caching reuses the KV cache of a shared prefix and still runs the rest of the prompt; an
identical prompt here runs nothing at all. Shared prefixes of *different* prompts are not
reused (each prompt is computed in full).

Only base-model items are kept: adapters may be replaced while the server runs.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Any

DEFAULT_ENTRIES = 4096


@dataclass
class ReuseStats:
    """Counters for ``/health``: items answered from the kept results, items that waited
    for an identical one in flight, and items computed."""

    hits: int = 0
    joined: int = 0
    computed: int = 0

    def as_dict(self) -> dict[str, int]:
        return dict(vars(self))


class Reuse:
    """Kept results of at most ``entries`` items, and the items in flight (event-loop only:
    not thread-safe, and needs none — every route runs on the one loop)."""

    def __init__(self, entries: int = DEFAULT_ENTRIES) -> None:
        self.entries = max(0, entries)
        self.stats = ReuseStats()
        self._done: OrderedDict[Hashable, Any] = OrderedDict()
        self._flight: dict[Hashable, asyncio.Future[Any]] = {}

    async def get(self, keys: Sequence[Hashable],
                  compute: Callable[[list[int]], Awaitable[list[Any]]]) -> list[Any]:
        """One result per key: kept ones, awaited in-flight ones, and ``compute(indices)``
        for the rest (each distinct key once; ``indices`` index ``keys``)."""
        out: list[Any] = [None] * len(keys)
        waits: list[tuple[int, asyncio.Future[Any]]] = []
        mine: dict[Hashable, int] = {}  # key -> the first index computing it
        loop = asyncio.get_running_loop()
        for i, key in enumerate(keys):
            if key in self._done:
                self._done.move_to_end(key)
                out[i] = self._done[key]
                self.stats.hits += 1
            elif key in self._flight:  # another request's, or an earlier index of this one
                waits.append((i, self._flight[key]))
                self.stats.joined += 1
            else:
                mine[key] = i
                self._flight[key] = loop.create_future()
        if mine:
            order = list(mine.values())
            try:
                results = await compute(order)
            except BaseException as e:
                for key in mine:
                    fut = self._flight.pop(key)
                    if isinstance(e, asyncio.CancelledError):
                        fut.cancel()  # the waiters compute it themselves (below)
                    else:
                        fut.set_exception(e)
                        fut.exception()  # retrieved: no "never retrieved" warning
                raise
            for key, i, res in zip(mine, order, results, strict=True):
                out[i] = res
                self._flight.pop(key).set_result(res)
                self._keep(key, res)
            self.stats.computed += len(order)
        for i, fut in waits:
            try:
                out[i] = await asyncio.shield(fut)
            except asyncio.CancelledError:
                if not fut.cancelled():
                    raise  # this request was cancelled, not the one computing the item
                out[i] = (await compute([i]))[0]
        return out

    def _keep(self, key: Hashable, value: Any) -> None:
        if not self.entries:
            return
        self._done[key] = value
        self._done.move_to_end(key)
        while len(self._done) > self.entries:
            self._done.popitem(last=False)
