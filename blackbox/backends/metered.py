"""The metered wrapper: cache → budget → call → ledger. The ONLY place calls are counted.

Every backend a method uses is wrapped in :class:`MeteredBackend`:

1. each item of a batched request (one prompt, one pair, ...) gets a content address: the
   sha256 of the canonical JSON of the request plus the backend's fingerprint;
2. cached items are answered from a ``diskcache`` store (JSON values, never pickle);
3. the items still to pay for are checked against the budget BEFORE the call, on a
   conservative projection of their usage (prompt tokens counted or over-estimated,
   completion tokens = the most the request may write; see :func:`usage_bounds`) — a
   request that would overspend raises :class:`~blackbox.errors.BudgetExceeded` and nothing
   is sent; the projection is reserved, so concurrent callers cannot overspend together;
4. the misses go to the inner backend in one batched call, inside a
   :func:`~blackbox.backends.usage.collect` scope: the backend reports each response's real
   token usage (:mod:`blackbox.backends.usage`), which then replaces the reservation;
5. one ``ledger.jsonl`` row per item records verb, key, cached flag, prompt and completion
   tokens, dollars (at the backend's :class:`~blackbox.backends.pricing.Pricing`) and
   latency. Cached items cost nothing.

A backend that reports no usage for an item is charged its projection (``estimated`` in
the ledger row). A real usage above its projection (a remote tokenizer denser than the
estimate) scales every later prompt projection up by the worst ratio seen, so the paid
total stays under ``max_usd`` from then on.

A run killed midway and restarted on the same cache pays again for nothing it already had.
"""

from __future__ import annotations

import hashlib
import json
import math
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from blackbox.backends import usage as usage_scope
from blackbox.backends.base import Adapter, Backend, Capabilities, Position, normalize_adapter
from blackbox.backends.pricing import Pricing
from blackbox.backends.usage import TokenUsage
from blackbox.errors import BbxError, BudgetExceeded

#: Completion tokens projected for a ``generate`` request that names no ``max_tokens``
#: (the remote backend's default).
DEFAULT_MAX_TOKENS = 64


@dataclass
class Budget:
    """Limits on what a run may pay for (``None`` = unlimited)."""

    max_queries: int | None = None
    max_tokens: int | None = None  # prompt tokens
    max_usd: float | None = None  # needs the backend's pricing


@dataclass
class Usage:
    """What a metered backend has answered so far (real counts where the backend reported
    them, the projection where it did not)."""

    queries: int = 0  # items paid for (sent to the inner backend)
    tokens: int = 0  # prompt tokens of the items paid for
    completion_tokens: int = 0  # completion tokens of the items paid for
    usd: float = 0.0  # what they cost (0 without pricing)
    cached: int = 0  # items answered from the cache
    estimated: int = 0  # paid items no response reported usage for (charged the projection)
    by_verb: dict[str, int] = field(default_factory=dict)
    reserved_usd: float = 0.0  # projections of calls in flight (not yet reconciled)

    def as_dict(self, priced: bool = True) -> dict[str, Any]:
        """A JSON-ready view (``usd`` is ``None`` when the backend has no price)."""
        return {"queries": self.queries, "tokens": self.tokens, "prompt_tokens": self.tokens,
                "completion_tokens": self.completion_tokens,
                "usd": round(self.usd, 6) if priced else None, "cached": self.cached,
                "estimated": self.estimated, "by_verb": dict(self.by_verb)}


def canonical_key(payload: dict[str, Any]) -> str:
    """sha256 of the canonical JSON of ``payload`` (sorted keys, no whitespace)."""
    blob = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


