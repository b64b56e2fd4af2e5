"""The leak guard: no method trains or selects on a text it is evaluated on.

Texts are compared after :func:`normalize` (Unicode NFKC, case folded, every run of
characters that are not letters or digits made one space), so that the same sentence
tokenized or cased differently by two datasets still matches. The known case is SST-2,
whose test sentences all appear in SST-5's test file (and 429 in MR's), so an adapter or a
prompt fit on those files has seen SST-2's test set.

Methods call :func:`check` with the texts they fit on (train, dev, pool, user examples, an
adapter's training data) and the texts they report on. An overlap is an error naming the
count and an example, unless the recipe sets ``allow_overlap: true``; then the overlap is
returned and the run's summary says so. With ``drop_overlap: true`` a method first leaves
the shared texts out of what it fits on (:func:`without`; the shipped TREC few-shot splits
share a question or two with the test set), and the notes count them. Adapters record
digests of their training texts (:func:`digests`), so a merge run can check them without
their data.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from blackbox.errors import BbxError

_NON_WORD = re.compile(r"[\W_]+", re.UNICODE)


class LeakError(BbxError):
    """Texts a method fits on are also texts it is evaluated on."""


def normalize(text: str) -> str:
    """The form texts are compared in (see the module docstring)."""
    return _NON_WORD.sub(" ", unicodedata.normalize("NFKC", text).casefold()).strip()


def digest(text: str) -> str:
    """A short digest of a normalized text (48 bits: no collision among millions of texts)."""
    return hashlib.sha256(normalize(text).encode("utf-8")).hexdigest()[:12]


def digests(texts: Iterable[str]) -> list[str]:
    """Sorted distinct digests of ``texts`` (what an adapter keeps of its training data)."""
    return sorted({digest(t) for t in texts})


def _texts(items: Sequence[Any]) -> list[str]:
    return [getattr(x, "text", x) for x in items]


def overlaps(fit: Mapping[str, Sequence[Any]], held_out: Mapping[str, Sequence[Any]]
             ) -> list[dict[str, Any]]:
    """Each (fit set, held-out set) pair that shares texts: names, count, an example.

    Items are strings, objects with a ``text`` attribute, or (for a set known only by its
    digests) :class:`DigestSet`. ``count`` is the number of held-out items whose text is in
    the fit set.
    """
    found = []
    for fname, fit_items in fit.items():
        fit_keys = (set(fit_items.keys) if isinstance(fit_items, DigestSet)
                    else {digest(t) for t in _texts(fit_items)})
        for hname, held_items in held_out.items():
            held = _texts(held_items)
            hits = [t for t in held if digest(t) in fit_keys]
            if hits:
                found.append({"fit": fname, "held_out": hname, "count": len(hits),
                              "of": len(held), "example": hits[0][:80]})
    return found


def without(items: Sequence[Any], held_out: Iterable[Sequence[Any]]) -> tuple[list[Any], int]:
    """``items`` without those whose text is also in one of the ``held_out`` sets (order
    kept), and how many were left out: the fit side gives way, so every method and seed
    still reports on the same held-out items."""
    keys = {digest(t) for h in held_out for t in _texts(h)}
    kept = [x for x in items if digest(getattr(x, "text", x)) not in keys]
    return kept, len(items) - len(kept)


class DigestSet:
    """A fit set known only by the digests of its texts (an adapter's training data)."""

    def __init__(self, keys: Iterable[str]) -> None:
        self.keys = frozenset(keys)

    def __len__(self) -> int:
        return len(self.keys)


def check(fit: Mapping[str, Sequence[Any]], held_out: Mapping[str, Sequence[Any]],
          allow_overlap: bool = False) -> list[dict[str, Any]]:
    """Refuse (:class:`LeakError`) when a fit set shares texts with a held-out set.

    With ``allow_overlap`` the overlaps are returned instead, for the run to report.
    """
    found = overlaps(fit, held_out)
    if found and not allow_overlap:
        first = found[0]
        more = f" (and {len(found) - 1} more overlapping pairs)" if len(found) > 1 else ""
        raise LeakError(
            f"leak: {first['count']} of {first['of']} {first['held_out']} texts are also in "
            f"{first['fit']} (e.g. {first['example']!r}){more}: a number measured on them "
            "would not be held out; remove them from one of the files, or set "
            "allow_overlap (--allow-overlap) to run anyway and have the report say so")
    return found
