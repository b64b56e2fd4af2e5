"""Token usage (and answers) as backends report them, per item of a metered call.

The verbs return only their results (plain JSON values, cached as they are), so usage
travels beside them: :class:`~blackbox.backends.metered.MeteredBackend` opens a
:func:`collect` scope around each call to the inner backend, and the inner backend calls
:func:`report` with what each response said (``usage.prompt_tokens`` and
``usage.completion_tokens`` of an OpenAI answer; the local and fake backends their own
counts). A report is credited to the items the code is *serving* at that moment
(:func:`serving`): one request per item credits that item exactly; a request that serves a
chunk of items splits its counts evenly over them (the totals stay exact).

A backend that answers a batch in parts (the remote backend: one request per prompt, or
per chunk) also hands each part's answers over as they arrive (:func:`deliver`, credited
like usage to the items being served). The metered wrapper ignores them when the call
returns; when it fails part-way, they are what it caches and records before re-raising,
so what was received and paid for is not bought again on a rerun.

The scope lives in :mod:`contextvars`, so concurrent metered calls on different threads
never mix their counts; a backend that fans requests out to a thread pool runs each one
through :func:`bind` (a copy of the caller's context), and the sink is locked.
"""

from __future__ import annotations

import contextvars
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class TokenUsage:
    """Tokens one item (or one request) consumed: read (prompt) and written (completion)."""

    prompt_tokens: int = 0
    completion_tokens: int = 0

    def __add__(self, other: TokenUsage) -> TokenUsage:
        return TokenUsage(self.prompt_tokens + other.prompt_tokens,
                          self.completion_tokens + other.completion_tokens)


class UsageSink:
    """What the responses of one metered call reported, per item (thread-safe)."""

    def __init__(self, n: int) -> None:
        self.n = n
        self._items = [TokenUsage()] * n
        self._reported = [False] * n
        self._answers: dict[int, Any] = {}
        self._lock = threading.Lock()

    def add(self, usage: TokenUsage, items: Sequence[int]) -> None:
        """Credit ``usage`` to ``items``, split evenly (the first ones take the remainder)."""
        items = list(items) or list(range(self.n))
        k = len(items)
        if k == 0:  # a call with no items: nothing to credit
            return
        p, pr = divmod(usage.prompt_tokens, k)
        c, cr = divmod(usage.completion_tokens, k)
        with self._lock:
            for j, i in enumerate(items):
                self._items[i] += TokenUsage(p + (j < pr), c + (j < cr))
                self._reported[i] = True

    def deliver(self, answers: Sequence[Any], items: Sequence[int]) -> None:
        """Record ``answers[j]`` as item ``items[j]``'s answer."""
        with self._lock:
            for i, a in zip(items, answers, strict=True):
                self._answers[i] = a

    def answers(self) -> dict[int, Any]:
        """The answers delivered so far, by item index."""
        with self._lock:
            return dict(self._answers)

    def per_item(self) -> list[TokenUsage | None]:
        """Per item its reported usage, ``None`` where no response reported any."""
        with self._lock:
            return [u if r else None for u, r in zip(self._items, self._reported, strict=True)]


# the sink of the metered call in progress, and the sink indices of the items being served
_SINK: contextvars.ContextVar[UsageSink | None] = contextvars.ContextVar("bbx_usage_sink",
                                                                        default=None)
_OWNERS: contextvars.ContextVar[tuple[int, ...] | None] = contextvars.ContextVar(
    "bbx_usage_owners", default=None)


@contextmanager
def collect(n: int) -> Iterator[UsageSink]:
    """A scope whose reports go to a fresh sink for ``n`` items (one metered call)."""
    sink = UsageSink(n)
    t1, t2 = _SINK.set(sink), _OWNERS.set(tuple(range(n)))
    try:
        yield sink
    finally:
        _OWNERS.reset(t2)
        _SINK.reset(t1)


@contextmanager
def serving(items: Sequence[int]) -> Iterator[None]:
    """Reports inside credit ``items``: indices into the batch the current verb call got
    (nested calls on a subset compose: index ``j`` of the subset is ``items[j]`` here)."""
    owners = _OWNERS.get()
    mapped = tuple(owners[i] for i in items) if owners is not None else tuple(items)
    token = _OWNERS.set(mapped)
    try:
        yield
    finally:
        _OWNERS.reset(token)


def active() -> bool:
    """Whether a metered call is collecting (a backend can skip counting when not)."""
    return _SINK.get() is not None


def report(prompt_tokens: int | None, completion_tokens: int | None = 0) -> None:
    """A backend reports one response's token counts (no-op outside a metered call)."""
    sink = _SINK.get()
    if sink is None:
        return
    sink.add(TokenUsage(int(prompt_tokens or 0), int(completion_tokens or 0)),
             _OWNERS.get() or ())


def deliver(answers: Sequence[Any]) -> None:
    """A backend hands over the answers of the items it is serving, one each, in order
    (no-op outside a metered call, or when the count does not match: nothing is guessed)."""
    sink, owners = _SINK.get(), _OWNERS.get()
    if sink is None or owners is None or len(answers) != len(owners):
        return
    sink.deliver(list(answers), owners)


def report_items(usages: Sequence[TokenUsage]) -> None:
    """Report one usage per item of the current verb call, in order."""
    for i, u in enumerate(usages):
        with serving([i]):
            report(u.prompt_tokens, u.completion_tokens)


def report_response(res: Any) -> None:
    """Report the ``usage`` of an OpenAI response (an SDK object or a plain mapping); a
    response without one reports nothing (the metered wrapper then keeps its estimate)."""
    use = res.get("usage") if isinstance(res, dict) else getattr(res, "usage", None)
    if use is None:
        return
    get = use.get if isinstance(use, dict) else lambda k: getattr(use, k, None)
    prompt, completion = get("prompt_tokens"), get("completion_tokens")
    if prompt is None and completion is None:
        return
    report(prompt, completion)


def bind(fn: Callable[..., T]) -> Callable[..., T]:
    """``fn`` run in a copy of the caller's context (for a thread pool: each task its own
    copy, since one context cannot be entered by two threads at once)."""
    ctx = contextvars.copy_context()
    return lambda *a, **kw: ctx.run(fn, *a, **kw)