class MeteredBackend:
    """Wrap a backend with a content-addressed cache, a budget and a ledger."""

    def __init__(
        self,
        inner: Backend,
        cache_dir: str | Path | None = None,
        ledger_path: str | Path | None = None,
        budget: Budget | None = None,
        pricing: Pricing | None = None,
    ) -> None:
        self.inner = inner
        self.name = inner.name
        self.budget = budget or Budget()
        if self.budget.max_usd is not None and pricing is None:
            raise BbxError(MISSING_PRICE)
        self.pricing = pricing
        self.usage = Usage()
        self._scale = 1.0  # worst real / projected prompt tokens seen (>= 1)
        self._lock = threading.Lock()
        self._cache = None
        if cache_dir is not None:
            import diskcache

            self._cache = diskcache.Cache(str(cache_dir), disk=diskcache.JSONDisk,
                                          disk_compress_level=0)
        self._ledger = None
        if ledger_path is not None:
            Path(ledger_path).parent.mkdir(parents=True, exist_ok=True)
            self._ledger = open(ledger_path, "a", encoding="utf-8")  # noqa: SIM115 - lives with self

    # -- pass-through properties ---------------------------------------------------------
    @property
    def capabilities(self) -> Capabilities:
        return self.inner.capabilities

    @property
    def fingerprint(self) -> str:
        return self.inner.fingerprint

    # -- the one metering path -----------------------------------------------------------
    def _metered(
        self,
        verb: str,
        items: list[dict[str, Any]],
        texts: list[str],
        compute: Callable[[list[int]], list[Any]],
        cacheable: bool = True,
    ) -> list[Any]:
        fp = self.inner.fingerprint
        keys = [canonical_key({"fp": fp, "verb": verb, **item}) for item in items]
        results: list[Any] = [None] * len(items)
        hit = [False] * len(items)
        if self._cache is not None and cacheable:
            for i, k in enumerate(keys):
                value = self._cache.get(k)
                if value is not None:
                    results[i], hit[i] = value, True
        # one query per distinct missing key, even if a batch repeats an item
        first: dict[str, int] = {}
        for i, k in enumerate(keys):
            if not hit[i] and k not in first:
                first[k] = i
        miss = list(first.values())
        bounds = self._bounds(verb, [items[i] for i in miss], [texts[i] for i in miss])
        reserved = self._reserve(verb, len(items), bounds)
        t0 = time.perf_counter()
        sink: usage_scope.UsageSink | None = None
        try:
            with usage_scope.collect(len(miss)) as sink:
                fresh = compute(miss) if miss else []
        except BaseException:
            # what answered before the failure reported its usage; the rest may have been
            # paid for all the same: charge its bound
            self._settle(bounds, sink.per_item() if sink is not None else [None] * len(miss),
                         reserved)
            raise
        latency = (time.perf_counter() - t0) / max(1, len(miss))
        paid = self._settle(bounds, sink.per_item(), reserved)
        if usage_scope.active():  # metered inside a metered call: report upwards, cached = 0
            got = dict(zip(miss, paid, strict=True))
            usage_scope.report_items([got[i][0] if i in got else TokenUsage()
                                      for i in range(len(items))])
        by_key = {keys[i]: r for i, r in zip(miss, fresh, strict=True)}
        for i, k in enumerate(keys):
            if not hit[i]:
                results[i] = by_key[k]
        if self._cache is not None and cacheable:
            for i in miss:
                self._cache.set(keys[i], results[i])
        self._write_ledger(verb, keys, miss, paid, latency)
        return results

    def _bounds(self, verb: str, items: list[dict[str, Any]],
                texts: list[str]) -> list[TokenUsage]:
        """The conservative projection of each item's usage, scaled by what reality taught."""
        if not items:
            return []
        bounds = usage_bounds(self.inner, verb, items, texts)
        if self._scale > 1.0:
            bounds = [TokenUsage(math.ceil(b.prompt_tokens * self._scale), b.completion_tokens)
                      for b in bounds]
        return bounds

    def _cost(self, usages: Sequence[TokenUsage]) -> float:
        if self.pricing is None:
            return 0.0
        return sum(self.pricing.usd(u) for u in usages)

    def _reserve(self, verb: str, n_items: int, bounds: list[TokenUsage]) -> float:
        """Check the budget for ``bounds`` and reserve them (raises before anything is sent)."""
        n = len(bounds)
        prompt = sum(b.prompt_tokens for b in bounds)
        cost = self._cost(bounds)
        with self._lock:
            b, u = self.budget, self.usage
            if b.max_queries is not None and u.queries + n > b.max_queries:
                raise BudgetExceeded(
                    f"query budget reached: {u.queries} of {b.max_queries} used, "
                    f"{n} more needed; raise the budget to continue"
                )
            if b.max_tokens is not None and u.tokens + prompt > b.max_tokens:
                raise BudgetExceeded(
                    f"token budget reached: {u.tokens} of {b.max_tokens} used, "
                    f"{prompt} more needed; raise the budget to continue"
                )
            if b.max_usd is not None and u.usd + u.reserved_usd + cost > b.max_usd:
                raise BudgetExceeded(
                    f"dollar budget reached: ${u.usd + u.reserved_usd:.6f} of "
                    f"${b.max_usd:.6f} used, up to ${cost:.6f} more needed; raise "
                    "budget.max_usd to continue"
                )
            u.queries += n
            u.tokens += prompt
            u.completion_tokens += sum(x.completion_tokens for x in bounds)
            u.reserved_usd += cost
            u.cached += n_items - n
            u.by_verb[verb] = u.by_verb.get(verb, 0) + n
        return cost

    def _settle(self, bounds: list[TokenUsage], real: list[TokenUsage | None],
                reserved: float) -> list[tuple[TokenUsage, bool]]:
        """Replace the reservation with the real usage (the bound where none was reported);
        per item (usage charged, whether it is an estimate)."""
        paid = [(r, False) if r is not None else (b, True)
                for b, r in zip(bounds, real, strict=True)]
        with self._lock:
            u = self.usage
            for (got, _), b in zip(paid, bounds, strict=True):
                u.tokens += got.prompt_tokens - b.prompt_tokens
                u.completion_tokens += got.completion_tokens - b.completion_tokens
                if b.prompt_tokens and got.prompt_tokens > b.prompt_tokens:
                    self._scale = max(self._scale, got.prompt_tokens / b.prompt_tokens)
            u.estimated += sum(est for _, est in paid)
            u.reserved_usd -= reserved
            u.usd += self._cost([got for got, _ in paid])
        return paid

    def _write_ledger(self, verb: str, keys: list[str], miss: list[int],
                      paid: list[tuple[TokenUsage, bool]], latency: float) -> None:
        if self._ledger is None:
            return
        now = time.time()
        got = dict(zip(miss, paid, strict=True))
        lines = []
        for i, k in enumerate(keys):
            use, est = got.get(i, (TokenUsage(), False))
            row: dict[str, Any] = {
                "t": round(now, 3), "verb": verb, "key": k[:16], "cached": i not in got,
                "tokens": use.prompt_tokens, "prompt_tokens": use.prompt_tokens,
                "completion_tokens": use.completion_tokens,
                "usd": self.pricing.usd(use) if self.pricing is not None else None,
                "latency_s": round(latency, 5) if i in got else 0.0}
            if est:
                row["estimated"] = True
            lines.append(json.dumps(row))
        with self._lock:
            self._ledger.write("\n".join(lines) + "\n")
            self._ledger.flush()

    # -- verbs ---------------------------------------------------------------------------
    def label_logprobs(
        self, prompts: Sequence[str], label_words: Sequence[str], adapter: Adapter = None
    ) -> list[list[float]]:
        adapter = normalize_adapter(adapter)
        prompts, words = list(prompts), list(label_words)
        items = [{"prompt": p, "label_words": words, "adapter": adapter} for p in prompts]
        return self._metered(
            "label_logprobs", items, prompts,
            lambda idx: self.inner.label_logprobs([prompts[i] for i in idx], words, adapter),
        )

    def label_logprobs_rows(
        self, prompts: Sequence[str], label_words: Sequence[str], adapters: Sequence[Adapter]
    ) -> list[list[float]]:
        """:meth:`label_logprobs` with its own adapter per prompt, in one call.

        A population of mixtures (Evo-Merging) is scored this way: one batch, counted and
        cached item by item exactly like :meth:`label_logprobs` (same keys), and answered
        by the inner backend in shared forward passes where it can (see
        :func:`label_logprobs_rows`).
        """
        prompts, words = list(prompts), list(label_words)
        specs = [normalize_adapter(a) for a in adapters]
        if len(specs) != len(prompts):
            raise ValueError(f"{len(prompts)} prompts but {len(specs)} adapters")
        items = [{"prompt": p, "label_words": words, "adapter": s}
                 for p, s in zip(prompts, specs, strict=True)]
        return self._metered(
            "label_logprobs", items, prompts,
            lambda idx: label_logprobs_rows(self.inner, [prompts[i] for i in idx], words,
                                            [specs[i] for i in idx]),
        )

    def score(
        self, prompts: Sequence[str], continuations: Sequence[str], adapter: Adapter = None
    ) -> list[list[float]]:
        adapter = normalize_adapter(adapter)
        prompts, conts = list(prompts), list(continuations)
        items = [{"prompt": p, "continuation": c, "adapter": adapter}
                 for p, c in zip(prompts, conts, strict=True)]
        return self._metered(
            "score", items, [p + c for p, c in zip(prompts, conts, strict=True)],
            lambda idx: self.inner.score([prompts[i] for i in idx], [conts[i] for i in idx],
                                         adapter),
        )

    def hidden(
        self, prompts: Sequence[str], position: Position = "last", adapter: Adapter = None
    ) -> list[list[float]]:
        adapter = normalize_adapter(adapter)
        prompts = list(prompts)
        items = [{"prompt": p, "position": position, "adapter": adapter} for p in prompts]
        return self._metered(
            "hidden", items, prompts,
            lambda idx: self.inner.hidden([prompts[i] for i in idx], position, adapter),
        )

    def generate(
        self, prompts: Sequence[str], params: dict[str, Any] | None = None, adapter: Adapter = None
    ) -> list[str]:
        adapter = normalize_adapter(adapter)
        params = dict(params or {})
        prompts = list(prompts)
        # sampled text is only reusable under an explicit sample index (params["seed"])
        cacheable = float(params.get("temperature", 0.0)) == 0.0 or "seed" in params
        items = [{"prompt": p, "params": params, "adapter": adapter} for p in prompts]
        return self._metered(
            "generate", items, prompts,
            lambda idx: self.inner.generate([prompts[i] for i in idx], params, adapter),
            cacheable=cacheable,
        )

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        texts = list(texts)
        items = [{"text": t} for t in texts]
        return self._metered("embed", items, texts,
                             lambda idx: self.inner.embed([texts[i] for i in idx]))

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        return self.inner.count_tokens(texts)

    def close(self, close_inner: bool = True) -> None:
        """Close the ledger and the cache; the inner backend too, unless it is borrowed."""
        if self._ledger is not None:
            self._ledger.close()
            self._ledger = None
        if self._cache is not None:
            self._cache.close()
        if close_inner:
            self.inner.close()


