"""What a run will pay, before it pays: each method's plan, projected to tokens and dollars.

Every method package has a ``plan.py`` with one function of one shape,
``plan(recipe, backend) -> list[Stage]``: per stage of the method (as its recipe sets it
up, on an empty cache), the verb it asks, how many items it pays for, and the inputs they
read (all of them where the plan knows them; a sample that stands for them where the run
decides them as it goes, like the prompts a search proposes). ``backend`` is the unmetered
backend, asked only what costs nothing (its tokenizer, its capabilities); a plan never
calls a verb.

:func:`project` turns stages into queries, prompt and completion tokens and dollars with
the backend's typical usage per item (``usage_bounds(..., expected=True)``: the same
model of requests the budget check bounds, at typical rather than worst-case values).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from blackbox.backends.base import Backend
from blackbox.backends.budget import usage_bounds
from blackbox.backends.pricing import Pricing

SAMPLE = 2000  # inputs tokenized per stage at most: the mean of a sample stands for the rest


@dataclass(frozen=True)
class Stage:
    """One stage of a plan: ``queries`` items of ``verb``, reading ``texts`` (or a sample)."""

    name: str
    verb: str
    queries: int
    texts: Sequence[str]
    label_words: Sequence[str] = ()
    params: Mapping[str, Any] = field(default_factory=dict)
    note: str = ""  # what the count assumes (an upper bound, a data-dependent branch, ...)


def distinct(texts: Sequence[str]) -> list[str]:
    """``texts`` without repeats (the cache answers a repeat for free)."""
    return list(dict.fromkeys(texts))


def project(stages: Sequence[Stage], backend: Backend,
            pricing: Pricing | None) -> list[dict[str, Any]]:
    """Per stage: queries, prompt and completion tokens, dollars (``None`` unpriced)."""
    rows = []
    for st in stages:
        texts = list(st.texts)
        if len(texts) > SAMPLE:  # an even spread, so a sorted list is not read from one end
            step = len(texts) / SAMPLE
            texts = [texts[int(i * step)] for i in range(SAMPLE)]
        prompt = completion = 0
        if st.queries and texts:
            items = [{"prompt": t, "label_words": list(st.label_words),
                      "params": dict(st.params)} for t in texts]
            per = usage_bounds(backend, st.verb, items, texts, expected=True)
            # the sample's mean usage, times the stage's queries
            prompt = round(sum(u.prompt_tokens for u in per) * st.queries / len(per))
            completion = round(sum(u.completion_tokens for u in per) * st.queries / len(per))
        usd = None if pricing is None else round(
            (prompt * pricing.input_per_mtok + completion * pricing.output_per_mtok) / 1e6, 6)
        rows.append({"stage": st.name, "verb": st.verb, "queries": st.queries,
                     "prompt_tokens": prompt, "completion_tokens": completion, "usd": usd,
                     **({"note": st.note} if st.note else {})})
    return rows


def total(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The sum of projected rows (``usd`` ``None`` when any row is unpriced)."""
    usd = [r["usd"] for r in rows]
    return {"queries": sum(r["queries"] for r in rows),
            "prompt_tokens": sum(r["prompt_tokens"] for r in rows),
            "completion_tokens": sum(r["completion_tokens"] for r in rows),
            "usd": None if any(u is None for u in usd) else round(sum(usd), 6)}
