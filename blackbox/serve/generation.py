"""Generation requests as streams of events: what the completion and chat routes read,
streamed or not.

On the local backend a request's choices are rows of the decode scheduler's continuous
batch (:mod:`blackbox.engine.scheduler`): they share forward passes with every other
request decoding at the time, whatever their parameters, and their text arrives as it is
generated. A greedy request with ``n > 1`` decodes once and every choice gets its text.
On other backends (remote, fake) each choice's text arrives whole, from the dynamic
batcher's ``generate`` calls.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from blackbox.errors import BbxError
from blackbox.serve.errors import APIError, from_bbx_error


@dataclass
class Event:
    """New text of choice ``index``; its last event has ``finish`` and ``tokens`` (the
    tokens generated, as the model counts them)."""

    index: int
    text: str
    finish: str | None = None
    tokens: int = 0


@dataclass
class Choice:
    """One choice's whole text, why it ended, and its tokens."""

    text: str = ""
    finish: str = "stop"
    tokens: int = 0


@dataclass
class Params:
    """The sampling parameters of a request."""

    max_tokens: int
    temperature: float
    top_p: float
    seed: int
    stop: list[str] | None = None
    # a validated chat response_format asking for JSON (None: free text)
    response_format: dict[str, Any] | None = None


class Generation:
    """The events of one request's ``n_choices`` choices, in the order they come."""

    def __init__(self, n_choices: int) -> None:
        self.n_choices = n_choices
        self._queue: asyncio.Queue[Event | BaseException] = asyncio.Queue()
        self._left = n_choices
        self._cancel: Callable[[], Any] | None = None
        self.loop = asyncio.get_running_loop()

    def put(self, item: Event | BaseException) -> None:
        """Hand an event (or the error that ends the request) over; on the event loop."""
        self._queue.put_nowait(item)

    def put_threadsafe(self, item: Event | BaseException) -> None:
        """:meth:`put` from another thread (a server shutting down has no loop left)."""
        with contextlib.suppress(RuntimeError):
            self.loop.call_soon_threadsafe(self.put, item)

    def on_cancel(self, cancel: Callable[[], Any]) -> None:
        """What stops the work behind this generation."""
        self._cancel = cancel

    def cancel(self) -> None:
        """Stop generating (the client went away); idempotent."""
        if self._cancel is not None:
            self._cancel()
            self._cancel = None

    async def events(self) -> AsyncIterator[Event]:
        """The events until every choice has finished; an error raises here."""
        while self._left:
            item = await self._queue.get()
            if isinstance(item, BbxError):
                raise from_bbx_error(item)
            if isinstance(item, BaseException):
                raise item
            if item.finish is not None:
                self._left -= 1
            yield item
        self._cancel = None  # all done: nothing to stop

    async def collect(self) -> list[Choice]:
        """Every choice, once all have finished."""
        out = [Choice() for _ in range(self.n_choices)]
        try:
            async for ev in self.events():
                c = out[ev.index]
                c.text += ev.text
                if ev.finish is not None:
                    c.finish, c.tokens = ev.finish, ev.tokens
        finally:
            self.cancel()  # a request cancelled while waiting stops its rows
        return out


def local_generation(svc: Any, prompts: list[str], params: Params, n: int, adapter: Any,
                     stream: bool) -> Generation:
    """The request's rows on the decode scheduler (a 503 when its queue is full)."""
    from blackbox.engine.constrain import JsonGuide, guide_schema
    from blackbox.engine.decode import new_row
    from blackbox.engine.scheduler import QueueFull

    gen = Generation(len(prompts) * n)
    runs = 1 if params.temperature == 0 else n  # greedy choices are all the same text
    rows = []
    constrained, schema = guide_schema(params.response_format)
    for i, p in enumerate(prompts):
        ids = svc.prompt_ids(p)
        if not ids:
            raise APIError(400, "an empty prompt cannot be completed: this tokenizer has no "
                           "BOS token", "prompt")
        for j in range(runs):
            guide = None
            if constrained:  # one guide per row: each remembers its own parse
                try:
                    guide = JsonGuide(svc.engine, schema, ids)
                except BbxError as e:
                    raise APIError(400, str(e), "response_format") from None
            rows.append(new_row(ids, p, params.max_tokens, svc.context_length,
                                params.temperature, params.top_p, params.seed + j,
                                params.stop or (), stream=stream, adapter=adapter,
                                guide=guide, index=i * n + j))
    fan = n // runs

    def sink(row: Any, piece: str, error: BaseException | None) -> None:
        # on the scheduler's thread: hand over only
        if error is not None:
            gen.put_threadsafe(error)
            return
        finish = None if row.finish is None else ("stop" if row.finish == "stop" else "length")
        # an empty piece too: the first one starts the response (the chat role chunk)
        for k in range(fan):
            gen.put_threadsafe(Event(row.index + k, piece, finish, len(row.new)))

    try:
        ticket = svc.decoder.submit(rows, sink)
    except QueueFull as e:
        raise APIError(503, str(e), None, "server_busy",
                       headers={"Retry-After": str(e.retry_after)}) from None
    except BbxError as e:
        raise from_bbx_error(e) from None
    gen.on_cancel(ticket.cancel)
    return gen


def batcher_generation(svc: Any, prompts: list[str], params: Params, n: int,
                       adapter: Any) -> Generation:
    """The request on a backend without token access: each choice's text whole."""
    gen = Generation(len(prompts) * n)
    runs = 1 if params.temperature == 0 else n

    async def run() -> None:
        try:
            outs = []
            for j in range(runs):
                p: dict[str, Any] = {"max_tokens": params.max_tokens,
                                     "temperature": params.temperature,
                                     "top_p": params.top_p, "seed": params.seed + j}
                if params.stop:
                    p["stop"] = params.stop
                outs.append(await svc.generate(prompts, p, adapter))
            for i in range(len(prompts)):
                for j in range(n):
                    text = outs[j if runs > 1 else 0][i]
                    tokens = svc.count_tokens([text])
                    finish = "length" if tokens >= params.max_tokens else "stop"
                    gen.put(Event(i * n + j, text, finish, tokens))
        except Exception as e:  # noqa: BLE001 - handed to the route
            gen.put(e)

    gen.on_cancel(asyncio.ensure_future(run()).cancel)
    return gen
