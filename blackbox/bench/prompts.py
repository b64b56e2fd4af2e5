"""The prompts a benchmark sends: distinct texts of a task's data, cut to a number of words.

Generation workloads send the cut text itself (a completion continues it; chat sends it as
the user's message); scoring workloads send it in the task's first template, so that the
task's label words are the natural next token. ``repeat`` sends the first prompt every
time (what a prefix or prompt cache gains); otherwise prompts are distinct until the texts
run out, then cycle (the summary says so). ``offset`` starts at a later text, so that several
runs against one server can each send prompts it has not seen (bbx serve, vLLM and
llama.cpp keep what they computed for a prompt).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

from blackbox.errors import BbxError


@dataclass
class Prompts:
    """The prompts, the task's label words, and how many prompts were distinct."""

    texts: list[str]
    label_words: list[str]
    distinct: int

    def batch(self, index: int, size: int) -> list[str]:
        """The ``size`` prompts of request ``index`` (consecutive, cycling)."""
        n = len(self.texts)
        return [self.texts[(index * size + j) % n] for j in range(size)]


def load_prompts(task: str, words: int, templated: bool, repeat: bool,
                 offset: int = 0) -> Prompts:
    """The task's test texts (then its pool, where it has one), deduplicated after cutting
    to ``words`` words, from the ``offset``-th on (cycling); in the task's template when
    ``templated``."""
    from blackbox.data import load_split
    from blackbox.data.tasks import render
    from blackbox.recipes import parse_recipe

    t = parse_recipe({"method": "eval", "task": task}, source="bench").get_task()
    examples = list(load_split(t, "test"))
    with contextlib.suppress(BbxError):  # most tasks have no pool: test texts will do
        examples += load_split(t, "pool")
    seen: dict[str, None] = {}
    for e in examples:
        cut = " ".join(e.text.split()[:words])
        if cut:
            seen.setdefault(cut, None)
    texts = [render(t.template, x) if templated else x for x in seen]
    if not texts:
        raise BbxError(f"task '{t.name}' has no texts to send")
    k = offset % len(texts)
    texts = texts[k:] + texts[:k]
    if repeat:
        texts = texts[:1]
    return Prompts(texts=texts, label_words=list(t.label_words), distinct=len(texts))
