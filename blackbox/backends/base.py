"""The Backend protocol: batched verbs, lists in and lists out.

Every method of bbx talks to a model only through these verbs. Results are plain JSON values
(lists of floats, strings) so that the metered wrapper can cache them content-addressed
without pickle.

``adapter`` on every verb is ``None`` (the base model), an adapter name, or a mixture
``{"adapters": [...], "alpha": [...], "beta": [...]}`` (see :func:`normalize_adapter`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

from blackbox.errors import BbxError

Adapter = str | dict[str, Any] | None
Position = Literal["last", "mask"]


@dataclass(frozen=True)
class Capabilities:
    """What a backend can answer, and how.

    ``label_logprobs`` is ``"exact"`` when any token's log-prob can be read (a local model,
    or a server with the bbx extension), ``"topk"`` when only the server's top-k next-token
    log-probs are available (label words outside the top-k get a documented floor), and
    ``"generate"`` when the scores are no log-probs at all but read from generated answers
    (one-hot, or sample frequencies: see :mod:`blackbox.backends.remote`); methods that need
    real log-probs can refuse it or note what they lose. ``"none"``: no label scores.
    ``hidden`` is ``"native"`` for real hidden states, ``"embeddings"`` when only an
    embeddings route stands in for them.

    The remaining flags are the optional abilities beyond the verbs, each with its own
    methods (:mod:`blackbox.backends.abilities`): ``adapters`` (``adapter=`` on the verbs,
    ``list_adapters()``), ``vocabulary``, ``token_embeddings``, ``rows``, ``materialize``,
    ``repository`` and ``engine``. A backend without one leaves it ``False``; methods test
    the flag, never the backend's class or attributes.
    """

    label_logprobs: Literal["exact", "topk", "generate", "none"] = "exact"
    score: bool = True
    hidden: Literal["native", "embeddings", "none"] = "native"
    generate: bool = True
    embed: bool = True
    adapters: bool = False
    topk: int | None = None
    vocabulary: bool = False
    token_embeddings: bool = False
    rows: bool = False
    materialize: bool = False
    repository: bool = False
    engine: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready view (for manifests)."""
        return asdict(self)


@runtime_checkable
class Backend(Protocol):
    """A model behind an API. All verbs are batched: lists in, lists out, same order.

    These verbs are all a new backend must write. What it can do beyond them (a token
    list, embedding tables, adapters, ...) it declares as ``capabilities`` flags and
    implements as the methods :mod:`blackbox.backends.abilities` lists for each flag;
    methods that need one refuse a backend without it before paying for anything.
    """

    name: str

    @property
    def capabilities(self) -> Capabilities:
        """Which verbs work and how exact they are."""
        ...

    @property
    def fingerprint(self) -> str:
        """A string identifying the model behind the backend (part of every cache key)."""
        ...

    def label_logprobs(
        self, prompts: Sequence[str], label_words: Sequence[str], adapter: Adapter = None
    ) -> list[list[float]]:
        """Per prompt, the log-prob of each label word as the next text (multi-token words sum)."""
        ...

    def score(
        self, prompts: Sequence[str], continuations: Sequence[str], adapter: Adapter = None
    ) -> list[list[float]]:
        """Per (prompt, continuation) pair, the continuation's token log-probs."""
        ...

    def hidden(
        self, prompts: Sequence[str], position: Position = "last", adapter: Adapter = None
    ) -> list[list[float]]:
        """Per prompt, the last-layer hidden state at the scoring position."""
        ...

    def generate(
        self, prompts: Sequence[str], params: dict[str, Any] | None = None, adapter: Adapter = None
    ) -> list[str]:
        """Per prompt, generated text (``params``: max_tokens, temperature, seed, stop)."""
        ...

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        """Per text, a sentence embedding."""
        ...

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        """Per text, its token count (for token budgets and the ledger)."""
        ...

    def close(self) -> None:
        """Release resources (threads, sockets, model memory)."""
        ...


def normalize_adapter(adapter: Adapter) -> Adapter:
    """Validate an adapter spec and return its canonical form (used in cache keys).

    A mixture needs equal-length ``adapters``, ``alpha`` (keep-fraction in [0, 1], default 1)
    and ``beta`` (finite scale, default 1). Anything else is a :class:`BbxError`.
    """
    if adapter is None or adapter == "":
        return None
    if isinstance(adapter, str):
        return adapter
    if not isinstance(adapter, dict):
        raise BbxError(f"adapter must be a name or a mixture mapping, got {type(adapter).__name__}")
    unknown = set(adapter) - {"adapters", "alpha", "beta"}
    if unknown:
        raise BbxError(f"unknown mixture field(s) {sorted(unknown)}: use adapters, alpha, beta")
    names = adapter.get("adapters")
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        raise BbxError("a mixture needs 'adapters': a non-empty list of adapter names")
    n = len(names)

    def _vec(key: str, default: float, lo: float, hi: float) -> list[float]:
        raw = adapter.get(key)
        if raw is None:
            return [default] * n
        if not isinstance(raw, list) or len(raw) != n:
            raise BbxError(f"mixture '{key}' must be a list of {n} numbers, one per adapter")
        out = []
        for v in raw:
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise BbxError(f"mixture '{key}' has a non-finite or non-numeric value: {v!r}")
            if not lo <= v <= hi:
                raise BbxError(f"mixture '{key}' value {v} is outside [{lo}, {hi}]")
            out.append(float(v))
        return out

    return {
        "adapters": list(names),
        "alpha": _vec("alpha", 1.0, 0.0, 1.0),
        "beta": _vec("beta", 1.0, -1e6, 1e6),
    }
