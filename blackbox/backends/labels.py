"""How label words meet a server's answers: top-k matching, floors, and reading replies.

**Completions** (the label word continues the prompt): a label word is credited with the
log-prob of the top-k token whose text is exactly the word (``" positive"``, leading
space included).

**Chat** (the label word *starts the assistant's reply*, which has no leading space): a
label word is compared by its :func:`chat_word` form, stripped of surrounding whitespace
and case-folded (``" positive"`` -> ``"positive"``), and credited with the log-sum-exp of
every top-k token whose stripped, case-folded text equals it (``"positive"``,
``"Positive"``, ``" POSITIVE"``: one answer written several ways). Words outside the top-k
are recovered by the backend with ``logit_bias`` on the first token of ``word.strip()``
(that spelling only), else get :func:`floor`.

**Replies** (``label_logprobs: generate``): :func:`parse_reply` maps a generated answer to a
label word: exact (after stripping), then the longest word that the reply, case-folded
and with whitespace collapsed, starts with; else unparsed. :func:`reply_row` turns the
labels of one or more replies into scores.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

GENERATE_FLOOR = -20.0  # the score of a label no reply chose (e^-20: below any frequency
# of up to 10^8 samples, and finite, so losses and softmaxes stay defined)


def chat_word(word: str) -> str:
    """A label word as the start of a chat reply, for comparison: stripped, case-folded."""
    return " ".join(word.split()).casefold()


def logsumexp(values: Sequence[float]) -> float:
    """``log(sum(exp(v)))`` without overflow."""
    m = max(values)
    return m + math.log(sum(math.exp(v - m) for v in values))


def match_top(top: Sequence[tuple[str, float]], words: Sequence[str],
              chat: bool) -> dict[str, float]:
    """The label words found in a top-k list (see the module docs), word -> log-prob."""
    found: dict[str, float] = {}
    for w in words:
        if chat:
            key = chat_word(w)
            hits = [v for t, v in top if key and chat_word(t) == key]
            if hits:
                found[w] = logsumexp(hits)
        else:
            hits = [v for t, v in top if t == w]
            if hits:
                found[w] = max(hits)  # one entry per text on completions servers
    return found


def floor(top: Sequence[tuple[str, float]]) -> float:
    """The score of a word outside the top-k: the smaller of the lowest top-k log-prob and
    the log of the mass outside the top-k, an upper bound on its true log-prob (``0.0``,
    nothing known, for an empty top-k: a reply that ended at once)."""
    if not top:
        return 0.0
    # every entry is its own token (two ids may share a text), so each adds its mass
    rest = 1.0 - sum(math.exp(v) for _, v in top)
    return min(min(v for _, v in top), math.log(max(1e-300, rest)))


def parse_reply(reply: str, words: Sequence[str]) -> int | None:
    """The index of the label word a reply gives, or ``None`` (unparsed).

    1. exact: the reply stripped equals a word stripped (the first such word);
    2. prefix: the reply, stripped, case-folded and with runs of whitespace collapsed,
       starts with the word in the same form; the longest such word wins (``"very good"``
       before ``"very"``), the first listed among equals.
    """
    stripped = reply.strip()
    for i, w in enumerate(words):
        if stripped == w.strip() and stripped:
            return i
    text = chat_word(reply)
    best: int | None = None
    for i, w in enumerate(words):
        key = chat_word(w)
        if key and text.startswith(key) and (best is None or len(key) > len(chat_word(
                words[best]))):
            best = i
    return best


def reply_row(labels: Sequence[int | None], n_words: int) -> list[float]:
    """Scores from the labels of ``len(labels)`` replies: ``log(count / n)`` for each label
    chosen, :data:`GENERATE_FLOOR` for the rest; one reply gives ``0.0`` for its label; all
    unparsed (or no replies) gives the floor everywhere."""
    counts = [0] * n_words
    for lab in labels:
        if lab is not None:
            counts[lab] += 1
    n = len(labels)
    return [math.log(c / n) if c else GENERATE_FLOOR for c in counts]
