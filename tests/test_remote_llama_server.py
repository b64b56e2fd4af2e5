"""An independent server: llama.cpp's own C++ server, ``llama-server`` (the server Ollama
and LM Studio build on), serving the bundled SmolLM2 GGUF, used through the real ``openai``
SDK and bbx's remote backend.

The binary is built once by ``scripts/llama_cpp_server_build.sh`` (``make test`` runs it
first; this module runs it too, which is instant once built). The tests skip only when that
build is impossible here, with the script's reason. One server for the module: 4 slots,
4096 tokens of context (1024 a slot), errors-only logs.

What llama-server gives: no bbx extensions (label words go through next-token
``top_logprobs``); log-probs in the chat shape on ``/v1/completions`` too
(``logprobs.content[].top_logprobs[]``, :mod:`blackbox.backends.shapes`); log-probs
reported before ``logit_bias``; ``n`` honoured; a ``/tokenize`` route that reads
``content`` (not vLLM's ``prompt``); no embeddings route unless started for embeddings only.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("openai")

from remote_methods import KEY_ENV, WORDS, distill_with_workers, search_prompt_cli  # noqa: E402
from serve_support import built, free_port, process_server  # noqa: E402

from blackbox.errors import BbxError  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
MODEL = "smollm2"  # the server's alias for the GGUF (else it lists the file's path)
REVIEWS = [
    "A wonderful, moving film with superb acting.",
    "Dull, lifeless and far too long; I wanted my money back.",
    "an engrossing portrait of a family coming apart",
]
TEMPLATE = "Review: {text}\nSentiment:"

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    from blackbox.engine.loader import resolve_spec

    binary = built("llama_cpp_server_build.sh", "llama-server")
    port = free_port()
    cmd = [binary, "-m", str(resolve_spec("default").path), "--host", "127.0.0.1", "--port",
           str(port), "-np", "4", "-c", "4096", "--alias", MODEL, "--no-webui",
           "--log-verbosity", "1"]
    # /health: 503 while the model loads, 200 once it serves
    with process_server(cmd, "/health", "llama-server", port) as root:
        yield root + "/v1"


def _client(url: str) -> Any:
    import openai

    return openai.OpenAI(base_url=url, api_key="EMPTY", max_retries=0, timeout=120)


def _remote(url: str, **kw: Any) -> Any:
    from blackbox.backends.remote import RemoteBackend

    return RemoteBackend(base_url=url, api_key_env=KEY_ENV, timeout=120, **kw)


def _raw_top(choice: Any) -> list[tuple[str, float]]:
    """The first token's top log-probs of a raw SDK choice, in the chat shape (the SDK's
    completions model does not declare ``content``: it is an extra field)."""
    lp = choice.logprobs
    content = lp.content if hasattr(lp, "content") and lp.content is not None else \
        (lp.model_extra or {}).get("content")
    assert isinstance(content, list) and content, lp
    return [(e["token"], e["logprob"]) if isinstance(e, dict) else (e.token, e.logprob)
            for e in (content[0]["top_logprobs"] if isinstance(content[0], dict)
                      else content[0].top_logprobs)]


def _outside_top3(top: list[tuple[str, float]], chat: bool) -> list[tuple[str, float]]:
    """Two distinct words of the top-20 beyond its top-3 (as label words spell them)."""
    norm = [t.strip().lower() for t, _ in top]
    if chat:  # spelled as the bias spells them (no space), one case variant each
        return [(t, v) for i, (t, v) in enumerate(top) if i >= 3 and t == t.strip() and t
                and norm.count(t.lower()) == 1][:2]
    # completions: the exact token text, a word with its leading space
    return [(t, v) for i, (t, v) in enumerate(top) if i >= 3 and t.startswith(" ")
            and t.strip().isalpha()][:2]


# ---- (1) the completions route: chat-shaped log-probs -----------------------------------

def test_completions_route_reads_the_chat_shaped_top_logprobs(url: str) -> None:
    """``/v1/completions`` answers in the chat shape: the label scores are the values it
    lists, and a word outside a top-3 is recovered through ``logit_bias`` to the value the
    top-20 lists (llama-server reports log-probs before the bias)."""
    client = _client(url)
    remote = _remote(url)
    caps = remote.capabilities
    assert caps.extra["api"] == "completions" and caps.label_logprobs == "topk"
    assert caps.topk == 20 and not caps.extra["bbx_server"] and caps.extra["model"] == MODEL
    assert caps.hidden == "embeddings" and caps.extra["logit_bias"] == "on"
    small = _remote(url, api="completions", top_logprobs=3)
    try:
        for text in REVIEWS[:2]:
            prompt = TEMPLATE.format(text=text)
            res = client.completions.create(model=MODEL, prompt=prompt, max_tokens=1,
                                            temperature=0, logprobs=20)
            top = _raw_top(res.choices[0])
            assert len(top) == 20
            picks = _outside_top3(top, chat=False)
            assert len(picks) == 2, top
            words = [t for t, _ in picks]
            want = [v for _, v in picks]
            assert remote.label_logprobs([prompt], words)[0] == pytest.approx(want, abs=1e-4)
            assert small.label_logprobs([prompt], words)[0] == pytest.approx(want, abs=1e-4)
            # the task's words: the top-20's values where listed, else a recovered value
            # (below the 20th) or the floor
            listed = dict(top)
            got = remote.label_logprobs([prompt], WORDS)[0]
            for w, g in zip(WORDS, got, strict=True):
                if w in listed:
                    assert g == pytest.approx(listed[w], abs=1e-4)
                else:
                    assert g <= top[-1][1] + 1e-4
        assert remote.tokenize_route == "/tokenize (content)"  # llama-server's body
        # the usage llama-server reports reaches the metered wrapper (one request a prompt)
        from blackbox.backends.metered import MeteredBackend

        metered = MeteredBackend(remote)
        metered.label_logprobs([TEMPLATE.format(text=REVIEWS[2])], [" Good"])
        assert metered.usage.queries == 1 and metered.usage.estimated == 0
        assert metered.usage.tokens > 5
        with pytest.raises(BbxError, match="not a bbx server"):
            remote.label_logprobs([TEMPLATE.format(text=REVIEWS[0])], WORDS, adapter="sst2")
    finally:
        remote.close()
        small.close()


def test_bbx_eval_on_the_completions_route(url: str, tmp_path: Path, monkeypatch) -> None:
    """``bbx eval --backend remote --api completions`` end to end: 6 test items, 6 paid
    queries, one ledger row each; a second run pays nothing."""
    from typer.testing import CliRunner

    from blackbox.cli.main import app

    monkeypatch.setenv("BBX_RESPONSES_DIR", str(tmp_path / "responses"))
    args = ["eval", "--task", "sst-2", "--limit", "6", "--backend", "remote", "--base-url", url,
            "--api", "completions", "--api-key-env", KEY_ENV, "--json", "--no-progress",
            "--output-dir", str(tmp_path / "runs")]
    runner = CliRunner()
    first = runner.invoke(app, args)
    assert first.exit_code == 0, first.output
    s = json.loads(first.stdout)
    assert s["method"] == "eval" and s["n"] == 6 and 0.0 <= s["accuracy"] <= 1.0
    assert s["usage"]["queries"] == 6 and s["usage"]["cached"] == 0
    assert s["usage"]["estimated"] == 0 and s["usage"]["prompt_tokens"] > 6 * 10
    assert s["ledger_rows_this_run"] == 6
    run = Path(s["run_dir"])
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["backend"]["capabilities"]["label_logprobs"] == "topk"
    assert manifest["backend"]["capabilities"]["extra"]["api"] == "completions"
    again = runner.invoke(app, args)
    assert again.exit_code == 0, again.output
    s2 = json.loads(again.stdout)
    assert s2["usage"]["queries"] == 0 and s2["usage"]["cached"] == 6
    assert s2["accuracy"] == s["accuracy"]


# ---- (2) the chat route ------------------------------------------------------------------

def test_chat_route_top_logprobs_and_logit_bias(url: str) -> None:
    """Chat mode on llama-server's chat route: scores equal its top-20, and a word outside a
    top-3 is recovered through ``logit_bias`` to exactly the value the top-20 lists."""
    client = _client(url)
    full = _remote(url, api="chat")
    small = _remote(url, api="chat", top_logprobs=3)
    try:
        for text in REVIEWS[:2]:
            prompt = TEMPLATE.format(text=text)
            msgs = [{"role": "user", "content": prompt}]
            res = client.chat.completions.create(model=MODEL, messages=msgs, max_tokens=1,
                                                 temperature=0, logprobs=True, top_logprobs=20)
            top = _raw_top(res.choices[0])
            picks = _outside_top3(top, chat=True)
            assert len(picks) == 2, top
            words = [" " + t for t, _ in picks]  # label words as tasks write them
            want = [v for _, v in picks]
            assert full.label_logprobs([prompt], words)[0] == pytest.approx(want, abs=1e-4)
            assert small.label_logprobs([prompt], words)[0] == pytest.approx(want, abs=1e-4)
            reply = client.chat.completions.create(model=MODEL, messages=msgs, max_tokens=5,
                                                   temperature=0).choices[0].message.content
            assert full.generate([prompt], {"max_tokens": 5}) == [reply]
        assert small.capabilities.extra["logit_bias"] == "on"
        assert small.capabilities.extra["api"] == "chat"
        assert small.tokenize_route == "/tokenize (content)"
    finally:
        full.close()
        small.close()


# ---- (3) label_logprobs: generate ----------------------------------------------------------

def test_generate_mode_reads_the_replies(url: str) -> None:
    """``label_logprobs: generate`` on the chat route: the score row is one-hot on the word
    the greedy reply names; with ``samples: 3`` llama-server sends three replies (it honours
    ``n``) and the row is their frequencies."""
    from blackbox.backends.labels import GENERATE_FLOOR, parse_reply

    client = _client(url)
    prompts = ["Is the sky blue? Answer yes or no.", "Is fire cold? Answer yes or no."]
    words = [" yes", " no"]
    one = _remote(url, api="chat", label_logprobs="generate", generate_max_tokens=4)
    many = _remote(url, api="chat", label_logprobs="generate", generate_max_tokens=4,
                   samples=3)
    try:
        assert one.capabilities.label_logprobs == "generate"
        rows = one.label_logprobs(prompts, words)
        for prompt, row in zip(prompts, rows, strict=True):
            reply = client.chat.completions.create(
                model=MODEL, messages=[{"role": "user", "content": prompt}], max_tokens=4,
                temperature=0).choices[0].message.content
            pick = parse_reply(reply, words)
            want = [GENERATE_FLOOR] * 2
            if pick is not None:
                want[pick] = 0.0
            assert row == want, reply
        assert one.generate_stats["replies"] == 2 and one.generate_stats["short_of_n"] == 0
        sampled = many.label_logprobs(prompts, words)
        assert many.generate_stats["replies"] == 6 and many.generate_stats["short_of_n"] == 0
        allowed = [GENERATE_FLOOR, math.log(1 / 3), math.log(2 / 3), 0.0]
        for row in sampled:
            assert all(min(abs(v - a) for a in allowed) < 1e-9 for v in row), row
            assert sum(math.exp(v) for v in row if v > GENERATE_FLOOR) <= 1 + 1e-9
    finally:
        one.close()
        many.close()


# ---- (4) LMTurk workers and (5) bbx search-prompt on the chat route ---------------------

def test_lmturk_workers_on_the_chat_route(url: str, tmp_path: Path) -> None:
    """A tiny distill run (``remote_methods.distill_with_workers``): 10 paid queries."""
    distill_with_workers(url, tmp_path, api="chat")


def test_bbx_search_prompt_on_the_chat_route(url: str, tmp_path: Path, monkeypatch) -> None:
    """``bbx search-prompt`` with a tiny budget (``remote_methods.search_prompt_cli``): 12
    paid queries."""
    search_prompt_cli(url, tmp_path, monkeypatch, api="chat")
