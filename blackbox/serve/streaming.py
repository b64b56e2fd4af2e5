"""``stream=true``: server-sent events in OpenAI's chunk shapes, one per piece of text as
the decode batch produces it.

* completions: ``text_completion`` chunks, ``choices[].text`` the new text (the prompt
  first with ``echo``), the choice's last chunk with its ``finish_reason``;
* chat: ``chat.completion.chunk`` chunks, per choice ``delta.role`` first, then
  ``delta.content`` pieces, then an empty delta with the ``finish_reason``;
* with ``stream_options.include_usage`` every chunk has ``"usage": null`` and a last chunk
  with no choices holds the usage; then ``data: [DONE]``.

The first event is awaited before the response starts, so a request that fails at once
(an unknown adapter, say) is still a plain error response with its status. A later error
is an ``{"error": ...}`` event (the SDK raises it). When the client goes away the
generator is cancelled (Starlette watches for the disconnect) and so are its rows.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from typing import Any

from fastapi.responses import StreamingResponse

from blackbox.serve.errors import APIError
from blackbox.serve.generation import Event, Generation

Chunks = Callable[[AsyncIterator[Event]], AsyncIterator[dict[str, Any]]]


def _data(obj: Any) -> str:
    return f"data: {json.dumps(obj)}\n\n"


def usage(prompt: int, completion: int) -> dict[str, int]:
    """OpenAI's usage object."""
    return {"prompt_tokens": prompt, "completion_tokens": completion,
            "total_tokens": prompt + completion}


def one_chunk(chunks: list[dict[str, Any]], use: dict[str, int] | None = None
              ) -> StreamingResponse:
    """Chunks made after the fact (``logprobs`` need the whole text) as server-sent
    events; ``use`` (``include_usage``) in a last chunk with no choices."""
    if use is not None:
        chunks = [*({**c, "usage": None} for c in chunks),
                  {**chunks[-1], "choices": [], "usage": use}]

    async def gen() -> AsyncIterator[str]:
        for c in chunks:
            yield _data(c)
        yield "data: [DONE]\n\n"

    return StreamingResponse(gen(), media_type="text/event-stream")


async def _respond(gen: Generation, chunks: Chunks) -> StreamingResponse:
    events = gen.events()
    try:
        first = await anext(events)
    except BaseException:
        gen.cancel()
        raise

    async def replay() -> AsyncIterator[Event]:
        yield first
        async for ev in events:
            yield ev

    async def body() -> AsyncIterator[str]:
        try:
            async for c in chunks(replay()):
                yield _data(c)
        except APIError as e:
            yield _data({"error": {"message": e.message, "type": e.type, "param": e.param,
                                   "code": e.code}})
        finally:  # the client left (a cancellation lands here) or all is sent
            gen.cancel()
        yield "data: [DONE]\n\n"

    return StreamingResponse(body(), media_type="text/event-stream")


async def stream_completion(gen: Generation, head: dict[str, Any], prefixes: list[str],
                            include_usage: bool, prompt_tokens: int) -> StreamingResponse:
    """A completion request's events as ``text_completion`` chunks (``prefixes``: per
    choice, the echoed prompt or "")."""
    extra = {"usage": None} if include_usage else {}

    async def chunks(events: AsyncIterator[Event]) -> AsyncIterator[dict[str, Any]]:
        started: set[int] = set()
        tokens = 0
        async for ev in events:
            text = ev.text
            if ev.index not in started:
                started.add(ev.index)
                text = prefixes[ev.index] + text
            if ev.finish is not None:
                tokens += ev.tokens
            elif not text:
                continue
            yield {**head, "choices": [{"index": ev.index, "text": text, "logprobs": None,
                                        "finish_reason": ev.finish}], **extra}
        if include_usage:
            yield {**head, "choices": [], "usage": usage(prompt_tokens, tokens)}

    return await _respond(gen, chunks)


async def stream_chat(gen: Generation, head: dict[str, Any], include_usage: bool,
                      prompt_tokens: int) -> StreamingResponse:
    """A chat request's events as ``chat.completion.chunk`` chunks."""
    extra = {"usage": None} if include_usage else {}

    def chunk(index: int, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {**head, "choices": [{"index": index, "delta": delta, "logprobs": None,
                                     "finish_reason": finish}], **extra}

    async def chunks(events: AsyncIterator[Event]) -> AsyncIterator[dict[str, Any]]:
        started: set[int] = set()
        tokens = 0
        async for ev in events:
            if ev.index not in started:
                started.add(ev.index)
                yield chunk(ev.index, {"role": "assistant", "content": ""})
            if ev.text:
                yield chunk(ev.index, {"content": ev.text})
            if ev.finish is not None:
                tokens += ev.tokens
                yield chunk(ev.index, {}, ev.finish)
        if include_usage:
            yield {**head, "choices": [], "usage": usage(prompt_tokens, tokens)}

    return await _respond(gen, chunks)
