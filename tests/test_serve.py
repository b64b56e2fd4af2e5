"""``bbx serve`` through the real openai SDK: OpenAI routes, bbx extensions, adapters and
mixtures, auth, every bad input, and dynamic batching. The server runs in-process (uvicorn in
a thread on a free loopback port) over a tiny random Llama and a tiny PEFT zoo."""

from __future__ import annotations

import base64
import json
import logging
import struct
import threading
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
openai = pytest.importorskip("openai")
pytest.importorskip("fastapi")

from serve_support import PROMPTS, build_tiny_model, build_zoo, running_server  # noqa: E402

WORDS = [" good", " bad", " positive"]
MIX = {"adapters": ["sst2", "trec", "news"], "alpha": [0.5, 1.0, 0.3], "beta": [0.8, -0.5, 1.2]}


def flat(rows):
    return [x for r in rows for x in r]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("serve")
    model = build_tiny_model(root / "model")
    return model, build_zoo(model, root / "zoo")


@pytest.fixture(scope="module")
def local(tiny):
    from blackbox.backends.local import LocalBackend

    b = LocalBackend(model=str(tiny[0]), dtype="float32", embed_model="mean",
                     adapters=str(tiny[1]), batch_size=8)
    yield b
    b.close()


@pytest.fixture(scope="module")
def server(local):
    """(base_url, app) of a server over its own backend (the reference `local` stays free)."""
    from blackbox.backends.local import LocalBackend
    from blackbox.serve import create_app

    backend = LocalBackend(model=local.model, dtype="float32", embed_model="mean",
                           adapters=local.adapters, batch_size=8)
    app = create_app(backend, max_wait_ms=20)
    with running_server(app) as url:
        yield url, app


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server[0], api_key="unused", max_retries=0, timeout=30)


@pytest.fixture(scope="module")
def model_id(local) -> str:
    return local.source.name


def _raw(server, method: str, path: str, **kw):
    import httpx2

    root = server[0].removesuffix("/v1")
    return httpx2.request(method, root + path, timeout=30, **kw)


# ---- OpenAI routes ----------------------------------------------------------------------

def test_models_lists_the_model_and_its_adapters(client, model_id) -> None:
    models = {m.id: m for m in client.models.list().data}
    assert set(models) == {model_id, "sst2", "trec", "news"}
    assert models["sst2"].parent == model_id  # type: ignore[attr-defined]
    assert client.models.retrieve("news").id == "news"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("gpt-9")


def test_echo_scoring_matches_a_naive_forward(client, local, model_id) -> None:
    engine = local.engine
    for prompt in PROMPTS[:4]:
        res = client.completions.create(model=model_id, prompt=prompt, max_tokens=0, echo=True,
                                        logprobs=3, temperature=0)
        choice = res.choices[0]
        assert choice.text == prompt
        lp = choice.logprobs
        ids = engine._prompt_ids([prompt])[0]
        assert len(lp.tokens) == len(ids) and lp.token_logprobs[0] is None
        with torch.inference_mode():
            ref = torch.log_softmax(engine.model(torch.tensor([ids])).logits[0].float(), -1)
        want = [float(ref[j - 1, ids[j]]) for j in range(1, len(ids))]
        assert lp.token_logprobs[1:] == pytest.approx(want, abs=1e-4)
        assert all(len(t) <= 3 for t in lp.top_logprobs[1:])
        assert lp.text_offset == sorted(lp.text_offset)
        assert res.usage.prompt_tokens == len(ids)


def test_greedy_completions_match_the_backend(client, local, model_id) -> None:
    res = client.completions.create(model=model_id, prompt=PROMPTS[:3], max_tokens=5,
                                    temperature=0, n=2)
    assert [c.index for c in res.choices] == list(range(6))
    want = local.generate(PROMPTS[:3], {"max_tokens": 5})
    assert [c.text for c in res.choices] == [w for w in want for _ in range(2)]
    # with an adapter, named by `model` (vLLM style) or by the bbx `adapter` field
    by_model = client.completions.create(model="sst2", prompt=PROMPTS[0], max_tokens=5,
                                         temperature=0)
    by_field = client.completions.create(model=model_id, prompt=PROMPTS[0], max_tokens=5,
                                         temperature=0, extra_body={"adapter": "sst2"})
    want = local.generate(PROMPTS[:1], {"max_tokens": 5}, adapter="sst2")[0]
    assert by_model.choices[0].text == by_field.choices[0].text == want
    sampled = client.completions.create(model=model_id, prompt=PROMPTS[0], max_tokens=4,
                                        temperature=1.0, seed=7, n=2)
    again = client.completions.create(model=model_id, prompt=PROMPTS[0], max_tokens=4,
                                      temperature=1.0, seed=7, n=2)
    assert [c.text for c in sampled.choices] == [c.text for c in again.choices]


