"""The remote backend (openai SDK) against ``bbx serve``: the same answers as the local
backend, capability detection and fallbacks, fault injection (429/500/timeouts) with one
ledger row per logical call, a real uvicorn subprocess with auth, and recipe configs."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from blackbox.errors import BbxError

torch = pytest.importorskip("torch")
openai = pytest.importorskip("openai")
pytest.importorskip("fastapi")

from serve_support import PROMPTS, build_tiny_model, build_zoo, free_port, running_server  # noqa: E402, I001

WORDS = [" good", " bad", " positive", " the"]
MIX = {"adapters": ["sst2", "news"], "alpha": [0.4, 1.0], "beta": [1.1, -0.6]}


def flat(rows):
    return [x for r in rows for x in r]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("remote")
    model = build_tiny_model(root / "model")
    return model, build_zoo(model, root / "zoo")


def _local(tiny):
    from blackbox.backends.local import LocalBackend

    return LocalBackend(model=str(tiny[0]), dtype="float32", embed_model="mean",
                        adapters=str(tiny[1]), batch_size=8)


@pytest.fixture(scope="module")
def local(tiny):
    b = _local(tiny)
    yield b
    b.close()


@pytest.fixture(scope="module")
def url(tiny):
    from blackbox.serve import create_app

    with running_server(create_app(_local(tiny), max_wait_ms=10)) as base:
        yield base


def _remote(base: str, **kw):
    from blackbox.backends.remote import RemoteBackend

    return RemoteBackend(base_url=base, api_key_env="BBX_TEST_NO_SUCH_KEY", **kw)


def test_remote_equals_local_through_the_extensions(url, local) -> None:
    r = _remote(url)
    caps = r.capabilities
    assert caps.label_logprobs == "exact" and caps.hidden == "native" and caps.adapters
    assert r.fingerprint.startswith(f"remote:{url}:") and local.fingerprint in r.fingerprint
    for adapter in (None, "trec", MIX):
        got = r.label_logprobs(PROMPTS, WORDS, adapter=adapter)
        want = local.label_logprobs(PROMPTS, WORDS, adapter=adapter)
        assert flat(got) == pytest.approx(flat(want), abs=1e-5)
    conts = [" good bad"] * 3
    assert flat(r.score(PROMPTS[:3], conts, MIX)) == pytest.approx(
        flat(local.score(PROMPTS[:3], conts, MIX)), abs=1e-5)
    assert flat(r.hidden(PROMPTS[:3], "mask", "sst2")) == pytest.approx(
        flat(local.hidden(PROMPTS[:3], "mask", "sst2")), abs=1e-5)
    assert r.generate(PROMPTS[:2], {"max_tokens": 4}, "news") == local.generate(
        PROMPTS[:2], {"max_tokens": 4}, "news")
    assert flat(r.embed(["a b", "c"])) == pytest.approx(flat(local.embed(["a b", "c"])),
                                                       abs=1e-5)
    with pytest.raises(BbxError, match="unknown adapter"):
        r.label_logprobs(["x"], WORDS, adapter="ghost")
    r.close()


def test_echo_mode_and_topk_fallback_with_logit_bias(url, local) -> None:
    exact = local.label_logprobs(PROMPTS, WORDS)
    echo = _remote(url, label_logprobs="echo")
    assert flat(echo.label_logprobs(PROMPTS, WORDS)) == pytest.approx(flat(exact), abs=1e-4)
    # top-k with logit_bias: words outside the top-5 are recovered exactly from the bias
    topk = _remote(url, label_logprobs="topk", top_logprobs=5)
    assert topk.capabilities.label_logprobs == "topk" and topk.capabilities.topk == 5
    assert flat(topk.label_logprobs(PROMPTS, WORDS)) == pytest.approx(flat(exact), abs=2e-3)
    # without the bias, missing words get the floor: an upper bound on their true value
    floor = _remote(url, label_logprobs="topk", top_logprobs=3, logit_bias=False)
    got = floor.label_logprobs(PROMPTS, WORDS)
    floored = 0
    for g_row, e_row in zip(got, exact, strict=True):
        for g, e in zip(g_row, e_row, strict=True):
            assert g >= e - 1e-4
            floored += g > e + 1e-3
    assert floored > 0
    for b in (echo, topk, floor):
        b.close()


def _plain_openai_server(app):
    """The app seen as a server without bbx extensions (as vLLM or OpenAI look)."""
    hidden = ("/v1/bbx", "/v1/label_logprobs", "/v1/score", "/v1/hidden_states")

    async def wrapped(scope, receive, send):
        if scope["type"] == "http" and scope["path"] in hidden:
            body = json.dumps({"error": {"message": "Not Found", "type": "not_found",
                                         "param": None, "code": None}}).encode()
            await send({"type": "http.response.start", "status": 404,
                        "headers": [(b"content-type", b"application/json")]})
            await send({"type": "http.response.body", "body": body})
            return
        await app(scope, receive, send)

    return wrapped


def test_capability_detection_on_a_server_without_extensions(tiny, local) -> None:
    from blackbox.serve import create_app

    app = _plain_openai_server(create_app(_local(tiny)))
    with running_server(app) as base:
        r = _remote(base, top_logprobs=20)
        caps = r.capabilities
        assert caps.label_logprobs == "topk" and caps.hidden == "embeddings"
        assert not caps.adapters
        got = r.label_logprobs(PROMPTS[:3], WORDS)
        assert flat(got) == pytest.approx(flat(local.label_logprobs(PROMPTS[:3], WORDS)),
                                          abs=2e-3)
        assert r.hidden(["a b"]) == r.embed(["a b"])  # the documented fallback
        # scores through echo=true, max_tokens=0
        assert flat(r.score(PROMPTS[:2], [" good bad"] * 2)) == pytest.approx(
            flat(local.score(PROMPTS[:2], [" good bad"] * 2)), abs=1e-4)
        with pytest.raises(BbxError, match="not a bbx server"):
            r.label_logprobs(["x"], WORDS, adapter="sst2")
        with pytest.raises(BbxError, match="no bbx extensions"):
            _ = _remote(base, label_logprobs="extension").capabilities
        r.close()


# ---- fault injection ----------------------------------------------------------------------

def _faulty(app, delay_s: float, counts: dict[str, int]):
    """Of every 20 requests, 4 (20%) are answered 429/500 at once and 1 (5%) is delayed past
    the client's timeout; a fixed schedule, so the test never depends on luck."""
    async def wrapped(scope, receive, send):
        if scope["type"] != "http" or scope["path"] == "/health":
            return await app(scope, receive, send)
        k = counts["requests"] % 20
        counts["requests"] += 1
        if k in (1, 6, 11, 16):
            counts["errors"] += 1
            status = 429 if k in (1, 11) else 500
            body = json.dumps({"error": {"message": "injected", "type": "server_error",
                                         "param": None, "code": None}}).encode()
            await send({"type": "http.response.start", "status": status,
                        "headers": [(b"content-type", b"application/json"),
                                    (b"retry-after-ms", b"10")]})
            await send({"type": "http.response.body", "body": body})
            return
        if k == 8:
            counts["delays"] += 1
            await asyncio.sleep(delay_s)
        await app(scope, receive, send)

    return wrapped


