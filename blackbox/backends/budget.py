"""The metered wrapper's budget and ledger: what a call may cost before it is sent, what
it cost after, in queries, tokens and dollars (see :mod:`blackbox.backends.metered`).

:class:`Meter` checks each call's conservative projection (:func:`usage_bounds`) against
the :class:`Budget` and reserves it, so concurrent callers cannot overspend together; when
the call returns, the reservation is replaced by the usage the backend reported per item
(:mod:`blackbox.backends.usage`), or by the projection where it reported none
(``estimated``). A real usage above its projection (a remote tokenizer denser than the
estimate) scales every later prompt projection up by the worst ratio seen.
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from blackbox.backends.base import Backend
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


class Meter:
    """Budget, usage and prices of one metered backend (thread-safe)."""

    def __init__(self, budget: Budget | None = None, pricing: Pricing | None = None) -> None:
        self.budget = budget or Budget()
        if self.budget.max_usd is not None and pricing is None:
            raise BbxError(MISSING_PRICE)
        self.pricing = pricing
        self.usage = Usage()
        self.scale = 1.0  # worst real / projected prompt tokens seen (>= 1)
        self._lock = threading.Lock()

    def bounds(self, backend: Backend, verb: str, items: list[dict[str, Any]],
               texts: list[str]) -> list[TokenUsage]:
        """The conservative projection of each item's usage, scaled by what reality taught."""
        if not items:
            return []
        bounds = usage_bounds(backend, verb, items, texts)
        if self.scale > 1.0:
            bounds = [TokenUsage(math.ceil(b.prompt_tokens * self.scale), b.completion_tokens)
                      for b in bounds]
        return bounds

    def cost(self, usages: Sequence[TokenUsage]) -> float:
        """What ``usages`` cost at the backend's price (0 when unpriced)."""
        if self.pricing is None:
            return 0.0
        return sum(self.pricing.usd(u) for u in usages)

    def reserve(self, verb: str, n_items: int, bounds: list[TokenUsage]) -> float:
        """Check the budget for ``bounds`` and reserve them (raises before anything is sent)."""
        n = len(bounds)
        prompt = sum(b.prompt_tokens for b in bounds)
        cost = self.cost(bounds)
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

    def settle(self, bounds: list[TokenUsage], real: list[TokenUsage | None],
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
                    self.scale = max(self.scale, got.prompt_tokens / b.prompt_tokens)
            u.estimated += sum(est for _, est in paid)
            u.reserved_usd -= reserved
            u.usd += self.cost([got for got, _ in paid])
        return paid

    def ledger_rows(self, verb: str, keys: list[str], miss: list[int],
                    paid: list[tuple[TokenUsage, bool]], latency: float) -> list[str]:
        """One ``ledger.jsonl`` line per item: what it cost (0 when cached)."""
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
        return lines


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