def test_one_token_top_logprobs_and_logit_bias(client, local, model_id) -> None:
    prompt = PROMPTS[1]
    res = client.completions.create(model=model_id, prompt=prompt, max_tokens=1, temperature=0,
                                    logprobs=5)
    lp = res.choices[0].logprobs
    top = lp.top_logprobs[0]
    assert len(top) <= 5 and lp.token_logprobs[0] == pytest.approx(max(top.values()))
    tok = local.engine.tokenizer(" positive", add_special_tokens=False).input_ids[0]
    exact = local.label_logprobs([prompt], [" positive"])[0][0]
    biased = client.completions.create(model=model_id, prompt=prompt, max_tokens=1,
                                       temperature=0, logprobs=5, logit_bias={str(tok): 50})
    choice = biased.choices[0]
    assert choice.text == " positive"  # the bias decides the greedy token...
    assert choice.logprobs.token_logprobs[0] > exact  # ...and the reported log-prob


def test_chat_uses_the_template_and_returns_logprobs(client, local, model_id) -> None:
    messages = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello"}]
    res = client.chat.completions.create(model=model_id, messages=messages, max_tokens=4,
                                         temperature=0, logprobs=True, top_logprobs=2)
    prompt = "system: be brief\nuser: hello\nassistant:"
    want = local.generate([prompt], {"max_tokens": 4})[0]
    choice = res.choices[0]
    assert choice.message.role == "assistant" and choice.message.content == want
    assert all(len(t.top_logprobs) == 2 for t in choice.logprobs.content)
    assert res.usage.prompt_tokens == local.count_tokens([prompt])[0]
    chunks = list(client.chat.completions.create(model=model_id, messages=messages,
                                                 max_tokens=4, temperature=0, stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == want


def test_embeddings_float_and_base64(client, local, model_id) -> None:
    texts = ["the movie was good", "bad"]
    want = local.embed(texts)
    as_float = client.embeddings.create(model=model_id, input=texts, encoding_format="float")
    assert flat([d.embedding for d in as_float.data]) == pytest.approx(flat(want), abs=1e-5)
    raw = client.embeddings.with_raw_response.create(model=model_id, input=texts,
                                                     encoding_format="base64")
    data = json.loads(raw.text)["data"]
    vec = struct.unpack(f"<{len(want[0])}f", base64.b64decode(data[0]["embedding"]))
    assert list(vec) == pytest.approx(want[0], abs=1e-5)


# ---- bbx extensions ---------------------------------------------------------------------

def test_label_logprobs_score_hidden_extensions_equal_the_local_backend(client, local) -> None:
    for adapter in (None, "trec", MIX):
        body = {"prompts": PROMPTS, "label_words": WORDS + [" wonderfulness"]}
        if adapter is not None:
            body["adapter"] = adapter
        res = client.post("/label_logprobs", body=body, cast_to=object)
        got = [d["logprobs"] for d in res["data"]]
        want = local.label_logprobs(PROMPTS, WORDS + [" wonderfulness"], adapter=adapter)
        assert flat(got) == pytest.approx(flat(want), abs=1e-4)
    res = client.post("/score", body={"prompts": PROMPTS[:3], "continuations": [" good bad"] * 3,
                                      "adapter": MIX}, cast_to=object)
    want = local.score(PROMPTS[:3], [" good bad"] * 3, adapter=MIX)
    assert flat([d["token_logprobs"] for d in res["data"]]) == pytest.approx(flat(want),
                                                                            abs=1e-4)
    res = client.post("/hidden_states", body={"input": PROMPTS[:3], "adapter": "news"},
                      cast_to=object)
    want = local.hidden(PROMPTS[:3], adapter="news")
    assert flat([d["hidden"] for d in res["data"]]) == pytest.approx(flat(want), abs=1e-4)
    info = client.get("/bbx", cast_to=object)
    assert info["adapters"] and "label_logprobs" in info["extensions"]


def test_adapters_list_unload_and_load(client, server) -> None:
    listed = client.get("/adapters", cast_to=object)["data"]
    assert [a["name"] for a in listed] == ["news", "sst2", "trec"]
    body = {"prompts": ["x"], "label_words": [" good"], "adapter": "news"}
    before = client.post("/label_logprobs", body=body, cast_to=object)
    assert client.delete("/adapters/news", cast_to=object)["deleted"]
    with pytest.raises(openai.NotFoundError, match="unknown adapter"):
        client.post("/label_logprobs", body=body, cast_to=object)
    with pytest.raises(openai.PermissionDeniedError):  # paths need --allow-adapter-paths
        client.post("/adapters", body={"name": "news", "path": "/etc"}, cast_to=object)
    loaded = client.post("/adapters", body={"name": "news"}, cast_to=object)
    assert loaded["loaded"] and loaded["r"] == 2
    after = client.post("/label_logprobs", body=body, cast_to=object)
    assert after["data"] == before["data"]


def test_concurrent_requests_with_different_mixtures_share_batches(client, local,
                                                                   server) -> None:
    adapters = [None, "sst2", MIX, "trec", {"adapters": ["news"], "beta": [-1.0]}] * 4
    out: dict[int, list[float]] = {}
    stats = server[1].fastapi.state.service.batcher.stats
    calls_before, jobs_before = stats.calls, stats.jobs

    def worker(i: int) -> None:
        body = {"prompts": [PROMPTS[i % len(PROMPTS)]], "label_words": WORDS}
        if adapters[i] is not None:
            body["adapter"] = adapters[i]
        out[i] = client.post("/label_logprobs", body=body, cast_to=object)["data"][0]["logprobs"]

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(len(adapters))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i, a in enumerate(adapters):
        want = local.label_logprobs([PROMPTS[i % len(PROMPTS)]], WORDS, adapter=a)[0]
        assert out[i] == pytest.approx(want, abs=1e-4)
    jobs, calls = stats.jobs - jobs_before, stats.calls - calls_before
    assert jobs == len(adapters) and calls < jobs  # requests were gathered into shared calls


# ---- auth ---------------------------------------------------------------------------------

def test_api_key_is_required_when_set(local) -> None:
    from blackbox.backends.fake import FakeBackend
    from blackbox.serve import create_app

    app = create_app(FakeBackend(adapter_bias={"a1": {" good": 1.0}}), api_key="s3cret")
    with running_server(app) as url:
        import httpx2

        assert httpx2.get(url.removesuffix("/v1") + "/health").status_code == 200
        for key in ("wrong", ""):
            c = openai.OpenAI(base_url=url, api_key=key or "x", max_retries=0)
            with pytest.raises(openai.AuthenticationError):
                c.models.list()
        r = httpx2.get(url + "/models")
        assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
        good = openai.OpenAI(base_url=url, api_key="s3cret", max_retries=0)
        assert good.models.list().data[0].id == "fake-1"
        res = good.post("/label_logprobs", body={"prompts": ["great"], "label_words": [" good"],
                                                 "adapter": "a1"}, cast_to=object)
        assert len(res["data"]) == 1


# ---- bad input: 4xx envelopes, and the server keeps serving ---------------------------

BAD_JSON = [
    ("/v1/completions", b'{"prompt": "x", "max_tokens": ', 400),
    ("/v1/completions", b'["not", "an", "object"]', 400),
    ("/v1/completions", b'{"prompt": 5}', 400),
    ("/v1/completions", b'{"prompt": "x", "temperature": NaN}', 400),
    ("/v1/completions", b'{"prompt": "x", "max_tokens": -1}', 400),
    ("/v1/completions", b'{"prompt": "x", "max_tokens": 100000}', 400),
    ("/v1/completions", b'{"prompt": "x", "logprobs": 99}', 400),
    ("/v1/completions", b'{"prompt": "\\ud800"}', 400),
    ("/v1/completions", b'{"prompt": "x", "logit_bias": {"abc": 1}}', 400),
    ("/v1/completions", b'{"prompt": "x", "max_tokens": 3, "logit_bias": {"5": 1}}', 400),
    ("/v1/completions", b'{"prompt": "x", "model": "nope"}', 404),
    ("/v1/completions", b'{"prompt": "x", "adapter": "nope"}', 404),
    ("/v1/completions", b'{"prompt": "' + b"good " * 200 + b'", "max_tokens": 1}', 400),
    ("/v1/chat/completions", b'{"messages": []}', 400),
    ("/v1/chat/completions", b'{"messages": [{"role": "wizard", "content": "x"}]}', 400),
    ("/v1/embeddings", b'{"input": []}', 400),
    ("/v1/label_logprobs", b'{"prompts": ["x"], "label_words": [""]}', 400),
    ("/v1/label_logprobs", b'{"prompts": ["x"], "label_words": [" a"], "adapter": '
     b'{"adapters": ["sst2"], "alpha": [NaN]}}', 400),
    ("/v1/label_logprobs", b'{"prompts": ["x"], "label_words": [" a"], "adapter": '
     b'{"adapters": ["sst2"], "alpha": [1.5]}}', 400),
    ("/v1/label_logprobs", b'{"prompts": ["x"], "label_words": [" a"], "adapter": '
     b'{"adapters": ["sst2", "trec"], "beta": [1.0]}}', 400),
    ("/v1/label_logprobs", b'{"prompts": ["x"], "label_words": [" a"], "adapter": '
     b'{"adapters": ["sst2"], "gamma": [1.0]}}', 400),
    ("/v1/label_logprobs", b'{"prompts": ["x"], "label_words": [" a"], "adapter": '
     b'{"adapters": ["ghost"]}}', 404),
    ("/v1/label_logprobs", b'{"prompts": ["' + b"good " * 200 + b'"], "label_words": [" a"]}',
     400),
    ("/v1/score", b'{"prompts": ["x", "y"], "continuations": [" a"]}', 400),
    ("/v1/hidden_states", b'{"input": "x", "position": "first"}', 400),
    ("/v1/adapters", b'{"name": "../../etc"}', 400),
    ("/v1/nope", b"{}", 404),
]


@pytest.mark.parametrize("path,body,status", BAD_JSON)
def test_bad_input_gets_a_4xx_envelope(server, path: str, body: bytes, status: int) -> None:
    r = _raw(server, "POST", path, content=body, headers={"content-type": "application/json"})
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["message"]
    assert _raw(server, "GET", "/health").json()["status"] == "ok"


def test_oversized_bodies_wrong_methods_and_auth_free_health(server) -> None:
    big = b'{"prompt": "' + b"a" * (9 * 1024 * 1024) + b'"}'
    r = _raw(server, "POST", "/v1/completions", content=big,
             headers={"content-type": "application/json"})
    assert r.status_code == 413 and r.json()["error"]["code"] == "body_too_large"
    r = _raw(server, "GET", "/v1/completions")
    assert r.status_code == 405 and "error" in r.json()
    r = _raw(server, "DELETE", "/v1/adapters/ghost")
    assert r.status_code == 404 and r.json()["error"]["code"] == "adapter_not_found"
    assert _raw(server, "GET", "/health").status_code == 200


def test_unknown_fields_are_ignored_with_a_warning(client, model_id, caplog) -> None:
    with caplog.at_level(logging.WARNING, logger="blackbox.serve"):
        res = client.completions.create(model=model_id, prompt="x", max_tokens=1,
                                        temperature=0, extra_body={"repetition_penalty": 1.1})
    assert res.choices[0].text is not None
    assert any("repetition_penalty" in r.getMessage() for r in caplog.records)


def test_openapi_schema_documents_the_extensions(server) -> None:
    schema = _raw(server, "GET", "/openapi.json").json()
    for path in ("/v1/label_logprobs", "/v1/score", "/v1/hidden_states", "/v1/adapters",
                 "/v1/completions", "/v1/chat/completions", "/v1/embeddings", "/v1/bbx"):
        assert path in schema["paths"]
    assert "adapter" in json.dumps(schema["components"]["schemas"]["CompletionRequest"])


def test_cli_serve_bad_input_is_one_line(tmp_path: Path) -> None:
    from conftest import bbx

    for args in (["--adapters", str(tmp_path / "nope")], ["--model", str(tmp_path / "nope")],
                 ["--port", "70000"]):
        res = bbx("serve", *args)
        assert res.returncode == 2, res.stderr
        assert "Traceback" not in res.stderr and res.stderr.strip()
