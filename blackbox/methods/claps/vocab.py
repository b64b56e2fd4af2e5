"""ClaPS's candidate vocabulary and the vectors that cluster it.

Candidates are *word-initial alphabetic tokens*: for SmolLM2's byte-level BPE these are the
pieces that decode to a space followed by ASCII letters (" great", " Review"), so a prompt is
simply their concatenation. Special tokens, punctuation, digits, byte fragments and
word-internal pieces are left out, as in the paper (which keeps pieces with the space
marker). The remote backend against ``bbx serve`` reads the server's tokenizer through the
``GET /v1/vocabulary`` extension, so it searches exactly the candidates the local backend
does; a backend that exposes no tokenizer (another API) gets the built-in list of frequent
SmolLM2 word-initial tokens (:mod:`blackbox.methods.claps.words`), or the user's own list.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from blackbox.errors import BbxError

if TYPE_CHECKING:
    from blackbox.backends.metered import MeteredBackend

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


def backend_tokenizer(backend: MeteredBackend) -> Any | None:
    """The unmetered backend behind ``backend`` if it can list its tokenizer's pieces and
    read its embedding table (the local engine), else ``None``. Reading them is not a model
    query, so it bypasses the meter on purpose."""
    inner = getattr(backend, "inner", backend)
    if callable(getattr(inner, "vocabulary", None)):
        return inner
    return None


def candidate_vocabulary(spec: str | list[str] | None, backend: MeteredBackend) -> Vocabulary:
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
    tok = backend_tokenizer(backend)
    if tok is not None:
        pieces, source = tok.vocabulary(), "tokenizer"
    else:
        pieces, source = server_vocabulary(backend), "server"
        if pieces is None:
            from blackbox.methods.claps.words import WORDS

            return _from_words(WORDS, "builtin")
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


def server_vocabulary(backend: MeteredBackend) -> list[str] | None:
    """The tokenizer pieces of the bbx server behind a remote backend (index = token id),
    or ``None`` when the backend is not remote or its server has no ``vocabulary``
    extension (another OpenAI-compatible server, an older bbx).

    One ``GET /v1/vocabulary``; like reading the local tokenizer it is not a model query,
    so it bypasses the meter (and the ledger) on purpose.
    """
    from blackbox.backends.remote import RemoteBackend

    inner = getattr(backend, "inner", backend)
    if not isinstance(inner, RemoteBackend):
        return None
    info = inner.info
    if not info["bbx"] or "vocabulary" not in (info.get("extensions") or ()):
        return None
    # the backend's _call turns SDK errors (auth, status, timeouts) into one-line BbxErrors
    res = inner._call(lambda: inner.client.get("/vocabulary", cast_to=object))
    tokens = res.get("tokens") if isinstance(res, dict) else None
    if not isinstance(tokens, list) or not all(isinstance(t, str) for t in tokens):
        raise BbxError(f"{inner.base_url}/vocabulary answered no token list: give candidate "
                       "words with vocab: [...] or vocab: FILE")
    return tokens


def candidate_vectors(vocab: Vocabulary, backend: MeteredBackend, how: str,
                      chunk: int = 256) -> tuple[np.ndarray, str]:
    """One vector per candidate for clustering, and where it came from.

    ``input``: rows of the model's input-embedding table (needs token ids and a backend that
    exposes the table); ``embed``: the backend's embeddings route (metered: it is a query);
    ``auto``: ``input`` where possible, else ``embed``.
    """
    tok = backend_tokenizer(backend)
    can_read = (vocab.ids is not None and tok is not None
                and callable(getattr(tok, "token_embeddings", None)))
    if how == "input" and not can_read:
        raise BbxError("embeddings: input needs a backend that exposes its embedding table "
                       "(the local backend) and tokenizer candidates: use embeddings: embed")
    if how in ("input", "auto") and can_read:
        assert tok is not None and vocab.ids is not None
        table = np.asarray(tok.token_embeddings("input"), dtype=np.float32)
        return table[list(vocab.ids)], "input"
    rows: list[list[float]] = []
    for start in range(0, len(vocab), chunk):
        rows.extend(backend.embed([t.strip() for t in vocab.texts[start:start + chunk]]))
    return np.asarray(rows, dtype=np.float32), "embed"
