"""The metered wrapper: content-addressed cache, budget before the call, one ledger row per item."""

from __future__ import annotations

import json

import pytest

from blackbox.backends.base import normalize_adapter
from blackbox.backends.fake import FakeBackend
from blackbox.backends.metered import Budget, MeteredBackend
from blackbox.errors import BbxError, BudgetExceeded

WORDS = [" negative", " positive"]


def _ledger(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_cache_answers_repeats_without_paying(tmp_path) -> None:
    fake = FakeBackend()
    m = MeteredBackend(fake, tmp_path / "c", tmp_path / "ledger.jsonl")
    first = m.label_logprobs(["a", "b", "a"], WORDS)
    assert fake.calls == 2  # the repeated "a" inside one batch is paid once
    again = MeteredBackend(fake, tmp_path / "c", tmp_path / "ledger2.jsonl")
    assert again.label_logprobs(["b", "a"], WORDS) == [first[1], first[0]]
    assert fake.calls == 2
    assert [r["cached"] for r in _ledger(tmp_path / "ledger2.jsonl")] == [True, True]
    assert again.usage.queries == 0 and again.usage.cached == 2


def test_cache_key_includes_fingerprint_words_and_adapter(tmp_path) -> None:
    a = FakeBackend(seed=1, adapter_bias={"x": {" positive": 1.0}})
    m = MeteredBackend(a, tmp_path / "c")
    m.label_logprobs(["p"], WORDS)
    m.label_logprobs(["p"], [" yes", " no"])
    m.label_logprobs(["p"], WORDS, adapter="x")
    assert a.calls == 3
    other = FakeBackend(seed=2)
    MeteredBackend(other, tmp_path / "c").label_logprobs(["p"], WORDS)
    assert other.calls == 1  # another model: same text, another answer, another key


def test_budget_is_checked_before_the_call(tmp_path) -> None:
    fake = FakeBackend()
    m = MeteredBackend(fake, tmp_path / "c", tmp_path / "l.jsonl", Budget(max_queries=3))
    m.label_logprobs(["a", "b"], WORDS)
    with pytest.raises(BudgetExceeded, match="query budget"):
        m.label_logprobs(["c", "d"], WORDS)
    assert fake.calls == 2  # nothing of the over-budget batch was sent
    m.label_logprobs(["a", "b", "c"], WORDS)  # two cached + one new fits exactly
    assert m.usage.queries == 3 and fake.calls == 3
    tokens = MeteredBackend(FakeBackend(), None, None, Budget(max_tokens=3))
    with pytest.raises(BudgetExceeded, match="token budget"):
        tokens.label_logprobs(["one two", "three four"], WORDS)


def test_ledger_rows_record_tokens_and_latency(tmp_path) -> None:
    m = MeteredBackend(FakeBackend(), tmp_path / "c", tmp_path / "l.jsonl")
    m.score(["the prompt"], [" a continuation"])
    m.embed(["x y z"])
    m.close()
    rows = _ledger(tmp_path / "l.jsonl")
    assert [r["verb"] for r in rows] == ["score", "embed"]
    assert rows[0]["tokens"] == 4 and rows[1]["tokens"] == 3
    assert all(not r["cached"] and r["latency_s"] >= 0 for r in rows)


def test_sampled_generation_is_cached_only_with_a_sample_index(tmp_path) -> None:
    fake = FakeBackend()
    m = MeteredBackend(fake, tmp_path / "c")
    m.generate(["p"], {"temperature": 0.7})
    m.generate(["p"], {"temperature": 0.7})
    assert fake.calls == 2
    m.generate(["p"], {"temperature": 0.7, "seed": 3})
    m.generate(["p"], {"temperature": 0.7, "seed": 3})
    assert fake.calls == 3


@pytest.mark.parametrize("bad,msg", [
    ({"adapters": ["a"], "alpha": [1.5]}, "outside"),
    ({"adapters": ["a"], "beta": [float("nan")]}, "non-finite"),
    ({"adapters": ["a", "b"], "alpha": [1.0]}, "list of 2"),
    ({"adapters": []}, "non-empty"),
    ({"adapters": ["a"], "gamma": [1]}, "unknown mixture field"),
])
def test_bad_mixtures_are_user_errors(bad: dict, msg: str) -> None:
    with pytest.raises(BbxError, match=msg):
        normalize_adapter(bad)


def test_mixture_canonical_form_fills_defaults() -> None:
    assert normalize_adapter({"adapters": ["a", "b"]}) == {
        "adapters": ["a", "b"], "alpha": [1.0, 1.0], "beta": [1.0, 1.0]}
    assert normalize_adapter("") is None
