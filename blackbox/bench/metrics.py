"""What a benchmark's timings mean, from one request's trace to the run's summary.

Times are seconds on one monotonic clock. For a streamed request:

* **TTFT**: from sending the request to the first chunk that carries text;
* **token arrivals**: each text-carrying chunk's tokens arrive with it. When the usage total
  (``stream_options.include_usage``) says the chunks carry more tokens than there are
  chunks, the tokens are apportioned to the chunks by the length of their text (at least
  one each, largest remainders) and a later chunk's ``k`` tokens are **spread evenly over
  that chunk's interval** (the time since the previous chunk): arrivals at
  ``prev + m·(t - prev)/k`` for ``m = 1..k``, the last at the chunk's own arrival. The first
  chunk's tokens all arrive with it: its interval is the prefill, which belongs to the
  first token. Without a usage total, or with fewer tokens than chunks, each chunk is one
  token;
* **ITL**: the gaps between consecutive token arrivals (pooled over requests);
* **TPOT**: ``(e2e - TTFT) / (tokens - 1)``, vLLM's definition (None for one token);
* **e2e**: from sending to the end of the response (the stream's ``[DONE]``);
* **fluidity-index** (Etalon): with target prefill latency ``D_p`` and decode latency
  ``D_d``, token ``i`` starts when token ``i-1`` arrived (token 1 when the request was sent)
  and takes ``s_i``; its deadline is ``start_i + D + slack_{i-1}`` (``D = D_p`` for token 1,
  ``D_d`` after). Met: ``slack_i = slack_{i-1} + D - s_i``; missed: ``slack_i = 0``. The
  index is the fraction of the request's tokens that met their deadline.

Percentiles are numpy's (linear interpolation). Rates divide by the run's duration: from
the first request sent to the last one ended. Goodput is the rate of requests that ended
well and met every SLO; a failed request meets none.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from blackbox.errors import BbxError

SLO_KEYS = ("ttft", "tpot", "e2e")
_DURATION = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*(ms|s|us)?\s*$")


@dataclass
class Trace:
    """What the client saw of one request (times in seconds from the run's start)."""

    index: int
    scheduled: float
    start: float
    end: float = 0.0
    error: str | None = None
    items: int = 1
    chunks: list[tuple[float, str]] = field(default_factory=list)  # (arrival, text)
    output_tokens: int | None = None  # the usage total, when the server sent one
    prompt_tokens: int | None = None

    @property
    def ok(self) -> bool:
        """Whether the request ended well (no error)."""
        return self.error is None


def parse_duration(text: str) -> float:
    """``"500ms"``, ``"1.5s"``, ``"200us"`` in seconds; a bare number is milliseconds (as
    vLLM's ``--goodput``)."""
    m = _DURATION.match(text)
    if m is None:
        raise BbxError(f"cannot read {text!r} as a duration: write e.g. 500ms or 1.5s")
    scale = {"ms": 1e-3, "s": 1.0, "us": 1e-6, None: 1e-3}[m.group(2)]
    return float(m.group(1)) * scale


def parse_pairs(text: str | None, keys: Sequence[str], what: str) -> dict[str, float]:
    """``"ttft=500ms,tpot=100ms"`` as ``{"ttft": 0.5, "tpot": 0.1}`` (keys from ``keys``)."""
    out: dict[str, float] = {}
    for part in (text or "").split(","):
        if not part.strip():
            continue
        key, sep, value = part.partition("=")
        key = key.strip().lower()
        if not sep or key not in keys:
            raise BbxError(f"{what}: cannot read {part.strip()!r}: write "
                           f"{keys[0]}=500ms,... with keys among {', '.join(keys)}")
        out[key] = parse_duration(value)
    return out


def chunk_tokens(texts: Sequence[str], total: int | None) -> list[int]:
    """How many tokens each text-carrying chunk holds (see the module docstring)."""
    n = len(texts)
    if total is None or total <= n:
        return [1] * n
    weights = [max(1, len(t)) for t in texts]
    extra = total - n
    shares = [extra * w / sum(weights) for w in weights]
    counts = [1 + int(s) for s in shares]
    left = total - sum(counts)
    # largest remainders first; ties go to the earlier chunk
    for j in sorted(range(n), key=lambda j: (-(shares[j] - int(shares[j])), j))[:left]:
        counts[j] += 1
    return counts


def token_times(trace: Trace) -> list[float]:
    """Each output token's arrival (see the module docstring for multi-token chunks)."""
    counts = chunk_tokens([t for _, t in trace.chunks], trace.output_tokens)
    out: list[float] = []
    prev = trace.start
    for j, ((at, _), k) in enumerate(zip(trace.chunks, counts, strict=True)):
        if j == 0:
            out += [at] * k
        else:
            out += [prev + (at - prev) * m / k for m in range(1, k + 1)]
        prev = at
    return out


def fluidity_index(start: float, arrivals: Sequence[float], prefill: float,
                   decode: float) -> float | None:
    """The fraction of tokens meeting their deadlines, with slack carried over (Etalon;
    see the module docstring). None without tokens."""
    if not arrivals:
        return None
    slack, met, prev = 0.0, 0, start
    for i, at in enumerate(arrivals):
        target = prefill if i == 0 else decode
        took = at - prev
        if took <= target + slack:
            met += 1
            slack += target - took
        else:
            slack = 0.0
        prev = at
    return met / len(arrivals)


@dataclass
class RequestMetrics:
    """One request's numbers (None where they do not apply)."""

    e2e: float
    ttft: float | None = None
    tpot: float | None = None
    itl: list[float] = field(default_factory=list)
    tokens: int = 0
    fluidity: float | None = None


def request_metrics(trace: Trace, streamed: bool, prefill: float, decode: float
                    ) -> RequestMetrics:
    """The metrics of one finished request (``streamed``: a generation workload)."""
    e2e = trace.end - trace.start
    if not streamed:
        return RequestMetrics(e2e=e2e)
    times = token_times(trace)
    out = RequestMetrics(e2e=e2e, tokens=trace.output_tokens if trace.output_tokens
                         is not None else len(times))
    if times:
        out.ttft = times[0] - trace.start
        out.itl = np.diff(times).tolist()
        out.fluidity = fluidity_index(trace.start, times, prefill, decode)
        if len(times) > 1:
            out.tpot = (e2e - out.ttft) / (len(times) - 1)
    return out


def meets(m: RequestMetrics, slo: dict[str, float]) -> bool:
    """Whether a finished request meets every SLO (a metric it lacks cannot miss one)."""
    for key, bound in slo.items():
        value = getattr(m, key)
        if value is not None and value > bound:
            return False
    return True


def percentiles(values: Sequence[float], qs: Sequence[int] = (50, 90, 99)
                ) -> dict[str, float | None]:
    """``{"p50": .., "p90": .., "p99": .., "mean": ..}`` (None for no values)."""
    if not values:
        return {**{f"p{q}": None for q in qs}, "mean": None}
    arr = np.asarray(values, dtype=float)
    return {**{f"p{q}": float(np.percentile(arr, q)) for q in qs}, "mean": float(arr.mean())}


def summarize(traces: Sequence[Trace], streamed: bool, slo: dict[str, float],
              prefill: float, decode: float) -> tuple[dict[str, Any], list[RequestMetrics | None]]:
    """The run's summary and each request's metrics (None for a failed request)."""
    per: list[RequestMetrics | None] = [
        request_metrics(t, streamed, prefill, decode) if t.ok else None for t in traces]
    good = [m for m in per if m is not None]
    duration = max((t.end for t in traces), default=0.0) - min(
        (t.start for t in traces), default=0.0)

    def rate(n: float) -> float | None:
        return n / duration if duration > 0 else None

    met = sum(1 for m in good if meets(m, slo))
    errors = Counter(t.error for t in traces if not t.ok)
    out: dict[str, Any] = {
        "requests": len(traces), "ok": len(good), "failed": len(traces) - len(good),
        "errors": dict(errors.most_common(5)),
        "duration_s": duration,
        "requests_per_s": rate(len(good)),
        "items_per_s": rate(sum(t.items for t, m in zip(traces, per, strict=True) if m)),
        "e2e_s": percentiles([m.e2e for m in good]),
        # how late requests went out against their schedule: a large lag in an open loop
        # means the client, not the server, set the pace
        "send_lag_s": percentiles([t.start - t.scheduled for t in traces]),
        "goodput": {"slo_s": slo, "requests_per_s": rate(met),
                    "fraction": met / len(traces) if traces else None},
    }
    if streamed:
        tokens = sum(m.tokens for m in good)
        flu = [m.fluidity for m in good if m.fluidity is not None]
        out.update({
            "ttft_s": percentiles([m.ttft for m in good if m.ttft is not None]),
            "itl_s": percentiles([x for m in good for x in m.itl]),
            "tpot_s": percentiles([m.tpot for m in good if m.tpot is not None]),
            "output_tokens": tokens,
            "output_tokens_per_s": rate(tokens),
            "fluidity": {"mean": float(np.mean(flu)) if flu else None,
                         "p10": float(np.percentile(flu, 10)) if flu else None,
                         "prefill_deadline_s": prefill, "decode_deadline_s": decode},
        })
    return out, per
