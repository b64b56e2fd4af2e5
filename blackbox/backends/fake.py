"""A deterministic, scriptable backend for tests and dry runs. No model, no network.

Every answer is a pure function of the request and ``seed``:

* label-word log-probs: a per-word base logit (hash of seed and word), plus ``bias`` for
  each keyword present in the prompt (``{"great": {" positive": 3.0}}`` makes prompts that
  contain "great" favour " positive"), plus adapter effects, then a log-softmax over the
  label words shifted down by one nat (real backends do not normalize over label words);
* hidden states and embeddings: a normalized sum of per-word pseudo-random vectors, so that
  texts sharing words get similar vectors;
* ``calls`` counts the prompts actually computed, so tests can check what was paid for;
* token usage, reported per item like a served model's (:mod:`blackbox.backends.usage`):
  prompt tokens are :meth:`FakeBackend.count_tokens` (words) of what is read, completion
  tokens one per label-score request (the one next token a server would write) and the
  generated reply's words for ``generate``; ``score``, ``hidden`` and ``embed`` write none.

Its only optional ability is ``adapters`` (when ``adapter_bias`` names some): it has no
tokenizer, no weights and no engine, so it is also the reference for what a method does on
a backend that offers the verbs alone.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Callable, Sequence
from functools import lru_cache
from typing import Any

import numpy as np

from blackbox.backends.base import Adapter, Capabilities, Position, normalize_adapter
from blackbox.backends.usage import TokenUsage, report_items
from blackbox.errors import BbxError

_WORD = re.compile(r"[a-z0-9']+")


def _hash_unit(*parts: object) -> float:
    """A stable pseudo-random number in [0, 1) from the parts."""
    digest = hashlib.sha256("\x1f".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def _hash_vec(dim: int, *parts: object) -> np.ndarray:
    seed = int.from_bytes(hashlib.sha256("\x1f".join(map(str, parts)).encode()).digest()[:8], "big")
    return np.random.default_rng(seed).standard_normal(dim)


@lru_cache(maxsize=1 << 16)
def _word_vec(dim: int, seed: int, word: str) -> np.ndarray:
    # words repeat across texts: caching their vectors keeps dry runs over long pools fast
    return _hash_vec(dim, seed, "word", word)


class FakeBackend:
    """Deterministic stand-in for a model API (see module docstring)."""

    name = "fake"

    def __init__(
        self,
        seed: int = 0,
        bias: dict[str, dict[str, float]] | None = None,
        adapter_bias: dict[str, dict[str, float]] | None = None,
        dim: int = 16,
        model: str = "fake-1",
        fn: Callable[[str, Sequence[str]], list[float]] | None = None,
    ) -> None:
        self.seed = seed
        self.bias = {k.lower(): v for k, v in (bias or {}).items()}
        self.adapter_bias = adapter_bias or {}
        self.dim = dim
        self.model = model
        self.fn = fn
        self.calls = 0

    @property
    def capabilities(self) -> Capabilities:
        # the adapter ability only with adapters to name: a fake with none has no repository
        return Capabilities(adapters=bool(self.adapter_bias), extra={"model": self.model})

    @property
    def fingerprint(self) -> str:
        payload = repr((self.model, self.seed, sorted(self.bias.items()), self.dim,
                        sorted(self.adapter_bias.items())))
        return f"fake:{hashlib.sha256(payload.encode()).hexdigest()[:16]}"

    def _adapter_logit(self, adapter: Adapter, word: str) -> float:
        adapter = normalize_adapter(adapter)
        if adapter is None:
            return 0.0
        if isinstance(adapter, str):
            adapter = {"adapters": [adapter], "alpha": [1.0], "beta": [1.0]}
        total = 0.0
        for name, a, b in zip(adapter["adapters"], adapter["alpha"], adapter["beta"], strict=True):
            if name not in self.adapter_bias:
                raise BbxError(f"unknown adapter '{name}'")
            total += b * a * self.adapter_bias[name].get(word, 0.0)
        return total

    def label_logprobs(
        self, prompts: Sequence[str], label_words: Sequence[str], adapter: Adapter = None
    ) -> list[list[float]]:
        out = []
        for prompt in prompts:
            self.calls += 1
            if self.fn is not None:
                out.append([float(x) for x in self.fn(prompt, label_words)])
                continue
            words = set(_WORD.findall(prompt.lower()))
            logits = []
            for w in label_words:
                z = 2.0 * _hash_unit(self.seed, "label", w) - 1.0
                z += sum(b.get(w, 0.0) for k, b in self.bias.items() if k in words)
                z += self._adapter_logit(adapter, w)
                logits.append(z)
            lse = math.log(sum(math.exp(z) for z in logits))
            out.append([z - lse - 1.0 for z in logits])
        self._report(prompts, [1] * len(prompts))
        return out

    def score(
        self, prompts: Sequence[str], continuations: Sequence[str], adapter: Adapter = None
    ) -> list[list[float]]:
        if len(prompts) != len(continuations):
            raise BbxError("score needs one continuation per prompt")
        out = []
        for p, c in zip(prompts, continuations, strict=True):
            self.calls += 1
            shift = self._adapter_logit(adapter, c) if adapter else 0.0
            toks = c.split() or [c]
            out.append([-0.1 - 5.0 * _hash_unit(self.seed, p, i, t) + shift
                        for i, t in enumerate(toks)])
        self._report([p + c for p, c in zip(prompts, continuations, strict=True)])
        return out

    def _text_vec(self, text: str) -> list[float]:
        v = np.zeros(self.dim)
        for w in _WORD.findall(text.lower()) or [""]:
            v += _word_vec(self.dim, self.seed, w)
        v /= np.linalg.norm(v) or 1.0
        return v.tolist()

    def hidden(
        self, prompts: Sequence[str], position: Position = "last", adapter: Adapter = None
    ) -> list[list[float]]:
        self.calls += len(prompts)
        self._report(prompts)
        return [self._text_vec(p) for p in prompts]

    def generate(
        self, prompts: Sequence[str], params: dict[str, Any] | None = None, adapter: Adapter = None
    ) -> list[str]:
        self.calls += len(prompts)
        sample = (params or {}).get("seed", 0)
        replies = [f"fake-{int(_hash_unit(self.seed, p, sample) * 1e6):06d}" for p in prompts]
        self._report(prompts, self.count_tokens(replies))
        return replies

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        self.calls += len(texts)
        self._report(texts)
        return [self._text_vec(t) for t in texts]

    def _report(self, read: Sequence[str], written: Sequence[int] | None = None) -> None:
        """Per item, the tokens it read and wrote (the fake's usage model, module docs)."""
        report_items([TokenUsage(n, written[i] if written is not None else 0)
                      for i, n in enumerate(self.count_tokens(read))])

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        return [max(1, len(t.split())) for t in texts]

    def list_adapters(self) -> list[str]:
        """The adapter names of ``adapter_bias`` (the ``adapters`` ability), sorted."""
        return sorted(self.adapter_bias)

    def close(self) -> None:
        pass
