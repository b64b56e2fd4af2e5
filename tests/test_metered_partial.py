"""A metered call that fails part-way keeps what arrived before the failure.

The remote backend answers a batch in parts (one request per prompt in the top-k mode, one
per chunk of ``batch_size`` on a bbx server's extension routes); when a later part fails
after its retries, the parts already answered are cached and get one paid ledger row per
item before the error is re-raised, so a rerun pays only for the missing items and no item
is paid twice. Servers: ``tests/fake_openai.py`` and ``bbx serve`` over the fake backend,
each behind an ASGI wrapper that answers 500 to any request naming a poisoned prompt.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("openai")
pytest.importorskip("fastapi")

from fake_openai import FakeOpenAI, SeededLogits  # noqa: E402
from serve_support import running_server  # noqa: E402

from blackbox.backends.fake import FakeBackend  # noqa: E402
from blackbox.backends.metered import MeteredBackend  # noqa: E402
from blackbox.backends.remote import RemoteBackend  # noqa: E402
from blackbox.errors import BbxError  # noqa: E402

WORDS = [" positive", " negative"]
PROMPTS = [f"Review: item {i}\nSentiment:" for i in range(12)]


class Poisoned:
    """An ASGI wrapper: a POST whose body names a prompt in ``poison`` is answered 500
    (the SDK retries it, then the call fails); ``answered`` counts the 200s per path."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.poison: set[str] = set()
        self.answered: dict[str, int] = {}
        self.failed = 0

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        body, more = b"", True
        while more:
            msg = await receive()
            body += msg.get("body", b"")
            more = msg.get("more_body", False)
        text = json.loads(body or b"null")
        if any(p in json.dumps(text) for p in map(json.dumps, self.poison)):
            self.failed += 1
            await send({"type": "http.response.start", "status": 500,
                        "headers": [(b"content-type", b"application/json")]})
            await send({"type": "http.response.body", "body": json.dumps(
                {"error": {"message": "poisoned (injected)", "type": "server_error"}}).encode()})
            return
        replayed = False

        async def replay() -> dict[str, Any]:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        status = [0]

        async def sent(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        await self.app(scope, replay, sent)
        if status[0] == 200:
            self.answered[scope["path"]] = self.answered.get(scope["path"], 0) + 1


def _remote(base: str, **kw: Any) -> RemoteBackend:
    return RemoteBackend(base_url=base, api_key_env="BBX_TEST_NO_SUCH_KEY", max_retries=1,
                         timeout=10.0, **kw)


def _paid(path: Path) -> list[str]:
    return [r["key"] for r in map(json.loads, path.read_text().splitlines())
            if not r["cached"]]


def _fail_then_rerun(app: Poisoned, remote: RemoteBackend, tmp_path: Path, poison: str,
                     path: str) -> tuple[list[str], list[str], int, list[list[float]]]:
    """One failed batch, then the same batch again with the fault gone (same cache, same
    ledger): (keys paid by the failed call, by the rerun, answers the server gave the
    failed call, the rerun's results)."""
    ledger = tmp_path / "ledger.jsonl"
    first = MeteredBackend(remote, tmp_path / "cache", ledger)
    _ = remote.capabilities  # detection before the counts
    before = app.answered.get(path, 0)
    app.poison = {poison}
    with pytest.raises(BbxError, match="poisoned"):
        first.label_logprobs(PROMPTS, WORDS)
    served = app.answered.get(path, 0) - before
    first.close(close_inner=False)
    paid_first = _paid(ledger)
    app.poison = set()
    again = MeteredBackend(remote, tmp_path / "cache", ledger)
    got = again.label_logprobs(PROMPTS, WORDS)
    assert again.usage.queries == len(PROMPTS) - len(paid_first)
    assert again.usage.cached == len(paid_first)
    again.close(close_inner=False)
    return paid_first, _paid(ledger)[len(paid_first):], served, got


def _clean(base: str, **kw: Any) -> list[list[float]]:
    r = _remote(base, **kw)
    try:
        return r.label_logprobs(PROMPTS, WORDS)
    finally:
        r.close()


def test_topk_requests_answered_before_the_failure_are_kept(tmp_path: Path) -> None:
    """One request per prompt, one at a time: the third fails after its retry; the two
    before it are cached and recorded, the rerun pays for the other ten only."""
    app = Poisoned(FakeOpenAI(SeededLogits()).app())
    with running_server(app) as base:
        remote = _remote(base, api="completions", max_concurrency=1)
        first, second, served, got = _fail_then_rerun(app, remote, tmp_path, PROMPTS[2],
                                                      "/v1/completions")
        remote.close()
        assert got == _clean(base, api="completions")
    assert served == 2 and len(first) == 2
    assert app.failed == 2  # the poisoned request and its one retry
    assert len(second) == len(PROMPTS) - 2
    assert len(set(first + second)) == len(PROMPTS)  # every item paid exactly once


def test_concurrent_requests_in_flight_at_the_failure_are_kept(tmp_path: Path) -> None:
    """Four at a time: whatever the server answered before the call failed (those in
    flight included) is in the ledger, each item paid once over the failure and the rerun."""
    app = Poisoned(FakeOpenAI(SeededLogits()).app())
    with running_server(app) as base:
        remote = _remote(base, api="completions", max_concurrency=4)
        first, second, served, _ = _fail_then_rerun(app, remote, tmp_path, PROMPTS[6],
                                                    "/v1/completions")
        remote.close()
    assert len(first) == served > 0
    assert sorted(first + second) == sorted(set(first + second))
    assert len(first + second) == len(PROMPTS)


def test_a_later_chunk_failing_keeps_the_earlier_chunks(tmp_path: Path) -> None:
    """A bbx server's extension route, chunks of four, one at a time: the third chunk fails;
    the first two (eight items) are kept, the rerun sends only the last chunk."""
    from blackbox.serve import create_app

    app = Poisoned(create_app(FakeBackend(), max_wait_ms=1))
    with running_server(app) as base:
        remote = _remote(base, batch_size=4, max_concurrency=1)
        assert remote.label_mode == "extension"
        first, second, served, got = _fail_then_rerun(app, remote, tmp_path, PROMPTS[9],
                                                      "/v1/label_logprobs")
        remote.close()
        assert app.answered["/v1/label_logprobs"] == 3  # two chunks, then the rerun's one
        clean = _clean(base, batch_size=4)
        assert [v for r in got for v in r] == pytest.approx([v for r in clean for v in r])
    assert served == 2 and len(first) == 8
    assert len(second) == 4 and len(set(first + second)) == len(PROMPTS)


def test_a_metered_backend_inside_another_delivers_what_arrived(tmp_path: Path) -> None:
    """Metered inside a metered call, the inner wrapper hands the arrived answers (and its
    cache hits) upwards: the outer ledger and cache keep them too."""
    app = Poisoned(FakeOpenAI(SeededLogits()).app())
    with running_server(app) as base:
        remote = _remote(base, api="completions", max_concurrency=1)
        inner = MeteredBackend(remote, tmp_path / "inner")
        inner.label_logprobs(PROMPTS[:1], WORDS)  # a hit for the inner wrapper
        outer = MeteredBackend(inner, tmp_path / "outer", tmp_path / "outer.jsonl")
        app.poison = {PROMPTS[3]}
        with pytest.raises(BbxError, match="poisoned"):
            outer.label_logprobs(PROMPTS, WORDS)
        rows = [json.loads(x) for x in (tmp_path / "outer.jsonl").read_text().splitlines()]
        assert len(rows) == 3 and not any(r["cached"] for r in rows)
        assert rows[0]["prompt_tokens"] == 0  # the inner hit cost nothing
        assert all(r["prompt_tokens"] > 0 for r in rows[1:])  # real usage, reported upwards
        app.poison = set()
        outer.label_logprobs(PROMPTS, WORDS)
        # the failed call keeps all twelve charged (they may have been paid); the rerun nine
        assert outer.usage.cached == 3 and outer.usage.queries == len(PROMPTS) + 9
        outer.close()
        remote.close()
