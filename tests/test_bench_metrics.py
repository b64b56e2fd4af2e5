"""``bbx bench``'s arithmetic on hand-made timing traces (times are dyadic fractions, so
the expected values are exact), and its schedules (seeded Poisson arrivals, the bounds)."""

from __future__ import annotations

import asyncio

import pytest

from blackbox.bench.metrics import (
    Trace,
    chunk_tokens,
    fluidity_index,
    parse_duration,
    parse_pairs,
    percentiles,
    request_metrics,
    summarize,
    token_times,
)
from blackbox.bench.schedule import Schedule, drive, poisson_offsets
from blackbox.errors import BbxError


def trace(start: float, arrivals: list[float], end: float, usage: int | None = None,
          texts: list[str] | None = None, error: str | None = None) -> Trace:
    texts = texts or ["x"] * len(arrivals)
    return Trace(index=0, scheduled=start, start=start, end=end, error=error,
                 chunks=list(zip(arrivals, texts, strict=True)), output_tokens=usage)


def test_one_token_per_chunk_ttft_itl_tpot_e2e() -> None:
    m = request_metrics(trace(0.0, [0.25, 0.375, 0.625, 0.75], 0.875, usage=4),
                        streamed=True, prefill=0.5, decode=0.125)
    assert m.ttft == 0.25 and m.e2e == 0.875 and m.tokens == 4
    assert m.itl == [0.125, 0.25, 0.125]
    assert m.tpot == (0.875 - 0.25) / 3  # vLLM's (e2e - TTFT) / (tokens - 1)
    # every token meets its deadline: token 3 (0.25 s for a 0.125 s target) only thanks
    # to the slack tokens 1 and 2 left (0.25 s)
    assert m.fluidity == 1.0


def test_fluidity_slack_carries_over_and_resets_on_a_miss() -> None:
    # D_p = 0.5, D_d = 0.125. Token 1 takes 0.25: met, slack 0.25. Token 2 takes 0.75 >
    # 0.125 + 0.25: missed, slack reset to 0. Token 3 takes 0.25 > 0.125 + 0 (met had the
    # slack survived): missed. Token 4 takes 0.125: met.
    assert fluidity_index(0.0, [0.25, 1.0, 1.25, 1.375], 0.5, 0.125) == 0.5
    # the same stream without the stall: slack 0.25 after token 1 covers token 3's 0.25
    assert fluidity_index(0.0, [0.25, 0.375, 0.625, 0.75], 0.5, 0.125) == 1.0
    # a tight prefill target leaves no slack: token 3 misses
    assert fluidity_index(0.0, [0.25, 0.375, 0.625, 0.75], 0.25, 0.125) == 0.75
    # slack accumulates over several early tokens: 3 x 0.0625 saved pays a 0.25 token
    assert fluidity_index(0.0, [0.5, 0.5625, 0.625, 0.6875, 0.9375], 0.5, 0.125) == 1.0
    assert fluidity_index(0.0, [], 0.5, 0.125) is None


def test_tokens_of_a_multi_token_chunk_are_spread_over_its_interval() -> None:
    # usage says 5 tokens in 2 chunks: apportioned by text length (2 : 6 chars) -> 2 and 3
    assert chunk_tokens(["ab", "abcdef"], 5) == [2, 3]
    assert chunk_tokens(["ab", "abcdef"], None) == [1, 1]  # no usage: one per chunk
    assert chunk_tokens(["ab", "abcdef"], 1) == [1, 1]  # fewer tokens than chunks
    assert chunk_tokens(["a"], 4) == [4]
    t = trace(0.0, [0.5, 1.25], 1.5, usage=5, texts=["ab", "abcdef"])
    # the first chunk's tokens arrive with it; the second's over (0.5, 1.25]
    assert token_times(t) == [0.5, 0.5, 0.75, 1.0, 1.25]
    m = request_metrics(t, streamed=True, prefill=1.0, decode=0.25)
    assert m.ttft == 0.5 and m.itl == [0.0, 0.25, 0.25, 0.25] and m.tpot == 0.25
    assert m.tokens == 5 and m.fluidity == 1.0


def test_a_whole_answer_in_one_chunk() -> None:
    # a server that sends the text whole (bbx serve over a remote or fake backend)
    m = request_metrics(trace(0.0, [0.5], 0.75, usage=4), streamed=True, prefill=1.0,
                        decode=0.125)
    assert m.ttft == 0.5 and m.itl == [0.0, 0.0, 0.0] and m.tpot == 0.25 / 3
    assert m.fluidity == 1.0