def test_faults_change_nothing_and_the_ledger_counts_each_call_once(tiny, local,
                                                                    tmp_path: Path) -> None:
    from blackbox.backends.metered import MeteredBackend
    from blackbox.serve import create_app

    prompts = [f"{p} {i}" for i in range(8) for p in PROMPTS[:5]]  # 40 logical calls
    clean = local.label_logprobs(prompts, WORDS, adapter=MIX)
    counts = {"requests": 0, "errors": 0, "delays": 0}
    app = _faulty(create_app(_local(tiny)), delay_s=1.5, counts=counts)
    with running_server(app) as base:
        remote = _remote(base, batch_size=1, timeout=1.0, max_retries=12, max_concurrency=4)
        _ = remote.capabilities  # detection may meet faults too; the SDK retries them
        metered = MeteredBackend(remote, cache_dir=tmp_path / "cache",
                                 ledger_path=tmp_path / "ledger.jsonl")
        got = metered.label_logprobs(prompts, WORDS, adapter=MIX)
        metered.close()
    assert flat(got) == pytest.approx(flat(clean), abs=1e-5)
    rows = [json.loads(line) for line in (tmp_path / "ledger.jsonl").read_text().splitlines()]
    assert len(rows) == len(prompts) and not any(r["cached"] for r in rows)
    assert counts["errors"] > 0 and counts["delays"] > 0
    assert counts["requests"] > len(prompts)  # the retries happened, inside the SDK


# ---- a real server process ----------------------------------------------------------------

