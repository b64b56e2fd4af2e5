"""Where the remote backend's requests go: one or several endpoints serving one model.

Each endpoint (a base URL) has its own ``openai`` client and its own concurrency bound
(``max_concurrency``). A call leases the endpoint with the fewest requests in flight among
those that are up and below their current limit, and holds it across the SDK's own retries;
the retries stay in the SDK (``max_retries``, honouring ``retry-after``).

Every HTTP attempt, retries included, passes through :class:`ObservedTransport`, which
tells the pool what happened:

* **429** halves the endpoint's limit (at most once per round of requests: a 429 of a
  request leased before the last halving does not halve again); each run of ``limit``
  answered attempts raises it by one, up to the bound (additive increase, multiplicative
  decrease, as TCP does);
* **connection refused** takes the endpoint out at once; so do ``FAILS_TO_TAKE_OUT``
  failed attempts (5xx, dropped connections, timeouts) in a row. A taken-out endpoint is
  skipped for a cooldown (doubling up to ``MAX_COOLDOWN_S`` while it keeps failing), then
  comes back with a limit of one (half-open) and grows again as it answers.

When a call fails on one endpoint after the SDK's retries (connection errors, timeouts,
5xx, 429) and another endpoint has not failed it yet, the call is sent there instead
(:meth:`EndpointPool.fail_over`): each endpoint at most once per call. With several
endpoints, a refused connection is not retried on the same endpoint at all: the transport
raises an ``openai`` error, which the SDK passes on without retrying. A single endpoint is
never taken out (there is nowhere else to go): its SDK retries are the whole story.

At the start every endpoint is asked what it serves (``RemoteBackend`` checks that all
list the model); one that cannot be reached then is an error, before anything is paid for.

Nothing here writes the ledger: a call answered after retries or after a fail-over is still
one call to :mod:`blackbox.backends.metered`, which writes one row per logical item.
"""

from __future__ import annotations

import contextlib
import functools
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

FAILS_TO_TAKE_OUT = 3  # failed attempts in a row that take an endpoint out
COOLDOWN_S = 2.0  # first time out; doubled while the endpoint keeps failing
MAX_COOLDOWN_S = 60.0
WAIT_S = 0.05  # a leaser waiting for a slot re-checks this often (cooldowns expire)


@dataclass
class Endpoint:
    """One base URL and what the pool knows about it."""

    url: str | None  # None: the SDK's default (OpenAI)
    bound: int  # the most requests in flight (max_concurrency)
    limit: int = 0  # the current, adaptive bound (0: set to ``bound`` by the pool)
    in_flight: int = 0
    answered: int = 0  # calls this endpoint answered (after the SDK's retries)
    attempts: int = 0  # HTTP attempts, retries included
    throttled: int = 0  # 429 answers seen
    failed: int = 0  # failed attempts (5xx, connection errors, timeouts)
    taken_out: int = 0  # times taken out
    down_until: float = 0.0
    cooldown: float = COOLDOWN_S
    epoch: int = 0  # bumped at each halving: one halving per round of requests
    streak: int = 0  # failed attempts in a row
    good: int = 0  # answered attempts since the limit last changed
    client: Any = field(default=None, repr=False)

    def stats(self) -> dict[str, Any]:
        """What a run may want to know about this endpoint (counts, the current limit)."""
        return {"url": self.url, "answered": self.answered, "attempts": self.attempts,
                "throttled": self.throttled, "failed": self.failed,
                "taken_out": self.taken_out, "limit": self.limit, "bound": self.bound}


@dataclass
class Lease:
    """A call's hold on one endpoint (thread-local while the call runs)."""

    endpoint: Endpoint
    epoch: int  # the endpoint's epoch when leased
    can_fail_over: bool  # another endpoint may take this call if this one fails


