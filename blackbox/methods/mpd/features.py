"""What MPD asks the API for: per example and prompt, a hidden state and label-word log-probs.

Also where the label words come from: each class's word plus its nearest neighbours, by
cosine of the output-embedding rows when the backend exposes its vocabulary (the local
engine), else by the sentence-embedding model over candidate words (any remote API).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from blackbox.backends.abilities import has
from blackbox.data.tasks import render
from blackbox.errors import BbxError

if TYPE_CHECKING:
    from blackbox.backends.base import Backend
    from blackbox.progress import Stages

_ALPHA = re.compile(r"^[A-Za-z]{2,}$")
_WORDS = re.compile(r"[A-Za-z]{3,}")
MAX_FALLBACK_CANDIDATES = 4000


@dataclass
class Features:
    """Per example: ``hidden`` ``(n, P, d)`` and label-word log-probs ``logp`` ``(n, P, W)``."""

    hidden: np.ndarray
    logp: np.ndarray

    def __len__(self) -> int:
        return self.hidden.shape[0]

    def subset(self, prompts: Sequence[int], words: Sequence[int]) -> Features:
        """The features of some prompts and some words (the variants share one query)."""
        p, w = list(prompts), list(words)
        return Features(self.hidden[:, p], self.logp[:, p][:, :, w])


def _is_word(token: str) -> bool:
    """A token that starts a plain word: " great", " Sports", " ICT"; not "ing", " 1999" or
    code identifiers like " InstancePreprocess"."""
    w = token[1:]
    return token.startswith(" ") and bool(_ALPHA.match(w)) and (
        w.islower() or w.istitle() or w.isupper())


def flatten(groups: Sequence[Sequence[str]]) -> tuple[list[str], list[list[int]]]:
    """The flat word list sent to ``label_logprobs`` and each class's indices into it."""
    flat: list[str] = []
    index: list[list[int]] = []
    for g in groups:
        index.append(list(range(len(flat), len(flat) + len(g))))
        flat.extend(g)
    return flat, index


def _pick_neighbours(label_vecs: np.ndarray, cand_vecs: np.ndarray, cand_words: list[str],
                     label_words: Sequence[str], k: int) -> list[list[str]]:
    """Each class: its own word, then the k-1 candidates nearest to it by cosine.

    A candidate goes to at most one class, the one whose label word it is closest to, so the
    groups never share a word (" positive"'s neighbours must not include " negative").
    """
    lv = label_vecs / np.maximum(np.linalg.norm(label_vecs, axis=1, keepdims=True), 1e-12)
    cv = cand_vecs / np.maximum(np.linalg.norm(cand_vecs, axis=1, keepdims=True), 1e-12)
    sims = lv @ cv.T  # (C, V)
    owner = sims.argmax(axis=0)
    taken = {w.strip().lower() for w in label_words}
    groups: list[list[str]] = []
    for c, word in enumerate(label_words):
        group = [word]
        for j in np.argsort(-sims[c], kind="stable"):
            if len(group) >= k:
                break
            key = cand_words[j].strip().lower()
            if owner[j] != c or key in taken:
                continue
            taken.add(key)  # case variants count once, across all classes
            group.append(cand_words[j])
        groups.append(group)
    return groups


def expand_label_words(backend: Backend, label_words: Sequence[str], k: int,
                       fallback_texts: Sequence[str] = ()) -> tuple[list[list[str]], str]:
    """Each class's label word and its k-1 nearest words; returns ``(groups, route)``.

    ``route`` is ``"output-embeddings"`` when the backend has the ``vocabulary`` and
    ``token_embeddings`` abilities (it reads ``token_embeddings("output")``),
    ``"embedding-model"`` for the fallback over candidate words (the words of
    ``fallback_texts``), ``"none"`` for k = 1.
    """
    label_words = list(label_words)
    if k <= 1:
        return [[w] for w in label_words], "none"
    if has(backend, "vocabulary") and has(backend, "token_embeddings"):
        b: Any = backend  # the two abilities' methods (blackbox.backends.abilities)
        vocab: list[str] = list(b.vocabulary())
        table = np.asarray(b.token_embeddings("output"), dtype=np.float32)
        index = {tok: i for i, tok in enumerate(vocab)}
        missing = [w for w in label_words if w not in index]
        if not missing:
            # word-like tokens that start a word: " great", not "ing" or " 1999"
            cand = [i for i, tok in enumerate(vocab) if _is_word(tok)]
            groups = _pick_neighbours(table[[index[w] for w in label_words]], table[cand],
                                      [vocab[i] for i in cand], label_words, k)
            return groups, "output-embeddings"
        # a label word spanning several tokens has no single row; use the embedding model
    # the most frequent words of the k-shot texts (ties alphabetical, so runs repeat)
    counts = Counter(m.group(0).lower() for t in fallback_texts for m in _WORDS.finditer(t))
    words = sorted(sorted(counts), key=lambda w: -counts[w])[:MAX_FALLBACK_CANDIDATES]
    if not words:
        return [[w] for w in label_words], "none"
    if not backend.capabilities.embed:
        return [[w] for w in label_words], "none"
    cand_words = [f" {w}" for w in words]
    vecs = np.asarray(backend.embed([w.strip() for w in label_words] + words), dtype=np.float32)
    groups = _pick_neighbours(vecs[: len(label_words)], vecs[len(label_words):], cand_words,
                              label_words, k)
    return groups, "embedding-model"


