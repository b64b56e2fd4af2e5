"""The local model runtime: model loading, batched scoring verbs and sentence embeddings.

Importing this package is cheap; torch and transformers load inside the functions that use
them. The pieces:

* :mod:`blackbox.engine.loader`: resolve a model spec (``"default"``, a Hugging Face folder,
  a ``.gguf`` file) to a loaded model and tokenizer, on the best device and dtype;
* :mod:`blackbox.engine.runtime`: :class:`~blackbox.engine.runtime.Engine`, the batched
  verbs (label log-probs, scores, hidden states, generation) over one loaded model;
* :mod:`blackbox.engine.embed`: sentence embeddings with the bundled all-MiniLM-L6-v2.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from blackbox.engine.embed import SentenceEmbedder
    from blackbox.engine.loader import LoadedModel, load_model
    from blackbox.engine.runtime import Engine

__all__ = ["Engine", "LoadedModel", "SentenceEmbedder", "load_model"]

_LAZY = {
    "Engine": "blackbox.engine.runtime",
    "LoadedModel": "blackbox.engine.loader",
    "load_model": "blackbox.engine.loader",
    "SentenceEmbedder": "blackbox.engine.embed",
}


def __getattr__(name: str) -> Any:
    # Lazy re-exports: `from blackbox.engine import Engine` works without importing torch
    # for anyone who only touches the package.
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'blackbox.engine' has no attribute {name!r}")
