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

from serve_support import build_tiny_model, running_server  # noqa: E402

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


@pytest.fixture(scope="module")
def tiny_url(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A server over a tiny random Llama (96-token context, a chat template)."""
    from blackbox.backends.local import LocalBackend
    from blackbox.serve import create_app

    model = build_tiny_model(tmp_path_factory.mktemp("protocol") / "model")
    backend = LocalBackend(model=str(model), dtype="float32", embed_model="mean")
    with running_server(create_app(backend)) as url:
        yield url


@pytest.fixture(scope="module")
def tiny_client(tiny_url: str) -> Any:
    return openai.OpenAI(base_url=tiny_url, api_key="unused", max_retries=0, timeout=60)


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
    ("/v1/completions", {"prompt": "x", "logit_bias": {"5": "1"}}, "logit_bias"),
    ("/v1/chat/completions", {"messages": CHAT, "logprobs": 1}, "logprobs"),
    ("/v1/chat/completions", {"messages": CHAT, "top_logprobs": "2"}, "top_logprobs"),
    ("/v1/chat/completions", {"messages": CHAT, "max_completion_tokens": "2"},
     "max_completion_tokens"),
    ("/v1/embeddings", {"input": "x", "dimensions": "16"}, "dimensions"),
    ("/tokenize", {"prompt": "x", "add_special_tokens": "false"}, "add_special_tokens"),
]


def _raw_post(url: str, path: str, body: Any) -> Any:
    """POST a JSON body (bytes: sent as they are) with httpx, which sends anything."""
    import httpx2

    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return httpx2.post(url.removesuffix("/v1") + path, content=content, timeout=30,
                       headers={"Content-Type": "application/json"})


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


# ---- readable 400s ------------------------------------------------------------------------

PROMPT_RULE = ("must be a string or a list of 1 to 2048 strings (token-id prompts are not "
               "supported)")
CONTENT_RULE = ('must be a string, a list of at most 256 text parts {"type": "text", "text": '
                '...}, or null (images and audio are not supported)')
ROLE_RULE = 'must be one of "system", "developer", "user", "assistant", "tool"'
# (route, body, param, the whole message): one sentence naming the field and what it may be
READABLE = [
    ("/v1/completions", {"prompt": 5}, "prompt", f"prompt: {PROMPT_RULE}, got 5"),
    ("/v1/completions", {"prompt": [1, 2]}, "prompt", f"prompt: {PROMPT_RULE}, got [1, 2]"),
    ("/v1/completions", {}, "prompt", f"prompt: required, {PROMPT_RULE}"),
    ("/v1/completions", {"prompt": "x", "max_tokens": "2"}, "max_tokens",
     'max_tokens: must be an integer >= 0, or null, got "2"'),
    ("/v1/completions", {"prompt": "x", "max_tokens": "2", "stream": "yes"}, "max_tokens",
     'max_tokens: must be an integer >= 0, or null, got "2" (and 1 more bad field)'),
    ("/v1/completions", {"prompt": "x", "temperature": 3}, "temperature",
     "temperature: must be a number between 0 and 2, got 3"),
    ("/v1/completions", {"prompt": "x", "logprobs": 99}, "logprobs",
     "logprobs: must be an integer between 0 and 20, or null, got 99"),
    ("/v1/completions", {"prompt": ["ok", "\ud800"]}, "prompt.1",
     "prompt.1: string is not valid Unicode (lone surrogate)"),
    ("/v1/completions", {"prompt": "x", "logit_bias": {"abc": 1}}, "logit_bias",
     "logit_bias: keys must be token ids (strings of digits, at most 9), got 'abc'"),
    ("/v1/completions", {"prompt": "x", "adapter": 5}, "adapter",
     'adapter: must be an adapter name, or a mixture {"adapters": [names], "alpha": '
     '[numbers in [0, 1]], "beta": [numbers]}, or null, got 5'),
    ("/v1/chat/completions", {"messages": [{"role": "wizard", "content": "x"}]},
     "messages.0.role", f'messages.0.role: {ROLE_RULE}, got "wizard"'),
    ("/v1/chat/completions", {"messages": [{"content": "x"}]}, "messages.0.role",
     f"messages.0.role: required, {ROLE_RULE}"),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "x"}}]}]}, "messages.0.content",
     f'messages.0.content: {CONTENT_RULE}, got [{{"type": "image_url", "image_url": '
     '{"url": "x"}}]'),
    ("/v1/embeddings", {"input": "x", "encoding_format": "int8"}, "encoding_format",
     'encoding_format: must be "float" or "base64", got "int8"'),
    ("/v1/embeddings", {"input": ["a" * 100]}, None, None),  # valid: the control
]


@pytest.mark.parametrize("path,body,param,message", READABLE)
def test_validation_errors_are_one_readable_sentence(fake_url: str, path: str, body: Any,
                                                     param: str | None,
                                                     message: str | None) -> None:
    r = _raw_post(fake_url, path, body)
    if message is None:
        assert r.status_code == 200, r.text
        return
    assert r.status_code == 400, r.text
    assert r.json() == {"error": {"message": message, "type": "invalid_request_error",
                                  "param": param, "code": "invalid_value"}}


def test_a_body_that_is_no_object_says_so(fake_url: str) -> None:
    r = _raw_post(fake_url, "/v1/completions", ["not", "an", "object"])
    assert r.status_code == 400
    assert r.json()["error"]["message"] == ('the request body must be a JSON object, got '
                                            '["not", "an", "object"]')


def test_long_bad_values_are_cut_short(fake_url: str) -> None:
    r = _raw_post(fake_url, "/v1/completions", {"prompt": [7] * 1000})
    message = r.json()["error"]["message"]
    assert r.status_code == 400 and message.startswith(f"prompt: {PROMPT_RULE}, got [7, 7")
    assert message.endswith("...") and len(message) < 250


def test_every_request_field_has_a_rule() -> None:
    # a field without one would fall back to pydantic's own words
    from blackbox.serve import schemas

    models = [m for m in vars(schemas).values()
              if isinstance(m, type) and issubclass(m, schemas.Body) and m.__doc__
              and m.__doc__.lstrip().startswith(("``POST", "bbx extension"))]
    assert len(models) == 9
    for model in models:
        allowed = model.allowed()
        missing = [f for f in model.model_fields if f not in allowed]
        assert not missing, (model.__name__, missing)
    chat = schemas.ChatRequest.allowed()
    assert all(f"messages.*.{f}" in chat for f in schemas.Message.model_fields)


# ---- what bbx cannot honour is refused ------------------------------------------------------

NO_TOOLS = "not supported by bbx serve (no tool calling): leave it out or send"
TOOL = {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}
# (SDK keyword arguments of chat.completions.create, param, message)
REFUSED_CHAT = [
    # the fake backend cannot decode under a grammar (the local engine can: see below)
    ({"response_format": {"type": "json_object"}}, "response_format",
     "response_format: not supported by bbx serve (structured output is enforced while "
     "decoding, which needs the local engine: serve a local model or leave it out)"),
    ({"tools": [TOOL]}, "tools", f"tools: {NO_TOOLS} []"),
    ({"tool_choice": "auto"}, "tool_choice", f'tool_choice: {NO_TOOLS} "none"'),
    ({"tool_choice": {"type": "function", "function": {"name": "f"}}}, "tool_choice",
     f'tool_choice: {NO_TOOLS} "none"'),
    ({"functions": [TOOL["function"]]}, "functions", f"functions: {NO_TOOLS} []"),
    ({"function_call": "auto"}, "function_call", f'function_call: {NO_TOOLS} "none"'),
    ({"presence_penalty": 0.5}, "presence_penalty",
     "presence_penalty: not supported by bbx serve (no penalties): leave it out or send 0"),
    ({"frequency_penalty": -1}, "frequency_penalty",
     "frequency_penalty: not supported by bbx serve (no penalties): leave it out or send 0"),
    ({"logit_bias": {"5": 1}}, "logit_bias", "logit_bias: not supported by bbx serve (it "
     "applies on /v1/completions only, to single-token greedy completions)"),
    ({"messages": [{"role": "user", "content": "hi", "name": "ann"}]}, "messages.0.name",
     "messages.0.name: not supported by bbx serve (participant names are not passed to the "
     "chat template): leave it out"),
]


@pytest.mark.parametrize("kwargs,param,message", REFUSED_CHAT)
def test_chat_fields_bbx_cannot_honour_are_400s(fake_client: Any, kwargs: dict[str, Any],
                                                param: str, message: str) -> None:
    args = {"model": "fake-1", "messages": CHAT, "max_tokens": 2, **kwargs}
    with pytest.raises(openai.BadRequestError) as err:
        fake_client.chat.completions.create(**args)
    e = err.value
    assert e.status_code == 400
    assert e.body == {"message": message, "type": "invalid_request_error", "param": param,
                      "code": "unsupported_parameter"}


def test_the_no_op_values_of_refused_fields_are_accepted(fake_client: Any) -> None:
    res = fake_client.chat.completions.create(
        model="fake-1", messages=CHAT, max_tokens=2, response_format={"type": "text"},
        tools=[], tool_choice="none", presence_penalty=0, frequency_penalty=0.0)
    assert res.choices[0].message.content


def test_completion_fields_bbx_cannot_honour_are_400s(fake_client: Any) -> None:
    cases = [({"suffix": "the end"}, "suffix",
              "suffix: not supported by bbx serve (no insertion): leave it out or send null"),
             ({"best_of": 3}, "best_of",
              "best_of: not supported by bbx serve (best_of must equal n: leave it out)"),
             ({"presence_penalty": 1}, "presence_penalty", "presence_penalty: not supported "
              "by bbx serve (no penalties): leave it out or send 0")]
    for kwargs, param, message in cases:
        with pytest.raises(openai.BadRequestError) as err:
            fake_client.completions.create(model="fake-1", prompt="x", max_tokens=2, **kwargs)
        assert err.value.status_code == 400
        assert err.value.body == {"message": message, "type": "invalid_request_error",
                                  "param": param, "code": "unsupported_parameter"}


def test_embedding_dimensions_other_than_the_models_are_400s(fake_client: Any) -> None:
    assert len(fake_client.embeddings.create(model="fake-1", input="x", dimensions=16)
               .data[0].embedding) == 16
    with pytest.raises(openai.BadRequestError) as err:
        fake_client.embeddings.create(model="fake-1", input="x", dimensions=8)
    assert err.value.body == {
        "message": "dimensions: not supported by bbx serve (this model's embeddings have 16 "
                   "dimensions, and they cannot be shortened)",
        "type": "invalid_request_error", "param": "dimensions", "code": "unsupported_parameter"}


def test_n_and_include_usage_are_honoured(fake_client: Any) -> None:
    res = fake_client.chat.completions.create(model="fake-1", messages=CHAT, max_tokens=2,
                                              n=3, temperature=1.0, seed=1)
    assert [c.index for c in res.choices] == [0, 1, 2]
    chunks = list(fake_client.chat.completions.create(
        model="fake-1", messages=CHAT, max_tokens=2, stream=True,
        stream_options={"include_usage": True}))
    assert chunks[-1].choices == [] and chunks[-1].usage.total_tokens > 0
    assert all(c.usage is None for c in chunks[:-1])
    chunks = list(fake_client.completions.create(
        model="fake-1", prompt="x", max_tokens=2, stream=True,
        stream_options={"include_usage": True}))
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens > 0
    plain = list(fake_client.chat.completions.create(model="fake-1", messages=CHAT,
                                                     max_tokens=2, stream=True))
    assert plain[-1].choices and plain[-1].usage is None  # without include_usage: no usage


def test_stop_is_honoured_on_single_token_completions(tiny_url: str,
                                                     tiny_client: Any) -> None:
    # the one-token greedy path (logprobs, logit_bias) used to ignore stop
    model_id = tiny_client.models.list().data[0].id
    tok = _raw_post(tiny_url, "/tokenize", {"prompt": " positive",
                                            "add_special_tokens": False}).json()["tokens"][0]
    args = {"model": model_id, "prompt": "the movie was", "max_tokens": 1, "temperature": 0,
            "logprobs": 1, "logit_bias": {str(tok): 100}}
    whole = tiny_client.completions.create(**args).choices[0]
    assert whole.finish_reason == "length" and len(whole.text) >= 2
    cut = tiny_client.completions.create(**args, stop=[whole.text[1:]]).choices[0]
    assert cut.text == whole.text[:1] and cut.finish_reason == "stop"


# ---- the context --------------------------------------------------------------------------

CTX = 96  # the tiny model's context


def _tokens(url: str, text: str) -> int:
    return int(_raw_post(url, "/tokenize", {"prompt": text}).json()["count"])


def _context_error(err: Any, param: str, message: str) -> None:
    e = err.value
    assert e.status_code == 400
    assert e.body == {"message": f"This model's maximum context length is {CTX} tokens. "
                      f"However, {message}", "type": "invalid_request_error", "param": param,
                      "code": "context_length_exceeded"}


def test_a_prompt_that_leaves_no_room_for_max_tokens_is_a_400(tiny_url: str,
                                                              tiny_client: Any) -> None:
    model_id = tiny_client.models.list().data[0].id
    prompt = "good " * 40
    p = _tokens(tiny_url, prompt)
    assert 16 < p < CTX - 16
    fits = tiny_client.completions.create(model=model_id, prompt=prompt, temperature=0,
                                          max_tokens=CTX - p)
    assert fits.usage.prompt_tokens == p
    with pytest.raises(openai.BadRequestError) as err:  # it used to be cut short, a 200
        tiny_client.completions.create(model=model_id, prompt=prompt, temperature=0,
                                       max_tokens=CTX - p + 1)
    _context_error(err, "prompt", f"you requested {CTX + 1} tokens ({p} in the prompt, "
                   f"{CTX - p + 1} in the completion). Please reduce the length of the prompt "
                   "or the completion.")
    long = "good " * 90  # fills the context with max_tokens' default 16 left over
    n = _tokens(tiny_url, long)
    assert CTX - 16 < n <= CTX
    with pytest.raises(openai.BadRequestError) as err:  # a 200 cut short, empty at n = 96
        tiny_client.completions.create(model=model_id, prompt=["x", long], temperature=0)
    _context_error(err, "prompt", f"you requested {n + 16} tokens ({n} in the longest prompt "
                   "(prompt 1), 16 in the completion). Please reduce the length of the longest "
                   "prompt (prompt 1) or the completion.")
    # scoring (max_tokens 0) needs no room after the prompt
    scored = tiny_client.completions.create(model=model_id, prompt=long, max_tokens=0,
                                            echo=True, logprobs=0)
    assert scored.usage.prompt_tokens == n


def test_chat_that_leaves_no_room_for_the_completion_is_a_400(tiny_url: str,
                                                             tiny_client: Any) -> None:
    model_id = tiny_client.models.list().data[0].id
    messages = [{"role": "user", "content": "good " * 40}]
    p = tiny_client.chat.completions.create(model=model_id, messages=messages, max_tokens=1,
                                            temperature=0).usage.prompt_tokens
    ok = tiny_client.chat.completions.create(model=model_id, messages=messages,
                                             max_completion_tokens=CTX - p, temperature=0)
    assert ok.usage.prompt_tokens == p
    with pytest.raises(openai.BadRequestError) as err:
        tiny_client.chat.completions.create(model=model_id, messages=messages,
                                            max_tokens=CTX - p + 1, temperature=0)
    _context_error(err, "messages", f"you requested {CTX + 1} tokens ({p} in the messages, "
                   f"{CTX - p + 1} in the completion). Please reduce the length of the "
                   "messages or the completion.")
    # no max_tokens: the messages must leave room for one token at least
    content = "good " * 90
    n = _tokens(tiny_url, f"user: {content}\nassistant:")  # the tiny model's chat template
    assert n >= CTX
    with pytest.raises(openai.BadRequestError) as err:
        tiny_client.chat.completions.create(model=model_id, temperature=0,
                                            messages=[{"role": "user", "content": content}])
    _context_error(err, "messages", f"your messages resulted in {n} tokens, which leaves no "
                   "room for a completion. Please reduce the length of the messages.")


def test_a_body_sent_as_text_is_told_to_send_json(fake_url: str) -> None:
    import httpx2

    r = httpx2.post(fake_url.removesuffix("/v1") + "/v1/completions", content=b'{"prompt": 1}',
                    headers={"Content-Type": "text/plain"}, timeout=30)
    assert r.status_code == 400
    assert r.json()["error"]["message"] == ("the request body must be a JSON object sent with "
                                            "Content-Type: application/json")


def test_without_the_key_a_body_is_refused_before_it_is_read() -> None:
    import httpx2

    from blackbox.serve import create_app

    app = create_app(FakeBackend(), api_key="k-1", max_body_bytes=1024)
    body = json.dumps({"input": ["a" * 4096]}).encode()
    with running_server(app) as url, httpx2.Client(timeout=30) as c:
        r = c.post(url + "/embeddings", content=_chunks(body, 512))
        assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
        r = c.post(url + "/embeddings", content=_chunks(body, 512),
                   headers={"Authorization": "Bearer k-1"})
        assert r.status_code == 413 and r.json()["error"]["code"] == "body_too_large"


# ---- structured output ----------------------------------------------------------------------

FORMS = ('response_format: must be {"type": "text"}, {"type": "json_object"}, {"type": '
         '"json_schema", "json_schema": {"name": ..., "schema": {...}}}, or null, got ')
LABEL_SCHEMA = {"type": "object", "properties": {"label": {"enum": ["positive", "negative"]}},
                "required": ["label"], "additionalProperties": False}


@pytest.mark.parametrize("fmt,message", [
    ({"type": "xml"}, FORMS + '{"type": "xml"}'),
    ({"type": "json_schema"}, FORMS + '{"type": "json_schema"}'),
    ({"type": "json_schema", "json_schema": {"schema": {}}},
     FORMS + '{"type": "json_schema", "json_schema": {"schema": {}}}'),
])
def test_a_malformed_response_format_is_a_400_naming_the_forms(fake_client: Any,
                                                              fmt: Any, message: str) -> None:
    with pytest.raises(openai.BadRequestError) as err:
        fake_client.chat.completions.create(model="fake-1", messages=CHAT, max_tokens=2,
                                            response_format=fmt)
    assert err.value.body["message"] == message
    assert err.value.body["param"] == "response_format"


def test_json_schema_output_parses_and_matches_even_from_a_random_model(tiny_client: Any,
                                                                        ) -> None:
    # a random 2-layer model never writes JSON by itself: every valid document here is the
    # grammar's doing
    model_id = tiny_client.models.list().data[0].id
    fmt = {"type": "json_schema", "json_schema": {"name": "label", "schema": LABEL_SCHEMA}}
    for seed, temperature in [(0, 0.0), (1, 1.0), (2, 1.0)]:
        res = tiny_client.chat.completions.create(
            model=model_id, messages=CHAT, max_tokens=70, temperature=temperature,
            seed=seed, response_format=fmt)
        choice = res.choices[0]
        assert choice.finish_reason == "stop", choice.message.content
        doc = json.loads(choice.message.content)
        assert set(doc) == {"label"}
        assert doc["label"] in ("positive", "negative")


def test_json_object_output_streams_and_the_pieces_join_to_an_object(tiny_client: Any) -> None:
    model_id = tiny_client.models.list().data[0].id
    args = {"model": model_id, "messages": CHAT, "max_tokens": 40, "temperature": 0,
            "response_format": {"type": "json_object"}}
    whole = tiny_client.chat.completions.create(**args).choices[0].message.content
    pieces = [c.choices[0].delta.content or "" for c in
              tiny_client.chat.completions.create(**args, stream=True) if c.choices]
    assert "".join(pieces) == whole
    assert whole.lstrip().startswith("{")
    if tiny_client.chat.completions.create(**args).choices[0].finish_reason == "stop":
        assert isinstance(json.loads(whole), dict)