class EndpointPool:
    """The endpoints of one backend, their limits, and which one a call goes to."""

    def __init__(self, urls: Sequence[str | None], bound: int,
                 make_client: Callable[[Endpoint], Any],
                 clock: Callable[[], float] = time.monotonic) -> None:
        if not urls:
            raise ValueError("an endpoint pool needs at least one URL")
        self.endpoints = [Endpoint(url=u, bound=max(1, bound), limit=max(1, bound))
                          for u in urls]
        self._make_client = make_client
        self._clock = clock
        self._cond = threading.Condition()
        self._local = threading.local()

    @property
    def several(self) -> bool:
        return len(self.endpoints) > 1

    @property
    def bound(self) -> int:
        """The most calls in flight over all endpoints (the backend's thread count)."""
        return sum(e.bound for e in self.endpoints)

    def current(self) -> Lease | None:
        """This thread's lease, while a call holds one."""
        return getattr(self._local, "lease", None)

    def client_of(self, ep: Endpoint) -> Any:
        with self._cond:
            if ep.client is None:
                ep.client = self._make_client(ep)
            return ep.client

    def default(self) -> Endpoint:
        """The endpoint for requests outside a call (first one up, else the first)."""
        now = self._clock()
        return next((e for e in self.endpoints if e.down_until <= now), self.endpoints[0])

    @contextlib.contextmanager
    def lease(self, exclude: Sequence[int] = (), pin: Endpoint | None = None
              ) -> Iterator[Endpoint]:
        """Hold an endpoint for one call: ``pin`` that one, else the least busy one up that
        is not in ``exclude`` (indices) and below its limit; waits for a free slot. A call
        made inside another call (same thread) keeps the outer one's endpoint."""
        held = self.current()
        if held is not None:
            yield held.endpoint
            return
        with self._cond:
            while (ep := self._pick(exclude, pin)) is None:
                self._cond.wait(WAIT_S)
            ep.in_flight += 1
            others = pin is None and len(self.endpoints) - len(exclude) > 1
            self._local.lease = Lease(ep, ep.epoch, others)
        try:
            yield ep
        finally:
            with self._cond:
                ep.in_flight -= 1
                self._local.lease = None
                self._cond.notify_all()

    def _pick(self, exclude: Sequence[int], pin: Endpoint | None) -> Endpoint | None:
        cands = [pin] if pin is not None else [
            e for i, e in enumerate(self.endpoints) if i not in exclude]
        now = self._clock()
        up = [e for e in cands if e.down_until <= now]
        # all down: the one back soonest is tried anyway (the run goes on while any answers)
        pool = up or [min(cands, key=lambda e: e.down_until)]
        free = [e for e in pool if e.in_flight < e.limit]
        # fewest in flight; ties to the one that answered least, so load spreads evenly
        return min(free, key=lambda e: (e.in_flight, e.answered)) if free else None

    # ---- what happened ----------------------------------------------------------------

    def observe(self, ep: Endpoint, status: int | None) -> None:
        """One HTTP attempt's outcome: its status, or ``None`` for a transport error."""
        lease = self.current()
        with self._cond:
            ep.attempts += 1
            if status == 429:
                ep.throttled += 1
                leased_at = lease.epoch if lease is not None and lease.endpoint is ep \
                    else ep.epoch
                if leased_at == ep.epoch:  # the first 429 of this round halves the limit
                    ep.limit = max(1, ep.limit // 2)
                    ep.epoch += 1
                    ep.good = 0
            elif status is None or status >= 500:
                ep.failed += 1
                ep.streak += 1
                if ep.streak >= FAILS_TO_TAKE_OUT:
                    self._take_out(ep)
            else:  # an answer (4xx included: the endpoint works, the request was refused)
                ep.streak = 0
                ep.cooldown = COOLDOWN_S
                ep.good += 1
                if ep.good >= ep.limit and ep.limit < ep.bound:
                    ep.limit += 1
                    ep.good = 0
            self._cond.notify_all()

    def refused(self, ep: Endpoint) -> bool:
        """A connection to ``ep`` was refused: take it out; True when this call should
        go elsewhere now rather than through the SDK's retries on a dead endpoint."""
        lease = self.current()
        with self._cond:
            self._take_out(ep)
        return lease is not None and lease.can_fail_over

    def _take_out(self, ep: Endpoint) -> None:
        if not self.several:
            ep.streak = 0
            return  # nowhere else to go: the SDK's retries decide
        now = self._clock()
        if ep.down_until <= now:  # not already out: count it, set the next cooldown
            ep.taken_out += 1
            ep.down_until = now + ep.cooldown
            ep.cooldown = min(2 * ep.cooldown, MAX_COOLDOWN_S)
        ep.limit = 1  # back half-open: one call at a time until it answers again
        ep.good = 0
        ep.streak = 0

    def answered(self, ep: Endpoint) -> None:
        with self._cond:
            ep.answered += 1

    def fail_over(self, ep: Endpoint, retry_elsewhere: bool, tried: list[int]) -> bool:
        """After ``ep`` failed a call: True when another endpoint should take it (``tried``
        gets ``ep``'s index). ``retry_elsewhere``: the failure was the endpoint's
        (connection, timeout, 5xx, 429), not the request's."""
        lease = self.current()
        if not retry_elsewhere or lease is None:
            return False
        tried.append(self.endpoints.index(ep))  # counted even when none is left to try
        return lease.can_fail_over and len(tried) < len(self.endpoints)

    def stats(self) -> list[dict[str, Any]]:
        with self._cond:
            return [e.stats() for e in self.endpoints]


def split_urls(base_url: str | Sequence[str] | None) -> list[str]:
    """``base_url`` as a list of URLs: one string (commas separate several), or a list;
    trailing slashes dropped; the same URL twice is an error (its calls would count once
    per listing)."""
    from blackbox.errors import BbxError

    items = [base_url] if isinstance(base_url, str) else list(base_url or [])
    urls = [u.strip().rstrip("/") for item in items for u in str(item).split(",")]
    urls = [u for u in urls if u]
    dupes = sorted({u for u in urls if urls.count(u) > 1})
    if dupes:
        raise BbxError(f"base_url lists {dupes[0]} twice: give each endpoint once")
    return urls


def observed_http_client(pool: EndpointPool, ep: Endpoint) -> Any:
    """An ``httpx2`` client for the SDK whose every attempt reports to ``pool``."""
    import httpx2
    import openai

    inner = httpx2.HTTPTransport(limits=httpx2.Limits(max_connections=1000,
                                                      max_keepalive_connections=100))
    return openai.DefaultHttpxClient(transport=_transport_class()(pool, ep, inner))


@functools.cache
def _transport_class() -> type:
    """:class:`ObservedTransport`, made on first use (httpx2 is imported lazily, as the
    SDK is)."""
    import httpx2
    import openai

    class ObservedTransport(httpx2.BaseTransport):
        """Wraps the real transport: reports each attempt, and turns a refused connection,
        when another endpoint can take the call, into an ``openai`` error that the SDK
        does not retry (it passes ``OpenAIError`` on as it is)."""

        def __init__(self, pool: EndpointPool, ep: Endpoint, inner: Any) -> None:
            self.pool, self.ep, self.inner = pool, ep, inner

        def handle_request(self, request: Any) -> Any:
            try:
                response = self.inner.handle_request(request)
            except httpx2.ConnectError as e:
                self.pool.observe(self.ep, None)
                if self.pool.refused(self.ep):
                    raise openai.APIConnectionError(
                        message=f"connection refused ({e})", request=request) from e
                raise
            except httpx2.TransportError:
                self.pool.observe(self.ep, None)
                raise
            self.pool.observe(self.ep, response.status_code)
            return response

        def close(self) -> None:
            self.inner.close()

    return ObservedTransport