def test_percentiles_are_numpys_linear_ones() -> None:
    p = percentiles([float(x) for x in range(1, 11)])
    assert p == {"p50": 5.5, "p90": pytest.approx(9.1, abs=1e-12),
                 "p99": pytest.approx(9.91, abs=1e-12), "mean": 5.5}
    assert percentiles([0.25]) == {"p50": 0.25, "p90": 0.25, "p99": 0.25, "mean": 0.25}
    assert percentiles([])["p50"] is None


def test_summary_rates_goodput_and_failures() -> None:
    traces = [trace(0.0, [0.25, 0.5], 0.5, usage=2),      # TTFT 0.25, TPOT 0.25
              trace(0.5, [1.0, 1.125], 1.25, usage=2),    # TTFT 0.5, TPOT 0.25
              trace(1.0, [], 2.0, error="500: boom")]     # failed
    s, per = summarize(traces, True, parse_pairs("ttft=300ms,tpot=250ms", ("ttft", "tpot"),
                                                 "--slo"), prefill=0.5, decode=0.25)
    assert per[2] is None
    assert (s["requests"], s["ok"], s["failed"]) == (3, 2, 1)
    assert s["errors"] == {"500: boom": 1}
    assert s["duration_s"] == 2.0 and s["requests_per_s"] == 1.0
    assert s["output_tokens"] == 4 and s["output_tokens_per_s"] == 2.0
    # only the first request meets both SLOs (the second's TTFT is 0.5 s)
    assert s["goodput"]["requests_per_s"] == 0.5
    assert s["goodput"]["fraction"] == 1 / 3
    assert s["ttft_s"]["p50"] == 0.375 and s["tpot_s"]["mean"] == 0.25
    assert s["itl_s"]["mean"] == 0.1875  # pooled: 0.25 and 0.125
    assert s["e2e_s"]["p50"] == 0.625
    assert s["fluidity"]["mean"] == 1.0 and s["fluidity"]["p10"] == 1.0
    # scoring runs: latency and items only
    s2, _ = summarize([trace(0.0, [], 0.5), trace(0.5, [], 1.0)], False, {}, 1.0, 0.1)
    assert s2["requests_per_s"] == 2.0 and "ttft_s" not in s2
    assert s2["goodput"]["requests_per_s"] == 2.0  # no SLO: every finished request is good


def test_durations_and_slo_strings() -> None:
    assert parse_duration("500ms") == 0.5 and parse_duration("1.5s") == 1.5
    assert parse_duration("250") == 0.25  # bare numbers are milliseconds, as vLLM's
    assert parse_duration("2000us") == 0.002
    assert parse_pairs("ttft=1s, tpot=50ms", ("ttft", "tpot"), "--slo") == {
        "ttft": 1.0, "tpot": 0.05}
    with pytest.raises(BbxError, match="duration"):
        parse_duration("fast")
    with pytest.raises(BbxError, match="keys among"):
        parse_pairs("latency=1s", ("ttft", "tpot"), "--slo")


def test_poisson_arrivals_are_seeded_and_have_the_mean_rate() -> None:
    a = poisson_offsets(10.0, 20000, seed=3)
    assert a == poisson_offsets(10.0, 20000, seed=3)
    assert a != poisson_offsets(10.0, 20000, seed=4)
    assert all(x < y for x, y in zip(a, a[1:], strict=False))
    # mean gap 1/rate: the standard error over 20000 gaps is 0.7% of it
    assert a[-1] / len(a) == pytest.approx(0.1, rel=0.03)
    with pytest.raises(BbxError):
        poisson_offsets(0.0, 5, seed=0)


def test_schedules_are_bounded_by_requests_and_duration() -> None:
    in_flight, peak = 0, 0

    async def send(i: int, due: float) -> int:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        await asyncio.sleep(0)
        in_flight -= 1
        return i

    out = asyncio.run(drive(Schedule("concurrency", 3, requests=7), send))
    assert out == list(range(7)) and peak <= 3
    assert asyncio.run(drive(Schedule("rate", rate=5000.0, seed=1, requests=9), send)) == \
        list(range(9))
    # the duration bound, on a clock that moves one second per reading
    ticks = iter(range(1000))
    out = asyncio.run(drive(Schedule("sync", requests=100, duration=5.0), send,
                            clock=lambda: float(next(ticks))))
    assert 1 <= len(out) < 5
    with pytest.raises(BbxError, match="rate"):
        Schedule("rate")
    with pytest.raises(BbxError, match="mode"):
        Schedule("burst")
