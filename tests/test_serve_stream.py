"""Token streaming and batched generation in ``bbx serve``, through the real openai SDK
against an in-process server over a tiny random Llama (and its PEFT zoo).

No wall-clock assertions: a forward hook on the served model makes the order of events
certain (the server cannot compute a token until the test lets it), and the decode
scheduler's counters say how many forward passes ran and how many rows shared them.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")
openai = pytest.importorskip("openai")
pytest.importorskip("fastapi")

from serve_support import PROMPTS, build_tiny_model, build_zoo, running_server  # noqa: E402

MIX = {"adapters": ["sst2", "trec", "news"], "alpha": [0.5, 1.0, 0.3], "beta": [0.8, -0.5, 1.2]}
CHAT = [{"role": "user", "content": "hello"}]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("stream")
    model = build_tiny_model(root / "model")
    return model, build_zoo(model, root / "zoo")


def _backend(tiny: tuple[Path, Path]) -> Any:
    from blackbox.backends.local import LocalBackend

    return LocalBackend(model=str(tiny[0]), dtype="float32", embed_model="mean",
                        adapters=str(tiny[1]), batch_size=8)


@pytest.fixture(scope="module")
def server(tiny):
    """(client, backend, decode scheduler) of a server over the tiny model."""
    from blackbox.serve import create_app

    backend = _backend(tiny)
    app = create_app(backend)
    with running_server(app) as url:
        client = openai.OpenAI(base_url=url, api_key="unused", max_retries=0, timeout=60)
        yield client, backend, getattr(app.fastapi.state.service, "decoder", None)


@contextlib.contextmanager
def gate(backend: Any, when: Callable[[int], bool], until: Callable[[], bool]
         ) -> Iterator[dict[str, Any]]:
    """Hold the served model's forward pass number ``n`` (counted from here) where
    ``when(n)``, until ``until()`` is true (at most 30 s: then ``timed_out``)."""
    state: dict[str, Any] = {"n": 0, "timed_out": False, "held_at": None}

    def hook(_mod: Any, _args: Any) -> None:
        state["n"] += 1
        if state["held_at"] is None and when(state["n"]):
            state["held_at"] = state["n"]
            deadline = time.monotonic() + 30
            while not until():
                if time.monotonic() > deadline:
                    state["timed_out"] = True
                    return
                time.sleep(0.005)

    handle = backend.engine.model.register_forward_pre_hook(hook)
    try:
        yield state
    finally:
        handle.remove()


def _wait(cond: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 30
    while not cond():
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.005)


def _model(client: Any) -> str:
    return client.models.list().data[0].id


# ---- streaming ----------------------------------------------------------------------------

def test_chat_streams_token_by_token_and_joins_to_the_greedy_answer(server) -> None:
    client, backend, decoder = server
    model = _model(client)
    want = client.chat.completions.create(model=model, messages=CHAT, max_tokens=12,
                                          temperature=0)
    n_tokens = want.usage.completion_tokens
    assert n_tokens >= 4 and want.choices[0].finish_reason == "length"
    got: list[str] = []
    # the forward pass of the last token waits until the client holds a content chunk: a
    # server that sends the answer once it is finished never gets there
    with gate(backend, lambda n: n == n_tokens, lambda: bool(got)) as g:
        chunks = []
        for c in client.chat.completions.create(model=model, messages=CHAT, max_tokens=12,
                                                temperature=0, stream=True):
            chunks.append(c)
            if c.choices and c.choices[0].delta.content:
                got.append(c.choices[0].delta.content)
    assert not g["timed_out"] and g["held_at"] == n_tokens
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert len(got) > 1  # one chunk per token (or a few)
    assert "".join(got) == want.choices[0].message.content
    assert chunks[-1].choices[0].finish_reason == "length"
    assert chunks[-1].choices[0].delta.content is None
    assert all(c.choices[0].finish_reason is None for c in chunks[:-1])


def test_completions_stream_with_usage_n_echo_and_stop_join_to_the_plain_answer(server) -> None:
    client, _, _ = server
    model = _model(client)
    prompts = PROMPTS[:2]
    args: dict[str, Any] = {"model": model, "prompt": prompts, "max_tokens": 10,
                            "temperature": 0, "n": 2}
    plain = client.completions.create(**args)
    texts = [c.text for c in plain.choices]
    # a stop string the first answer meets in its middle (no U+FFFD: those are everywhere)
    at = next(k for k in range(2, len(texts[0]) - 2) if "\ufffd" not in texts[0][k:k + 2])
    stop = texts[0][at:at + 2]
    for extra in ({}, {"echo": True}, {"stop": [stop]}):
        want = client.completions.create(**args, **extra) if extra else plain
        chunks = list(client.completions.create(**args, **extra, stream=True,
                                                stream_options={"include_usage": True}))
        assert all(c.object == "text_completion" for c in chunks)
        joined = ["".join(c.choices[0].text for c in chunks if c.choices
                          and c.choices[0].index == i) for i in range(4)]
        assert joined == [c.text for c in want.choices]
        finishes = {c.choices[0].index: c.choices[0].finish_reason for c in chunks
                    if c.choices and c.choices[0].finish_reason}
        assert finishes == {c.index: c.finish_reason for c in want.choices}
        assert chunks[-1].choices == [] and chunks[-1].usage == want.usage
        assert all(c.usage is None for c in chunks[:-1])
        assert sum(1 for c in chunks if c.choices and c.choices[0].text) > 4
    cut = texts[0][:texts[0].find(stop)]
    assert want.choices[0].text == cut and want.choices[0].finish_reason == "stop"


def test_sampled_streams_are_seeded_like_plain_requests(server) -> None:
    client, _, _ = server
    args: dict[str, Any] = {"model": _model(client), "messages": CHAT, "max_tokens": 8,
                            "temperature": 1.0, "seed": 11, "n": 2}
    want = client.chat.completions.create(**args)
    chunks = list(client.chat.completions.create(**args, stream=True))
    pieces = [[c.choices[0].delta.content for c in chunks
               if c.choices[0].index == j and c.choices[0].delta.content] for j in range(2)]
    assert ["".join(p) for p in pieces] == [c.message.content for c in want.choices]
    assert all(len(p) > 1 for p in pieces)


def test_a_stream_whose_client_leaves_stops_at_the_step_boundary(server) -> None:
    client, backend, decoder = server
    before = decoder.stats.as_dict()
    state: dict[str, Any] = {"closed": False}

    def cancelled() -> bool:
        batch = decoder._batch
        return state["closed"] and batch is not None and all(r.cancelled for r in batch.rows)

    # forward 1 is the prefill (its first token sends the role chunk); forward 2 waits
    # until the client has gone and the server has cancelled the row
    with gate(backend, lambda n: n == 2, cancelled) as g:
        stream = client.chat.completions.create(model=_model(client), messages=CHAT,
                                                max_tokens=80, temperature=0, stream=True)
        assert next(iter(stream)).choices[0].delta.role == "assistant"
        stream.close()
        state["closed"] = True
        _wait(lambda: decoder.running() == 0 and g["held_at"] is not None, "the row to leave")
    after = decoder.stats.as_dict()
    assert not g["timed_out"]
    assert after["cancelled"] == before["cancelled"] + 1
    # the prefill and the step it was in when the client left; none of its 78 others
    assert after["forwards"] - before["forwards"] == 2
    assert after["tokens"] - before["tokens"] == 2


# ---- batched generation -------------------------------------------------------------------

REQUESTS: list[tuple[str, dict[str, Any]]] = [  # lengths, parameters and adapters all differ
    ("chat", {"max_tokens": 6, "temperature": 0}),
    ("completion", {"prompt": PROMPTS[0], "max_tokens": 9, "temperature": 0}),
    ("completion", {"prompt": PROMPTS[1], "max_tokens": 4, "temperature": 0,
                    "extra_body": {"adapter": "sst2"}}),
    ("chat", {"max_tokens": 7, "temperature": 0.8, "seed": 3, "extra_body": {"adapter": MIX}}),
    ("completion", {"prompt": PROMPTS[2], "max_tokens": 5, "temperature": 1.0, "top_p": 0.9,
                    "seed": 5}),
    ("completion", {"prompt": PROMPTS[4], "max_tokens": 8, "temperature": 0, "stop": ["e"]}),
    ("chat", {"max_tokens": 5, "temperature": 0, "model": "trec"}),
    ("completion", {"prompt": PROMPTS[6], "max_tokens": 6, "temperature": 0,
                    "extra_body": {"adapter": MIX}}),
]


def _send(client: Any, model: str, kind: str, kw: dict[str, Any]) -> tuple[str, str, int]:
    kw = {"model": model, **kw}
    if kind == "chat":
        r = client.chat.completions.create(messages=CHAT, **kw)
        return r.choices[0].message.content, r.choices[0].finish_reason, r.usage.completion_tokens
    c = client.completions.create(**kw)
    return c.choices[0].text, c.choices[0].finish_reason, c.usage.completion_tokens


def test_concurrent_requests_decode_together_and_greedy_does_not_depend_on_it(server) -> None:
    client, backend, decoder = server
    model = _model(client)
    alone, forwards = [], []
    for kind, kw in REQUESTS:
        before = decoder.stats.forwards
        alone.append(_send(client, model, kind, kw))
        forwards.append(decoder.stats.forwards - before)
    assert sum(forwards) >= sum(t for _, _, t in alone)  # one at a time: a pass per token
    stats = decoder.stats
    stats.max_rows, prefills, before = 0, stats.prefills, stats.forwards
    together: list[Any] = [None] * len(REQUESTS)

    def worker(i: int) -> None:
        together[i] = _send(client, model, *REQUESTS[i])

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(len(REQUESTS))]
    with backend.locked():  # the scheduler waits: all eight requests are queued first
        for t in threads:
            t.start()
        _wait(lambda: decoder.queued() == len(REQUESTS), "the requests to queue")
    for t in threads:
        t.join(timeout=60)
    assert together == alone  # greedy and seeded samples alike, adapters and mixtures too
    assert stats.max_rows == len(REQUESTS)
    assert stats.prefills - prefills == 1  # the eight prompts in one prefill
    # then one step for all until the longest is done: its passes are all the batch needs
    assert stats.forwards - before == max(forwards)


def test_a_full_queue_is_a_503_with_retry_after(tiny) -> None:
    from blackbox.serve import create_app

    backend = _backend(tiny)
    app = create_app(backend, max_queue=2)
    decoder = app.fastapi.state.service.decoder
    with running_server(app) as url:
        client = openai.OpenAI(base_url=url, api_key="unused", max_retries=0, timeout=60)
        model = _model(client)
        done: list[Any] = []

        def worker() -> None:
            done.append(client.completions.create(model=model, prompt="x", max_tokens=3))

        threads = [threading.Thread(target=worker) for _ in range(2)]
        with backend.locked():
            for t in threads:
                t.start()
            _wait(lambda: decoder.queued() == 2, "the queue to fill")
            errors = []
            for stream in (False, True):
                with pytest.raises(openai.InternalServerError) as err:
                    client.chat.completions.create(model=model, messages=CHAT, max_tokens=3,
                                                   stream=stream)
                errors.append(err.value)
        for t in threads:
            t.join(timeout=60)
        assert len(done) == 2  # the queued ones are answered
        assert client.completions.create(model=model, prompt="x", max_tokens=3).choices
    for e in errors:
        assert e.status_code == 503 and int(e.response.headers["retry-after"]) >= 1
        assert e.body["type"] == "server_error" and e.body["code"] == "server_busy"
        assert "2 sequences are waiting" in e.body["message"]