class LogprobsFromHidden:
    """Label-word log-probs read off returned hidden states: ``log_softmax(h · Eᵀ)[words]``.

    For a model whose LM head is the output-embedding matrix E applied to the final-norm
    hidden state (SmolLM2 and most decoder LMs: no bias), this is the number
    ``label_logprobs`` returns for single-token words, without a second forward pass. A
    local-backend shortcut for experiments (recipe ``logprobs_from_hidden: true``); a
    served model is always asked through ``label_logprobs``.
    """

    def __init__(self, table: np.ndarray, word_ids: Sequence[int]) -> None:
        self.table = np.asarray(table, dtype=np.float32)
        self.word_ids = list(word_ids)

    def __call__(self, hidden: np.ndarray) -> np.ndarray:
        logits = (np.asarray(hidden, dtype=np.float32) @ self.table.T).astype(np.float64)
        m = logits.max(axis=1, keepdims=True)
        lse = m + np.log(np.exp(logits - m).sum(axis=1, keepdims=True))
        return logits[:, self.word_ids] - lse

    @classmethod
    def for_backend(cls, backend: Backend, words: Sequence[str]) -> LogprobsFromHidden:
        """Build it from a backend exposing ``vocabulary()`` and ``token_embeddings()``."""
        if not (has(backend, "vocabulary") and has(backend, "token_embeddings")):
            raise BbxError(f"logprobs_from_hidden needs a backend with vocabulary() and "
                           f"token_embeddings() (the local one); '{backend.name}' has neither: "
                           "set logprobs_from_hidden: false")
        b: Any = backend  # the two abilities' methods (blackbox.backends.abilities)
        index = {tok: i for i, tok in enumerate(b.vocabulary())}
        missing = [w for w in words if w not in index]
        if missing:
            raise BbxError(f"logprobs_from_hidden needs single-token label words; {missing[:3]} "
                           "are not: set logprobs_from_hidden: false")
        return cls(b.token_embeddings("output"), [index[w] for w in words])


def hidden_route(backend: Backend) -> str:
    """How hidden states are obtained: ``native``, ``embeddings`` (the backend answers
    ``hidden`` from its embeddings route) or ``embed`` (no hidden verb: sentence embeddings
    of the rendered prompt stand in, the documented fallback)."""
    kind = backend.capabilities.hidden
    if kind == "native":
        return "native"
    if kind == "embeddings":
        return "embeddings"
    if backend.capabilities.embed:
        return "embed"
    raise BbxError(f"backend '{backend.name}' returns neither hidden states nor embeddings: "
                   "MPD needs one of them; use a backend with /v1/hidden_states or /v1/embeddings")


def query_features(
    backend: Backend,
    texts: Sequence[str],
    templates: Sequence[str],
    words: Sequence[str],
    *,
    route: str = "native",
    max_words: int | None = None,
    chunk: int = 64,
    progress: Stages | None = None,
    description: str = "features",
    derive: LogprobsFromHidden | None = None,
) -> Features:
    """Query every (text, template): a hidden state and the log-prob of every word.

    Requests go in chunks of ``chunk`` texts so progress moves and a budget stop loses at
    most one chunk; everything already answered sits in the response cache. With ``derive``
    the log-probs are read off the hidden states instead of queried (see
    :class:`LogprobsFromHidden`).
    """
    n, p = len(texts), len(templates)
    hidden: list[list[list[float]]] = [[] for _ in range(p)]
    logp: list[list[list[float]]] = [[] for _ in range(p)]
    from blackbox.progress import stage

    with stage(progress, description, n * p) as st:
        for start in range(0, n, chunk):
            part = texts[start:start + chunk]
            for j, template in enumerate(templates):
                prompts = [render(template, t, "", max_words) for t in part]
                got = (backend.embed(prompts) if route == "embed"
                       else backend.hidden(prompts, "last"))
                hidden[j].extend(got)
                if derive is not None:
                    logp[j].extend(derive(np.asarray(got)).tolist())
                else:
                    logp[j].extend(backend.label_logprobs(prompts, list(words)))
                st.advance(len(part))
    if n == 0:
        return Features(np.zeros((0, p, 0), np.float32), np.zeros((0, p, len(words))))
    h = np.stack([np.asarray(x, dtype=np.float32) for x in hidden], axis=1)
    lp = np.stack([np.asarray(x, dtype=np.float64) for x in logp], axis=1)
    return Features(h, lp)


def content_free(backend: Backend, templates: Sequence[str], words: Sequence[str],
                 derive: LogprobsFromHidden | None = None) -> np.ndarray:
    """``(P, W)`` label-word log-probs for the empty sentence under each template: the
    model's prior for each word, which calibration divides out."""
    prompts = [render(t, "", "") for t in templates]
    if derive is not None:
        return derive(np.asarray(backend.hidden(prompts, "last")))
    return np.asarray(backend.label_logprobs(prompts, list(words)), dtype=np.float64)
