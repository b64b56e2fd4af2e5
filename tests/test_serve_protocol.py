"""``bbx serve`` at the HTTP level, as clients see it: a 500 keeps the connection usable,
oversized bodies are 413s however they are sent, request fields are strictly typed, 400s
say in one sentence what is allowed, fields bbx cannot honour are refused, and a prompt
that leaves no room for ``max_tokens`` is a 400. Most run over the fake backend (the
protocol does not depend on the model); the context tests over a tiny random Llama."""

from __future__ import annotations

import http.client
import json
from typing import Any

import pytest

openai = pytest.importorskip("openai")
pytest.importorskip("fastapi")

from serve_support import running_server  # noqa: E402

from blackbox.backends.fake import FakeBackend  # noqa: E402

BUG = "this input trips a bug"


class BuggyBackend(FakeBackend):
    """The fake backend with a bug: embedding ``BUG`` raises a plain exception (a 500)."""

    def embed(self, texts: Any) -> list[list[float]]:
        if BUG in texts:
            raise RuntimeError("a bug in the backend")
        return super().embed(texts)


@pytest.fixture(scope="module")
def fake_url() -> Any:
    from blackbox.serve import create_app

    with running_server(create_app(BuggyBackend(), max_body_bytes=64 * 1024)) as url:
        yield url


@pytest.fixture(scope="module")
def fake_client(fake_url: str) -> Any:
    return openai.OpenAI(base_url=fake_url, api_key="unused", max_retries=0, timeout=30)


def _connection(url: str) -> http.client.HTTPConnection:
    host, port = url.removeprefix("http://").removesuffix("/v1").split(":")
    return http.client.HTTPConnection(host, int(port), timeout=30)


def _post(conn: http.client.HTTPConnection, path: str, body: Any) -> tuple[int, Any]:
    conn.request("POST", path, body=json.dumps(body),
                 headers={"Content-Type": "application/json"})
    r = conn.getresponse()
    return r.status, json.loads(r.read())


# ---- 500s ---------------------------------------------------------------------------------

def test_a_500_is_an_envelope_and_the_connection_stays_usable(fake_url: str) -> None:
    conn = _connection(fake_url)
    try:
        status, body = _post(conn, "/v1/embeddings", {"input": [BUG]})
        assert status == 500
        assert body == {"error": {"message": "internal error: RuntimeError",
                                  "type": "server_error", "param": None,
                                  "code": "internal_error"}}
        sock = conn.sock
        assert sock is not None  # no Connection: close, so the client keeps the connection
        # the next request on the same connection is answered (it used to be reset)
        status, body = _post(conn, "/v1/embeddings", {"input": ["fine"]})
        assert status == 200 and len(body["data"]) == 1
        assert conn.sock is sock
    finally:
        conn.close()


def test_a_500_through_the_sdk_then_the_next_request_succeeds(fake_client: Any) -> None:
    with pytest.raises(openai.InternalServerError) as err:
        fake_client.embeddings.create(model="fake-1", input=[BUG])
    assert err.value.status_code == 500
    assert err.value.code == "internal_error" and err.value.type == "server_error"
    res = fake_client.embeddings.create(model="fake-1", input=["fine"])
    assert len(res.data) == 1


# ---- body limits --------------------------------------------------------------------------

def _chunks(body: bytes, size: int = 8192) -> Any:
    # a generator body: httpx sends it chunked, with no Content-Length
    for i in range(0, len(body), size):
        yield body[i:i + size]


def test_an_oversized_chunked_body_is_a_413(fake_url: str) -> None:
    import httpx2

    root = fake_url.removesuffix("/v1")
    big = json.dumps({"input": ["a" * (200 * 1024)]}).encode()
    with httpx2.Client(base_url=root, timeout=30) as c:
        r = c.post("/v1/embeddings", content=_chunks(big),
                   headers={"Content-Type": "application/json"})
        assert "content-length" not in r.request.headers  # it really was chunked
        assert r.status_code == 413
        assert r.json() == {"error": {
            "message": "the request body is over this server's limit of 65536 bytes",
            "type": "invalid_request_error", "param": None, "code": "body_too_large"}}
        # a chunked body under the limit reaches the route whole
        small = json.dumps({"input": ["fine", "also fine"]}).encode()
        r = c.post("/v1/embeddings", content=_chunks(small, 7),
                   headers={"Content-Type": "application/json"})
        assert r.status_code == 200 and len(r.json()["data"]) == 2
        r = c.post("/v1/embeddings", content=big, headers={"Content-Type": "application/json"})
        assert r.status_code == 413 and r.json()["error"]["code"] == "body_too_large"


# ---- strict types -------------------------------------------------------------------------

CHAT = [{"role": "user", "content": "hi"}]
# (route, body, the field named in the 400): what pydantic used to coerce, OpenAI refuses
NOT_COERCED = [
    ("/v1/completions", {"prompt": "x", "max_tokens": "2"}, "max_tokens"),
    ("/v1/completions", {"prompt": "x", "max_tokens": 2.0}, "max_tokens"),
    ("/v1/completions", {"prompt": "x", "stream": "yes"}, "stream"),
    ("/v1/completions", {"prompt": "x", "temperature": "0.5"}, "temperature"),
    ("/v1/completions", {"prompt": "x", "top_p": True}, "top_p"),
    ("/v1/completions", {"prompt": "x", "echo": 1}, "echo"),
    ("/v1/completions", {"prompt": "x", "logprobs": True}, "logprobs"),
    ("/v1/completions", {"prompt": "x", "n": True}, "n"),
    ("/v1/completions", {"prompt": "x", "seed": "7"}, "seed"),
    ("/v1/completions", {"prompt": "x", "logit_bias": {"5": "1"}}, "logit_bias.5"),
    ("/v1/chat/completions", {"messages": CHAT, "logprobs": 1}, "logprobs"),
    ("/v1/chat/completions", {"messages": CHAT, "top_logprobs": "2"}, "top_logprobs"),
    ("/v1/chat/completions", {"messages": CHAT, "max_completion_tokens": "2"},
     "max_completion_tokens"),
    ("/v1/embeddings", {"input": "x", "dimensions": "16"}, "dimensions"),
    ("/tokenize", {"prompt": "x", "add_special_tokens": "false"}, "add_special_tokens"),
]


def _raw_post(url: str, path: str, body: Any) -> Any:
    import httpx2

    return httpx2.post(url.removesuffix("/v1") + path, json=body, timeout=30)


@pytest.mark.parametrize("path,body,param", NOT_COERCED)
def test_strings_and_booleans_are_not_coerced(fake_url: str, path: str, body: Any,
                                              param: str) -> None:
    r = _raw_post(fake_url, path, body)
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["param"] == param and err["code"] == "invalid_value"
    assert err["type"] == "invalid_request_error" and err["message"].startswith(param + ": ")


def test_integers_are_numbers(fake_url: str) -> None:
    r = _raw_post(fake_url, "/v1/completions", {"prompt": "x", "max_tokens": 2,
                                                "temperature": 0, "top_p": 1})
    assert r.status_code == 200, r.text
    from blackbox.serve.schemas import LabelLogprobsRequest

    req = LabelLogprobsRequest.model_validate({"prompts": ["x"], "label_words": [" a"],
                                               "adapter": {"adapters": ["x"], "beta": [2]}})
    assert req.adapter == {"adapters": ["x"], "alpha": [1.0], "beta": [2.0]}
