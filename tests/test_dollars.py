"""Dollars: real usage per item in the ledger, ``budget.max_usd`` before each call,
``bbx run --dry-run`` projections, ``bbx report``'s paid line, the missing-price error."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest
from conftest import bbx

from blackbox.backends.fake import FakeBackend
from blackbox.backends.metered import Budget, MeteredBackend
from blackbox.backends.pricing import EXAMPLE_PRICES, Pricing, config_pricing
from blackbox.backends.usage import TokenUsage, collect, report, serving
from blackbox.errors import BbxError, BudgetExceeded

WORDS = [" negative", " positive"]
PRICE = Pricing(2.5, 10.0)
PRICED_FAKE = {"kind": "fake", "pricing": {"input_per_mtok": 2.5, "output_per_mtok": 10.0}}


def _ledger(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


# ---- usage per item ---------------------------------------------------------------------

def test_reports_credit_the_items_served_and_nested_subsets_compose() -> None:
    with collect(4) as sink:
        with serving([2]):
            report(5, 1)
        with serving([1, 3]), serving([1]):  # item 1 of the subset [1, 3] is item 3
            report(7, 2)
        with serving([0, 1]):
            report(3, 1)  # a chunk request: split evenly, the first takes the remainder
    assert sink.per_item() == [TokenUsage(2, 1), TokenUsage(1, 0), TokenUsage(5, 1),
                               TokenUsage(7, 2)]
    report(100, 100)  # outside a metered call: nowhere to go, no error


def test_ledger_rows_carry_the_fake_backends_own_usage_and_cached_rows_cost_nothing(
        tmp_path) -> None:
    m = MeteredBackend(FakeBackend(), tmp_path / "c", tmp_path / "l.jsonl", pricing=PRICE)
    m.label_logprobs(["one two three", "four five"], WORDS)
    m.generate(["six"], {"max_tokens": 50})
    m.label_logprobs(["one two three"], WORDS)  # cached
    rows = _ledger(tmp_path / "l.jsonl")
    assert [(r["prompt_tokens"], r["completion_tokens"], r["cached"]) for r in rows] == [
        (3, 1, False), (2, 1, False), (1, 1, False), (0, 0, True)]
    assert rows[0]["usd"] == pytest.approx((3 * 2.5 + 1 * 10.0) / 1e6)
    assert rows[3]["usd"] == 0.0 and not any(r.get("estimated") for r in rows)
    # the generate reservation was 50 completion tokens; the real reply wrote 1
    assert m.usage.completion_tokens == 3 and m.usage.reserved_usd == pytest.approx(0.0)
    assert m.usage.usd == pytest.approx(sum(r["usd"] for r in rows))


class _Silent(FakeBackend):
    """A backend whose responses carry no usage (a server that drops it)."""

    def label_logprobs(self, prompts, label_words, adapter=None):  # type: ignore[override]
        with collect(len(prompts)):  # swallow the fake's own reports
            return super().label_logprobs(prompts, label_words, adapter)


def test_an_item_without_reported_usage_is_charged_its_projection(tmp_path) -> None:
    m = MeteredBackend(_Silent(), None, tmp_path / "l.jsonl", pricing=PRICE)
    m.label_logprobs(["a b c"], WORDS)
    [row] = _ledger(tmp_path / "l.jsonl")
    assert row["estimated"] is True and row["prompt_tokens"] == 3
    assert m.usage.estimated == 1


class _Dense(FakeBackend):
    """Reports twice the prompt tokens it projects (a tokenizer denser than the estimate)."""

    def label_logprobs(self, prompts, label_words, adapter=None):  # type: ignore[override]
        for i, n in enumerate(self.count_tokens(prompts)):
            with serving([i]):
                report(n, 0)  # on top of the fake's own report: 2x in all
        return super().label_logprobs(prompts, label_words, adapter)


def test_usage_above_the_projection_scales_later_projections(tmp_path) -> None:
    m = MeteredBackend(_Dense(), None, None, Budget(max_usd=1.0), pricing=PRICE)
    m.label_logprobs(["a b c d"], WORDS)
    assert m.usage.tokens == 8 and m.meter.scale == pytest.approx(2.0)


# ---- the dollar budget --------------------------------------------------------------------

def _spend(m: MeteredBackend, calls: list[tuple[str, list[str], int]]) -> None:
    for verb, prompts, max_tokens in calls:
        try:
            if verb == "generate":
                m.generate(prompts, {"max_tokens": max_tokens})
            else:
                m.label_logprobs(prompts, WORDS)
        except BudgetExceeded:
            pass


def _check_paid(m: MeteredBackend, ledger: Path, max_usd: float,
                max_queries: int | None) -> None:
    rows = [r for r in _ledger(ledger) if not r["cached"]] if ledger.exists() else []
    paid = sum(r["usd"] for r in rows)
    assert paid <= max_usd + 1e-12
    assert m.usage.usd == pytest.approx(paid, abs=1e-12)
    if max_queries is not None:
        assert len(rows) <= max_queries


def _one_budget(d: Path, max_usd: float, max_queries: int | None,
                calls: list[tuple[str, list[str], int]], price: tuple[float, float]) -> None:
    m = MeteredBackend(FakeBackend(), d / "c", d / "l.jsonl",
                       Budget(max_queries=max_queries, max_usd=max_usd), pricing=Pricing(*price))
    _spend(m, calls)
    m.close()
    _check_paid(m, d / "l.jsonl", max_usd, max_queries)


try:
    import hypothesis
except ImportError:  # a seeded random loop instead
    hypothesis = None

if hypothesis is not None:
    st = hypothesis.strategies
    _words = st.lists(st.sampled_from(["great", "film", "bad", "plot", "a", "the", "slow"]),
                      min_size=1, max_size=30).map(" ".join)
    _calls = st.lists(st.tuples(st.sampled_from(["label_logprobs", "generate"]),
                                st.lists(_words, min_size=1, max_size=6),
                                st.integers(1, 40)), min_size=1, max_size=12)

    @hypothesis.settings(max_examples=60, deadline=None)
    @hypothesis.given(max_usd=st.floats(0.0, 0.002),
                      max_queries=st.none() | st.integers(0, 30), calls=_calls,
                      price=st.tuples(st.floats(0.01, 20.0), st.floats(0.01, 80.0)))
    def test_the_paid_total_never_exceeds_the_cap(tmp_path_factory, max_usd, max_queries,
                                                  calls, price) -> None:
        _one_budget(tmp_path_factory.mktemp("budget"), max_usd, max_queries, calls, price)
else:
    def test_the_paid_total_never_exceeds_the_cap(tmp_path) -> None:
        import random

        rng = random.Random(0)
        vocab = ["great", "film", "bad", "plot", "a", "the", "slow"]
        for k in range(60):
            calls = [(rng.choice(["label_logprobs", "generate"]),
                      [" ".join(rng.choices(vocab, k=rng.randint(1, 30)))
                       for _ in range(rng.randint(1, 6))], rng.randint(1, 40))
                     for _ in range(rng.randint(1, 12))]
            _one_budget(tmp_path / str(k), rng.uniform(0, 0.002),
                        rng.choice([None, rng.randint(0, 30)]), calls,
                        (rng.uniform(0.01, 20), rng.uniform(0.01, 80)))


def test_concurrent_callers_cannot_overspend_together(tmp_path) -> None:
    import random

    rng = random.Random(0)
    m = MeteredBackend(FakeBackend(), tmp_path / "c", tmp_path / "l.jsonl",
                       Budget(max_usd=0.0005), pricing=PRICE)
    work = [[("label_logprobs", [f"text {t} {i} " * rng.randint(1, 9)], 1)
             for i in range(40)] for t in range(4)]
    threads = [threading.Thread(target=_spend, args=(m, w)) for w in work]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    m.close()
    _check_paid(m, tmp_path / "l.jsonl", 0.0005, None)
    assert m.usage.queries > 0  # it did spend, up to the cap


def test_max_usd_without_a_price_is_one_line_and_exit_2(tmp_path) -> None:
    f = tmp_path / "r.yaml"
    f.write_text(f"method: eval\ntask: trec\nlimit: 3\nbackend: {{kind: fake}}\n"
                 f"budget: {{max_usd: 0.5}}\noutput_dir: {tmp_path / 'out'}\n")
    for args in (("run", str(f)), ("run", str(f), "--dry-run")):
        proc = bbx(*args)
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 2, proc.stderr
        assert len(lines) == 1 and "max_usd" in lines[0] and "backend.pricing" in lines[0]
    assert not (tmp_path / "out").exists()  # refused before any run directory
    with pytest.raises(BbxError, match="backend.pricing"):
        MeteredBackend(FakeBackend(), budget=Budget(max_usd=1.0))


def test_example_prices_are_the_default_for_remote_models_and_noted() -> None:
    from blackbox.recipes.schema import FakeBackendConfig, RemoteBackendConfig

    got, note = config_pricing(RemoteBackendConfig(model="gpt-4o-mini"))
    assert got == EXAMPLE_PRICES["gpt-4o-mini"] == Pricing(0.15, 0.60)
    assert note is not None and "as of" in note and "override with backend.pricing" in note
    assert config_pricing(RemoteBackendConfig(model="my-own")) == (None, None)
    assert config_pricing(FakeBackendConfig()) == (None, None)
    mine = RemoteBackendConfig(model="gpt-4o", pricing={"input_per_mtok": 1,
                                                        "output_per_mtok": 2})
    assert config_pricing(mine) == (Pricing(1.0, 2.0), None)


def test_a_metered_backend_inside_another_reports_upwards(tmp_path) -> None:
    inner = MeteredBackend(FakeBackend(), tmp_path / "inner", pricing=PRICE)
    inner.label_logprobs(["a b"], WORDS)  # the inner cache holds it: free for the outer
    outer = MeteredBackend(inner, tmp_path / "outer", tmp_path / "l.jsonl", pricing=PRICE)
    outer.label_logprobs(["a b", "c d e"], WORDS)
    rows = _ledger(tmp_path / "l.jsonl")
    assert [(r["prompt_tokens"], r.get("estimated", False)) for r in rows] == [(0, False),
                                                                             (3, False)]
    assert outer.usage.usd == pytest.approx(PRICE.usd(TokenUsage(3, 1)))
