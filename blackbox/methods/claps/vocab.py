"""ClaPS's candidate vocabulary and the vectors that cluster it.

Candidates are *word-initial alphabetic tokens*: for SmolLM2's byte-level BPE these are the
pieces that decode to a space followed by ASCII letters (" great", " Review"), so a prompt is
simply their concatenation. Special tokens, punctuation, digits, byte fragments and
word-internal pieces are left out, as in the paper (which keeps pieces with the space
marker). The candidates come from the backend's ``vocabulary`` ability (the local tokenizer,
or a bbx server's through ``GET /v1/vocabulary``, so the remote backend searches exactly the
candidates the local one does); a backend without it (another API) gets the built-in list
of frequent SmolLM2 word-initial tokens (:mod:`blackbox.methods.claps.words`), or the
user's own list. Input-embedding clusters need the ``token_embeddings`` ability too.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from blackbox.backends.abilities import has
from blackbox.errors import BbxError

if TYPE_CHECKING:
    from blackbox.backends.base import Backend

_CANDIDATE = re.compile(r" [A-Za-z]+")


@dataclass(frozen=True)
class Vocabulary:
    """Candidate tokens: ``texts[i]`` is a piece with its leading space, ``ids[i]`` its token
    id where the candidates come from the backend's tokenizer (else ``None``)."""

    texts: tuple[str, ...]
    ids: tuple[int, ...] | None
    source: str  # "tokenizer" | "server" (a bbx server's) | "builtin" | "recipe" | a path

    def __len__(self) -> int:
        return len(self.texts)

    def subset(self, index: list[int] | np.ndarray) -> Vocabulary:
        """The candidates at ``index`` (in that order)."""
        idx = [int(i) for i in index]
        return Vocabulary(tuple(self.texts[i] for i in idx),
                          tuple(self.ids[i] for i in idx) if self.ids is not None else None,
                          self.source)


def is_candidate(piece: str) -> bool:
    """A word-initial alphabetic piece: one leading space, then ASCII letters only."""
    return _CANDIDATE.fullmatch(piece) is not None


def prompt_text(pieces: list[str] | tuple[str, ...]) -> str:
    """The prompt a token sequence spells: the pieces joined, outer spaces dropped."""
    return "".join(pieces).strip()


def _from_words(words: list[str] | tuple[str, ...], source: str) -> Vocabulary:
    out: list[str] = []
    seen: set[str] = set()
    for w in words:
        w = str(w).strip()
        if not w or any(ch.isspace() for ch in w):
            raise BbxError(f"vocab entry {w!r} ({source}): give single words without spaces")
        piece = " " + w
        if piece not in seen:
            seen.add(piece)
            out.append(piece)
    return Vocabulary(tuple(out), None, source)


def backend_vocabulary(backend: Backend) -> tuple[list[str], str] | None:
    """The backend's token list (its ``vocabulary`` ability) and where it came from:
    ``"server"`` for a bbx server's (``GET /v1/vocabulary``), ``"tokenizer"`` for an
    in-process one; ``None`` for a backend without the ability (another API).

    Reading it is not a model query: the metered wrapper passes it through unmetered."""
    if not has(backend, "vocabulary"):
        return None
    # the summary says whose tokenizer the candidates are (a served one or the local one)
    source = "server" if backend.capabilities.extra.get("bbx_server") else "tokenizer"
    return list(backend.vocabulary()), source  # type: ignore[attr-defined]


def candidate_vocabulary(spec: str | list[str] | None, backend: Backend) -> Vocabulary:
    """The candidates a recipe's ``vocab:`` names.

    ``None``: the word-initial alphabetic tokens of the backend's tokenizer (the local one, or
    a bbx server's through the remote backend), or the built-in list for a backend without
    one; a list: those words; a string: a file with one word per
    line.
    """
    if isinstance(spec, list):
        return _from_words(spec, "recipe")
    if isinstance(spec, str):
        path = Path(spec).expanduser()
        if not path.is_file():
            raise BbxError(f"vocab file {path} not found: give a file with one word per line, "
                           "or leave vocab out to use the backend's tokenizer")
        lines = [ln for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]
        if not lines:
            raise BbxError(f"vocab file {path} is empty: give one word per line")
        return _from_words(lines, str(path))
    found = backend_vocabulary(backend)
    if found is None:
        from blackbox.methods.claps.words import WORDS

        return _from_words(WORDS, "builtin")
    pieces, source = found
    ids, texts, seen = [], [], set()
    for i, piece in enumerate(pieces):
        if is_candidate(piece) and piece not in seen:
            seen.add(piece)
            ids.append(i)
            texts.append(piece)
    if not texts:
        raise BbxError("the backend's tokenizer has no word-initial alphabetic tokens: give "
                       "candidate words with vocab: [...] or vocab: FILE")
    return Vocabulary(tuple(texts), tuple(ids), source)


def candidate_vectors(vocab: Vocabulary, backend: Backend, how: str,
                      chunk: int = 256) -> tuple[np.ndarray, str]:
    """One vector per candidate for clustering, and where it came from.

    ``input``: rows of the model's input-embedding table (needs token ids and a backend that
    exposes the table); ``embed``: the backend's embeddings route (metered: it is a query);
    ``auto``: ``input`` where possible, else ``embed``.
    """
    can_read = vocab.ids is not None and has(backend, "token_embeddings")
    if how == "input" and not can_read:
        raise BbxError("embeddings: input needs a backend that exposes its embedding table "
                       "(the local backend) and tokenizer candidates: use embeddings: embed")
    if how in ("input", "auto") and can_read:
        assert vocab.ids is not None
        table = np.asarray(backend.token_embeddings("input"),  # type: ignore[attr-defined]
                           dtype=np.float32)
        return table[list(vocab.ids)], "input"
    rows: list[list[float]] = []
    for start in range(0, len(vocab), chunk):
        rows.extend(backend.embed([t.strip() for t in vocab.texts[start:start + chunk]]))
    return np.asarray(rows, dtype=np.float32), "embed"
