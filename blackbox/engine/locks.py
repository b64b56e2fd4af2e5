"""A reentrant lock granted in request order.

The local backend's model is shared by two worker threads in ``bbx serve``: the dynamic
batcher (scoring calls) and the decode scheduler (one forward pass per generation step).
The scheduler releases the lock between steps and asks for it again at once. A plain
``threading.RLock`` is not fair: the releasing thread still runs and takes the lock back
before the woken waiter is scheduled, so scoring requests would wait for every generation
in flight to end. Granting the lock first-come first-served interleaves them: a scoring
call waits one decode step at most.
"""

from __future__ import annotations

import threading
from typing import Any


class FairRLock:
    """A reentrant lock whose waiters get it in the order they asked (FIFO tickets)."""

    def __init__(self) -> None:
        self._cv = threading.Condition(threading.Lock())
        self._owner: int | None = None
        self._depth = 0
        self._next = 0  # the next ticket handed out
        self._serving = 0  # the ticket whose holder may take the lock next

    def acquire(self) -> bool:
        """Block until this thread holds the lock (at once if it holds it already)."""
        me = threading.get_ident()
        with self._cv:
            if self._owner == me:
                self._depth += 1
                return True
            ticket = self._next
            self._next += 1
            while self._owner is not None or self._serving != ticket:
                self._cv.wait()
            self._owner, self._depth = me, 1
            self._serving += 1
            return True

    def release(self) -> None:
        """Release one level; the lock is free when every acquire is matched."""
        with self._cv:
            if self._owner != threading.get_ident():
                raise RuntimeError("release of a FairRLock this thread does not hold")
            self._depth -= 1
            if self._depth == 0:
                self._owner = None
                self._cv.notify_all()

    def __enter__(self) -> FairRLock:
        self.acquire()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()