MISSING_PRICE = ("budget.max_usd is set but the backend has no price: add backend.pricing: "
                 "{input_per_mtok: USD, output_per_mtok: USD} (dollars per million tokens)")


def usage_bounds(backend: Backend, verb: str, items: list[dict[str, Any]], texts: list[str],
                 expected: bool = False) -> list[TokenUsage]:
    """Per item, the most it may cost (``expected``: what it typically costs, for dry runs).

    A backend that knows its requests (the remote backend: how many per item, which
    ``max_tokens``) answers through its own ``usage_bounds``; any other gets prompt tokens
    from ``count_tokens`` and completion tokens from the request: ``max_tokens`` for
    ``generate``, one token for label scores, none for the rest.
    """
    own = getattr(backend, "usage_bounds", None)
    if own is not None:
        return list(own(verb, items, texts, expected=expected))
    counts = backend.count_tokens(texts)
    out = []
    for item, n in zip(items, counts, strict=True):
        if verb == "generate":
            completion = int((item.get("params") or {}).get("max_tokens") or DEFAULT_MAX_TOKENS)
        else:
            completion = 1 if verb == "label_logprobs" else 0
        out.append(TokenUsage(int(n), completion))
    return out


def label_logprobs_rows(backend: Backend, prompts: list[str], label_words: list[str],
                        adapters: list[Adapter]) -> list[list[float]]:
    """Per prompt its own adapter, through the best route ``backend`` offers.

    A backend with ``label_logprobs_rows`` (remote: concurrent requests that the server
    gathers into shared batches) or ``call_rows`` (local: per-row mixtures in one forward
    pass) gets the whole list at once; any other backend is called once per distinct adapter.
    """
    rows = getattr(backend, "label_logprobs_rows", None)
    if rows is not None:
        return rows(prompts, label_words, adapters)
    call_rows = getattr(backend, "call_rows", None)
    if call_rows is not None:
        return call_rows("label_logprobs", (prompts, label_words), adapters)
    groups: dict[str, list[int]] = {}
    for i, a in enumerate(adapters):
        groups.setdefault(json.dumps(a, sort_keys=True), []).append(i)
    out: list[Any] = [None] * len(prompts)
    for idx in groups.values():
        with usage_scope.serving(idx):  # the subset's reports credit these rows
            got = backend.label_logprobs([prompts[i] for i in idx], label_words,
                                         adapters[idx[0]])
        for i, r in zip(idx, got, strict=True):
            out[i] = r
    return out
