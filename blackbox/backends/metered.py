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

The budget, the usage and the ledger rows' contents live in :mod:`blackbox.backends.budget`.

**A call that fails part-way.** The inner backend may answer a batch in parts (the remote
backend sends one request per prompt, or per chunk of ``batch_size``, several at a time)
and hands each part's answers over as they arrive, in the same scope as its usage
(:func:`~blackbox.backends.usage.deliver`). When the call raises (a request failed after
its retries, an interrupt), those answers are cached and get their paid ledger rows
(one per item, with the usage their responses reported) before the error is re-raised;
items with no answer get no row (a rerun pays for them, and writes their row then), though
the budget keeps their bound charged, since they may have been paid for. So a rerun pays
only for what is missing, and no item is paid twice (a metered backend inside a metered
call delivers them, and its cache hits, upwards in turn). A backend that delivers nothing (the
local and fake ones answer a batch whole) loses the failed call's answers, as before.

A run killed midway and restarted on the same cache pays again for nothing it already had.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from blackbox.backends import usage as usage_scope
from blackbox.backends.abilities import require
from blackbox.backends.base import Adapter, Backend, Capabilities, Position, normalize_adapter
from blackbox.backends.budget import (
    DEFAULT_MAX_TOKENS,
    MISSING_PRICE,
    Budget,
    Meter,
    Usage,
    usage_bounds,
)
from blackbox.backends.pricing import Pricing
from blackbox.backends.usage import TokenUsage

__all__ = ["DEFAULT_MAX_TOKENS", "MISSING_PRICE", "Budget", "MeteredBackend", "Usage",
           "canonical_key", "label_logprobs_rows", "usage_bounds"]


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
        self.meter = Meter(budget, pricing)  # budget, usage, prices: blackbox.backends.budget
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

    @property
    def budget(self) -> Budget:
        """The limits checked before each call."""
        return self.meter.budget

    @property
    def usage(self) -> Usage:
        """What has been paid for so far."""
        return self.meter.usage

    @property
    def pricing(self) -> Pricing | None:
        """The backend's price (``None``: unpriced, no dollars)."""
        return self.meter.pricing

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
        meter = self.meter
        bounds = meter.bounds(self.inner, verb, [items[i] for i in miss],
                              [texts[i] for i in miss])
        reserved = meter.reserve(verb, len(items), bounds)
        t0 = time.perf_counter()
        sink: usage_scope.UsageSink | None = None
        try:
            with usage_scope.collect(len(miss)) as sink:
                fresh = compute(miss) if miss else []
        except BaseException:
            # what answered before the failure reported its usage; the rest may have been
            # paid for all the same: charge its bound. What arrived is kept (cache, ledger)
            real: list[TokenUsage | None] = sink.per_item() if sink is not None \
                else [None] * len(miss)
            paid = meter.settle(bounds, real, reserved)
            got = sink.answers() if sink is not None else {}
            self._keep_arrived(verb, keys, miss, got, paid, time.perf_counter() - t0,
                               cacheable, {i: results[i] for i in range(len(items)) if hit[i]})
            raise
        latency = (time.perf_counter() - t0) / max(1, len(miss))
        paid = meter.settle(bounds, sink.per_item(), reserved)
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
        self._write_ledger(meter.ledger_rows(verb, keys, miss, paid, latency))
        return results

    def _keep_arrived(self, verb: str, keys: list[str], miss: list[int], got: dict[int, Any],
                      paid: list[tuple[TokenUsage, bool]], elapsed: float, cacheable: bool,
                      hits: dict[int, Any]) -> None:
        """A failed call: keep the answers the inner backend delivered before it failed
        (``got``, by index into ``miss``): cached, one paid ledger row each (the rest get
        their rows when a rerun pays for them). Metered inside a metered call, they (and the
        cache hits) are delivered upwards with their usage, for the outer call to keep."""
        arrived = sorted(j for j in got if 0 <= j < len(miss))
        if arrived and self._cache is not None and cacheable:
            for j in arrived:
                self._cache.set(keys[miss[j]], got[j])
        if arrived:
            self._write_ledger(self.meter.ledger_rows(
                verb, [keys[miss[j]] for j in arrived], list(range(len(arrived))),
                [paid[j] for j in arrived], elapsed / len(arrived)))
        if usage_scope.active():
            by_key = {keys[miss[j]]: got[j] for j in arrived}
            charged = {miss[j]: paid[j][0] for j in range(len(miss))}
            for i, k in enumerate(keys):
                with usage_scope.serving([i]):
                    use = charged.get(i, TokenUsage())  # hits and repeats: nothing
                    usage_scope.report(use.prompt_tokens, use.completion_tokens)
                    if i in hits:
                        usage_scope.deliver([hits[i]])
                    elif k in by_key:
                        usage_scope.deliver([by_key[k]])

    def _write_ledger(self, lines: list[str]) -> None:
        if self._ledger is not None and lines:
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

    # -- optional abilities (blackbox.backends.abilities) ---------------------------------
    # Each checks the inner backend's flag first, so a missing ability is a BbxError that
    # names it. The query-costing one (label_logprobs_rows) is metered above; these are not
    # model queries: static metadata (a token list, adapter names), weights read where they
    # are, or a server-side write. They pass through unmetered on purpose: nothing to
    # count against a query or token budget, and no answer worth caching per run.

    def vocabulary(self) -> list[str]:
        """The inner backend's token list (``vocabulary`` ability; free metadata)."""
        require(self.inner, "vocabulary")
        return self.inner.vocabulary()  # type: ignore[attr-defined]

    def token_embeddings(self, which: str = "output") -> Any:
        """The inner backend's embedding table (``token_embeddings``; weights, not a query)."""
        require(self.inner, "token_embeddings")
        return self.inner.token_embeddings(which)  # type: ignore[attr-defined]

    def list_adapters(self) -> list[str]:
        """The inner backend's adapter names (``adapters`` ability; free metadata)."""
        require(self.inner, "adapters")
        return self.inner.list_adapters()  # type: ignore[attr-defined]

    def materialize_adapter(self, name: str, adapter: Adapter) -> dict[str, Any]:
        """Save a mixture server-side (``materialize``): a write, not a model query."""
        require(self.inner, "materialize")
        return self.inner.materialize_adapter(name, adapter)  # type: ignore[attr-defined]

    def adapter_repository(self) -> Any:
        """The inner backend's adapter repository (``repository``; white-box, local)."""
        require(self.inner, "repository")
        return self.inner.adapter_repository()  # type: ignore[attr-defined]

    def model_source(self) -> Any:
        """The inner backend's model files (``engine`` ability; local, not a query)."""
        require(self.inner, "engine")
        return self.inner.model_source()  # type: ignore[attr-defined]

    def close(self, close_inner: bool = True) -> None:
        """Close the ledger and the cache; the inner backend too, unless it is borrowed."""
        if self._ledger is not None:
            self._ledger.close()
            self._ledger = None
        if self._cache is not None:
            self._cache.close()
        if close_inner:
            self.inner.close()


def label_logprobs_rows(backend: Backend, prompts: list[str], label_words: list[str],
                        adapters: list[Adapter]) -> list[list[float]]:
    """Per prompt its own adapter, through the best route ``backend`` offers.

    A backend with the ``rows`` ability (remote: concurrent requests that the server
    gathers into shared batches; local: per-row mixtures in one forward pass) gets the whole
    list at once; any other backend is called once per distinct adapter.
    """
    if backend.capabilities.rows:
        return backend.label_logprobs_rows(prompts, label_words, adapters)  # type: ignore[attr-defined]
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