def test_bbx_serve_subprocess_with_auth(tiny, local, monkeypatch) -> None:
    port = free_port()
    env = {**os.environ, "BBX_SERVER_API_KEY": "k-123"}
    cmd = [sys.executable, "-m", "blackbox.cli.main", "serve", "--model", str(tiny[0]),
           "--adapters", str(tiny[1]), "--port", str(port), "--dtype", "float32",
           "--embed-model", "mean", "--log-level", "warning"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        import httpx2

        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx2.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                    break
            except httpx2.TransportError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"bbx serve did not start: {proc.stdout.read()!r}")
            time.sleep(0.2)
        base = f"http://127.0.0.1:{port}/v1"
        monkeypatch.setenv("BBX_TEST_KEY", "k-123")
        from blackbox.backends.remote import RemoteBackend

        r = RemoteBackend(base_url=base, api_key_env="BBX_TEST_KEY")
        got = r.label_logprobs(PROMPTS, WORDS, adapter=MIX)
        assert flat(got) == pytest.approx(flat(local.label_logprobs(PROMPTS, WORDS, MIX)),
                                          abs=1e-5)
        r.close()
        # the plain OpenAI routes through the SDK, against the real process
        client = openai.OpenAI(base_url=base, api_key="k-123", max_retries=0)
        model_id = client.models.list().data[0].id
        res = client.completions.create(model=model_id, prompt=PROMPTS[0], max_tokens=0,
                                        echo=True, logprobs=2)
        assert res.choices[0].logprobs.token_logprobs[0] is None
        chat = client.chat.completions.create(model="sst2", max_tokens=3, temperature=0,
                                              messages=[{"role": "user", "content": "hi"}])
        assert chat.choices[0].message.role == "assistant"
        emb = client.embeddings.create(model=model_id, input=["a b"])
        assert len(emb.data[0].embedding) == 32
        monkeypatch.setenv("BBX_TEST_KEY", "wrong")
        with pytest.raises(BbxError, match="refused the API key"):
            _ = RemoteBackend(base_url=base, api_key_env="BBX_TEST_KEY").capabilities
    finally:
        proc.terminate()
        proc.wait(timeout=30)


# ---- recipes ----------------------------------------------------------------------------------

def test_remote_backend_config_names_the_variable_not_the_key(url, local,
                                                             monkeypatch) -> None:
    from pydantic import ValidationError

    from blackbox.api import make_backend
    from blackbox.recipes.schema import RemoteBackendConfig

    with pytest.raises(ValidationError, match="never the key"):
        RemoteBackendConfig(api_key_env="sk-abc123")
    cfg = RemoteBackendConfig(base_url=url, api_key_env="BBX_TEST_NO_SUCH_KEY", timeout=10)
    backend = make_backend(cfg)
    assert backend.name == "remote"
    assert backend.label_logprobs(["x"], WORDS)[0] == pytest.approx(
        local.label_logprobs(["x"], WORDS)[0], abs=1e-5)
    backend.close()
    from blackbox.backends.remote import RemoteBackend

    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    with pytest.raises(BbxError, match="no API key"):
        RemoteBackend(api_key_env="BBX_TEST_NO_SUCH_KEY")


def test_an_eval_recipe_runs_through_the_remote_backend(tmp_path: Path) -> None:
    from blackbox.api import run_recipe
    from blackbox.runs import ledger_counts
    from blackbox.serve import create_app

    model = build_tiny_model(tmp_path / "model", context=1024)
    from blackbox.backends.local import LocalBackend

    backend = LocalBackend(model=str(model), dtype="float32", embed_model="mean")
    recipe = {"method": "eval", "task": "sst-2", "split": "test", "limit": 12, "seed": 1,
              "output_dir": str(tmp_path / "runs"), "cache_dir": str(tmp_path / "cache"),
              "backend": {"kind": "remote", "api_key_env": "BBX_TEST_NO_SUCH_KEY"}}
    with running_server(create_app(backend)) as base:
        recipe["backend"]["base_url"] = base
        first = run_recipe(recipe, progress=False)
        again = run_recipe(recipe, progress=False)
    assert first.summary["usage"]["queries"] == 12
    assert again.summary["usage"]["queries"] == 0  # all answered from the response cache
    assert again.summary["accuracy"] == first.summary["accuracy"]
    assert ledger_counts(first.run_dir / "ledger.jsonl")["rows"] == 12
    manifest = json.loads((first.run_dir / "manifest.json").read_text())
    assert manifest["backend"]["kind"] == "remote"
    assert manifest["backend"]["capabilities"]["label_logprobs"] == "exact"
