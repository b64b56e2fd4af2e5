"""The ledger's usage is what the server's responses said: the real ``openai`` SDK against
the fake OpenAI server (``tests/fake_openai.py``), requests fanned out to the remote
backend's thread pool, per item and in total."""

from __future__ import annotations

import json

import pytest

openai = pytest.importorskip("openai")
pytest.importorskip("fastapi")

from fake_openai import FakeOpenAI  # noqa: E402
from serve_support import running_server  # noqa: E402

from blackbox.backends.metered import Budget, MeteredBackend  # noqa: E402
from blackbox.backends.pricing import Pricing  # noqa: E402
from blackbox.backends.remote import RemoteBackend  # noqa: E402

PROMPTS = [f"Review: {' '.join(['word'] * n)}\nSentiment:" for n in range(1, 9)]
WORDS = [" positive", " negative"]
PRICE = Pricing(0.15, 0.60)


def _ledger(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _metered(fake: FakeOpenAI, base: str, tmp_path, **kw) -> MeteredBackend:
    r = RemoteBackend(base_url=base, api_key_env="BBX_TEST_NO_SUCH_KEY", max_concurrency=4,
                      **kw)
    m = MeteredBackend(r, tmp_path / "c", tmp_path / "l.jsonl", Budget(max_usd=1.0), PRICE)
    _ = m.fingerprint  # the server probes (not model queries) happen here, unmetered
    fake.usages.clear()
    return m


@pytest.mark.parametrize("api", ["completions", "chat"])
def test_ledger_usage_is_what_each_response_reported(api: str, tmp_path) -> None:
    fake = FakeOpenAI({})
    with running_server(fake.app()) as base:
        m = _metered(fake, base, tmp_path, api=api, label_logprobs="topk")
        m.label_logprobs(PROMPTS, WORDS)
        m.label_logprobs(PROMPTS[:3], WORDS)  # cached: nothing sent, nothing charged
        m.close()
    rows = _ledger(tmp_path / "l.jsonl")
    paid = rows[:len(PROMPTS)]
    assert len(fake.usages) == len(PROMPTS)  # one request per prompt, all in the ledger
    # per item: the usage of the one response that answered it (the fake's counts are the
    # prompt's words + 7 read, the reply's characters written)
    want = [(len(p.split()) + 7) for p in PROMPTS]
    assert [r["prompt_tokens"] for r in paid] == want
    assert sorted(r["completion_tokens"] for r in paid) == sorted(
        u["completion_tokens"] for u in fake.usages)
    assert not any(r.get("estimated") for r in rows)
    assert all(r["cached"] and r["usd"] == 0.0 for r in rows[len(PROMPTS):])
    reported_in = sum(u["prompt_tokens"] for u in fake.usages)
    reported_out = sum(u["completion_tokens"] for u in fake.usages)
    assert (m.usage.tokens, m.usage.completion_tokens) == (reported_in, reported_out)
    assert m.usage.usd == pytest.approx((reported_in * 0.15 + reported_out * 0.60) / 1e6)


def test_several_requests_for_one_item_are_all_its_own(tmp_path) -> None:
    # top-2 only: the words outside it cost one logit_bias request each, for that prompt
    logits = {p: [3.0, 2.0, 1.0] + [0.0] * 9 for p in PROMPTS[:4]}
    fake = FakeOpenAI(logits)
    with running_server(fake.app()) as base:
        m = _metered(fake, base, tmp_path, api="completions", label_logprobs="topk",
                     top_logprobs=2)
        m.label_logprobs(PROMPTS[:4], WORDS)
        m.close()
    sent = [b for route, b in fake.requests if route == "completions"][-len(fake.usages):]
    per_prompt: dict[str, int] = {}
    for body, u in zip(sent, fake.usages, strict=True):
        per_prompt[body["prompt"]] = per_prompt.get(body["prompt"], 0) + u["prompt_tokens"]
    rows = _ledger(tmp_path / "l.jsonl")
    assert len(fake.usages) > 4  # the bias requests did happen
    assert [r["prompt_tokens"] for r in rows] == [per_prompt[p] for p in PROMPTS[:4]]


def test_generated_label_scores_and_a_server_without_usage(tmp_path) -> None:
    replies = {p: ["positive", "negative", "positive"] for p in PROMPTS[:5]}
    fake = FakeOpenAI({}, replies=replies)
    with running_server(fake.app()) as base:
        m = _metered(fake, base, tmp_path, api="chat", label_logprobs="generate", samples=3)
        m.label_logprobs(PROMPTS[:3], WORDS)
        fake.usage = False  # a server that drops usage: the projection is charged, marked
        m.label_logprobs(PROMPTS[3:5], WORDS)
        m.close()
    rows = _ledger(tmp_path / "l.jsonl")
    assert [r["completion_tokens"] for r in rows[:3]] == [len("positivenegativepositive")] * 3
    assert [r["prompt_tokens"] for r in rows[:3]] == [len(p.split()) + 7 for p in PROMPTS[:3]]
    assert all(r.get("estimated") for r in rows[3:]) and m.usage.estimated == 2
    # the projection of a generated answer: generate_max_tokens x samples written
    assert all(r["completion_tokens"] == 8 * 3 for r in rows[3:])
