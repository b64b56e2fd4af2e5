"""An independent server: llama.cpp's OpenAI server (llama-cpp-python 0.3.36) serving the
bundled SmolLM2 GGUF, used through the remote backend.

The server runs from its own venv, built once by ``scripts/llama_server_env.sh`` (``make
test`` runs it first; this test runs it too, which is instant once built). The test is skipped
only when that build is impossible here, with the script's reason.

What llama.cpp gives: no bbx extensions (so label words go through next-token
``top_logprobs``, and hidden states through the embeddings fallback); its ``echo=true`` prompt
log-probs are wrong in 0.3.36, so the default ``auto`` mode never uses them. Two whole
methods run against it too (``remote_methods.py``): a tiny LMTurk distill on the
completions route and ``bbx search-prompt`` on the chat route, with exact query counts.
"""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("openai")

from remote_methods import distill_with_workers, search_prompt_cli  # noqa: E402
from serve_support import built, free_port, process_server  # noqa: E402

from blackbox.errors import BbxError  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
REVIEWS = [
    "A wonderful, moving film with superb acting.",
    "Dull, lifeless and far too long; I wanted my money back.",
    "an engrossing portrait of a family coming apart",
    "the jokes fall flat and the plot makes no sense",
]
TEMPLATE = "Review: {text}\nSentiment:"
WORDS = [" negative", " positive"]


@pytest.fixture(scope="module")
def llama_url():
    from blackbox.engine.loader import resolve_spec

    python = built("llama_server_env.sh", "llama-cpp-python[server]==0.3.36")
    port = free_port()
    cmd = [python, "-m", "llama_cpp.server", "--model", str(resolve_spec("default").path),
           "--host", "127.0.0.1", "--port", str(port), "--logits_all", "true", "--n_ctx",
           "2048", "--verbose", "false"]
    with process_server(cmd, "/v1/models", "llama.cpp server", port) as root:
        yield root + "/v1"


@pytest.mark.slow
def test_llama_cpp_server_works_as_a_remote_backend(llama_url, monkeypatch) -> None:
    from blackbox.backends.local import LocalBackend
    from blackbox.backends.metered import MeteredBackend
    from blackbox.backends.remote import RemoteBackend

    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    remote = RemoteBackend(base_url=llama_url, api_key_env="OPENAI_API_KEY", timeout=120,
                           max_concurrency=2)
    caps = remote.capabilities
    assert caps.label_logprobs == "topk" and caps.hidden == "embeddings"
    assert not caps.extra["bbx_server"] and caps.topk == 20
    prompts = [TEMPLATE.format(text=t) for t in REVIEWS]
    got = MeteredBackend(remote).label_logprobs(prompts, WORDS)
    local = LocalBackend(dtype="float32")
    want = local.label_logprobs(prompts, WORDS)
    local.close()
    # llama.cpp computes with the Q4_1 weights and 8-bit activations, the local engine with
    # their fp32 dequantization: close, not equal (measured: up to 0.4 nats, 0.15 on average)
    diffs = [abs(a - b) for g, w in zip(got, want, strict=True)
             for a, b in zip(g, w, strict=True)]
    assert max(diffs) < 0.6 and sum(diffs) / len(diffs) < 0.3, diffs
    for g, w in zip(got, want, strict=True):
        if abs(w[1] - w[0]) > 0.5:  # a clear decision survives the quantization
            assert (g[1] > g[0]) == (w[1] > w[0])
    text = remote.generate(["The capital of France is"], {"max_tokens": 5})
    assert isinstance(text[0], str) and text[0]
    with pytest.raises(BbxError, match="not a bbx server"):
        remote.label_logprobs(prompts[:1], WORDS, adapter="sst2")
    remote.close()


@pytest.mark.slow
def test_llama_cpp_chat_route_top_logprobs_and_logit_bias(llama_url, monkeypatch) -> None:
    """Chat mode on llama.cpp's chat route: scores equal its top-20, and a word outside a
    top-3 is recovered through ``logit_bias`` to exactly the value the top-20 lists
    (llama.cpp reports log-probs before the bias)."""
    import openai

    from blackbox.backends.remote import RemoteBackend

    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    client = openai.OpenAI(base_url=llama_url, api_key="EMPTY", max_retries=0, timeout=120)
    model = client.models.list().data[0].id
    auto = RemoteBackend(base_url=llama_url, timeout=120)
    assert auto.capabilities.extra["api"] == "completions"  # its completions route answers
    auto.close()
    for text in REVIEWS[:2]:
        prompt = TEMPLATE.format(text=text)
        res = client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": prompt}], max_tokens=1,
            temperature=0, logprobs=True, top_logprobs=20)
        top = [(t.token, t.logprob) for t in res.choices[0].logprobs.content[0].top_logprobs]
        norm = [t.strip().lower() for t, _ in top]
        # words outside the top-3 spelled as the bias spells them (no space), one variant each
        picks = [(t, v) for i, (t, v) in enumerate(top) if i >= 3 and t == t.strip() and t
                 and norm.count(t.lower()) == 1][:2]
        assert len(picks) == 2, top
        words = [" " + t for t, _ in picks]  # label words as tasks write them
        full = RemoteBackend(base_url=llama_url, api="chat", timeout=120)
        assert full.label_logprobs([prompt], words)[0] == pytest.approx(
            [v for _, v in picks], abs=1e-4)
        small = RemoteBackend(base_url=llama_url, api="chat", top_logprobs=3, timeout=120)
        assert small.label_logprobs([prompt], words)[0] == pytest.approx(
            [v for _, v in picks], abs=1e-4)
        assert small.capabilities.extra["logit_bias"] == "on"
        msgs = [{"role": "user", "content": prompt}]
        want = client.chat.completions.create(model=model, messages=msgs, max_tokens=5,
                                              temperature=0).choices[0].message.content
        assert full.generate([prompt], {"max_tokens": 5}) == [want]
        for b in (full, small):
            b.close()


@pytest.mark.slow
def test_lmturk_workers_on_llama_cpp(llama_url, tmp_path) -> None:
    """A tiny distill run on the route ``auto`` picks here (completions): 10 paid queries,
    the workers' labels recorded (``remote_methods.distill_with_workers``)."""
    distill_with_workers(llama_url, tmp_path, api="completions")


@pytest.mark.slow
def test_bbx_search_prompt_on_llama_cpp(llama_url, tmp_path, monkeypatch) -> None:
    """``bbx search-prompt`` with a tiny budget on the chat route: 12 paid queries
    (``remote_methods.search_prompt_cli``)."""
    search_prompt_cli(llama_url, tmp_path, monkeypatch, api="chat")
