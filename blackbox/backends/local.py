"""The local backend: an in-process model answering the Backend verbs exactly.

The model loads lazily on the first verb that needs it (``fingerprint`` and
``capabilities`` do not), so building a backend for a dry run or a cache-only replay is
free. Calls are serialized with a lock, granted first-come first-served: the engine
batches within a call, and the serving layer gathers concurrent requests into calls (and
takes the lock once per decode step, see :meth:`LocalBackend.locked`).
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from blackbox.backends.base import Adapter, Capabilities, Position, normalize_adapter
from blackbox.backends.usage import TokenUsage, report_items
from blackbox.backends.usage import active as usage_active
from blackbox.engine.locks import FairRLock
from blackbox.errors import BbxError

_GEN_PARAMS = {"max_tokens", "temperature", "top_p", "seed", "stop"}
_EMBED_MODELS = ("minilm", "mean")


class LocalBackend:
    """A local causal LM (default: the bundled SmolLM2-135M-Instruct) behind the Backend verbs.

    ``model`` is ``"default"``, a Hugging Face folder or a ``.gguf`` file; ``device`` and
    ``dtype`` default to the best the hardware offers (see
    :func:`blackbox.engine.loader.choose_placement`). ``embed_model="minilm"`` embeds with the
    bundled all-MiniLM-L6-v2; ``"mean"`` mean-pools the LM's own last hidden states.
    ``adapters`` is a folder of PEFT LoRA adapters (``"zoo"``: the one ``bbx zoo build`` made
    for this model): every verb then takes ``adapter=`` (a name or a mixture), applied per
    row as low-rank factors (see :mod:`blackbox.engine.lora`).
    """

    name = "local"

    def __init__(
        self,
        model: str = "default",
        device: str = "auto",
        dtype: str = "auto",
        batch_size: int = 32,
        embed_model: str = "minilm",
        max_batch_tokens: int | None = None,  # None: the engine's default for the device
        adapters: str | None = None,
    ) -> None:
        if embed_model not in _EMBED_MODELS:
            raise BbxError(f"unknown embed_model '{embed_model}': use minilm or mean")
        from blackbox.engine.loader import resolve_spec

        self.model = str(model)
        self.source = resolve_spec(self.model)  # fail fast on a missing path, no torch needed
        self.device = device
        self.dtype = dtype
        self.batch_size = batch_size
        self.max_batch_tokens = max_batch_tokens
        self.embed_model = embed_model
        self._lock = FairRLock()
        self._engine: Any = None
        self._embedder: Any = None
        self._placement: Any = None
        self._fingerprint: str | None = None
        if adapters == "zoo":  # the zoo `bbx zoo build` made for this model
            from blackbox.paths import zoo_dir

            adapters = str(zoo_dir(self.source.name))
            if not Path(adapters).is_dir():
                raise BbxError(f"no adapter zoo for model '{self.source.name}' at {adapters}: "
                               "build it with bbx zoo build (or give an adapter folder)")
        self.adapters = str(adapters) if adapters else None
        self._repo: Any = None
        if self.adapters is not None and not Path(self.adapters).expanduser().is_dir():
            raise BbxError(f"adapter folder {self.adapters} does not exist: give a folder of "
                           "PEFT LoRA adapters (one sub-folder each)")

    # ---- lazy state ---------------------------------------------------------------------

    @property
    def placement(self) -> Any:
        """The chosen device and dtype, with the reason (a ``Placement``)."""
        if self._placement is None:
            from blackbox.engine.loader import choose_placement

            self._placement = choose_placement(self.device, self.dtype)
        return self._placement

    @property
    def engine(self) -> Any:
        """The loaded :class:`~blackbox.engine.runtime.Engine` (loads on first access)."""
        with self._lock:
            if self._engine is None:
                import torch

                from blackbox.engine.loader import load_model
                from blackbox.engine.runtime import Engine

                p = self.placement
                loaded = load_model(self.model, device=p.device, dtype=p.dtype)
                self._engine = Engine(loaded.model, loaded.tokenizer, p.device,
                                      getattr(torch, p.dtype), batch_size=self.batch_size,
                                      max_batch_tokens=self.max_batch_tokens)
                if self.adapters is not None:
                    from blackbox.engine.adapters import AdapterRepository
                    from blackbox.engine.lora import BatchedLora

                    self._engine.adapters = BatchedLora(loaded.model)
                    self._repo = AdapterRepository(self.adapters, self._engine.adapters)
            return self._engine

    @property
    def repository(self) -> Any:
        """The :class:`~blackbox.engine.adapters.AdapterRepository` (``None`` without one)."""
        if self.adapters is None:
            return None
        _ = self.engine
        return self._repo

    def _embedder_instance(self) -> Any:
        with self._lock:
            if self._embedder is None:
                from blackbox.engine.embed import SentenceEmbedder

                self._embedder = SentenceEmbedder(device=self.placement.device)
            return self._embedder

    @property
    def capabilities(self) -> Capabilities:
        return Capabilities(
            label_logprobs="exact", score=True, hidden="native", generate=True, embed=True,
            adapters=self.adapters is not None,
            vocabulary=True, token_embeddings=True, rows=True, engine=True,
            materialize=False,  # mixtures are written as PEFT folders from the repository
            repository=self.adapters is not None,
            # the resolved placement, so a run's manifest says which device and dtype ran
            # (results from a bf16 and an fp32 machine differ in the last digits)
            extra={"model": self.model, "embed_model": self.embed_model,
                   "device": self.placement.device, "dtype": self.placement.dtype},
        )

    @property
    def fingerprint(self) -> str:
        """``local:<model name>:<content hash>``; the hash covers weights, dtype, embedder."""
        if self._fingerprint is None:
            from blackbox.engine.loader import source_digest

            parts = [source_digest(self.source), self.placement.dtype, self.embed_model]
            if self.adapters is not None:  # adapter answers depend on the adapters' files
                parts.append(_folder_listing(Path(self.adapters).expanduser()))
            payload = "\x1f".join(parts)
            digest = hashlib.sha256(payload.encode()).hexdigest()[:16]
            self._fingerprint = f"local:{self.source.name}:{digest}"
        return self._fingerprint

    def factors(self, adapter: Adapter) -> Any:
        """The low-rank factors of an adapter spec (``None``: the base model)."""
        spec = normalize_adapter(adapter)
        if spec is None:
            return None
        if self.adapters is None:
            raise BbxError(
                "this backend has no adapter repository: run without an adapter, or give the "
                "local backend an adapters folder"
            )
        return self.repository.factors(spec)

    def _rows(self, adapter: Adapter, n: int) -> list[Any] | None:
        f = self.factors(adapter)
        return None if f is None else [f] * n

    @contextlib.contextmanager
    def locked(self) -> Iterator[Any]:
        """Hold the model (the engine, loaded on first use) for several calls in a row, as
        the serving layer's decode scheduler does for each step."""
        with self._lock:
            yield self.engine

    def call_rows(self, verb: str | Callable[..., Any], args: tuple[Any, ...],
                  adapters: Sequence[Adapter], **kwargs: Any) -> Any:
        """One engine verb with its own adapter per prompt, in shared forward passes.

        ``verb`` is an :class:`~blackbox.engine.runtime.Engine` method name (``label_logprobs``,
        ``score``, ``hidden``, ``mean_hidden``, ``generate``) or a function called as
        ``verb(engine, *args, adapters=..., **kwargs)``; the serving layer uses this to batch
        concurrent requests that name different adapters or mixtures.
        """
        with self._lock:
            rows = [self.factors(a) for a in adapters]
            rows_or_none = None if all(r is None for r in rows) else rows
            if callable(verb):
                return verb(self.engine, *args, adapters=rows_or_none, **kwargs)
            out = getattr(self.engine, verb)(*args, adapters=rows_or_none, **kwargs)
        if verb == "score":
            self._report([p + c for p, c in zip(args[0], args[1], strict=True)])
        elif verb in ("label_logprobs", "hidden", "mean_hidden", "generate"):
            self._report(args[0], out if verb == "generate" else None)
        return out

    # ---- optional abilities (see blackbox.backends.abilities) ----------------------------

    def label_logprobs_rows(
        self, prompts: Sequence[str], label_words: Sequence[str], adapters: Sequence[Adapter]
    ) -> list[list[float]]:
        """The ``rows`` ability: per-row mixtures in one forward pass (:meth:`call_rows`)."""
        return self.call_rows("label_logprobs", (list(prompts), list(label_words)),
                              list(adapters))

    def list_adapters(self) -> list[str]:
        """The ``adapters`` ability: the repository's adapter names."""
        if self.adapters is None:
            raise BbxError("this backend has no adapter repository: give the local backend "
                           "an adapters folder")
        return list(self.repository.names())

    def adapter_repository(self) -> Any:
        """The ``repository`` ability: the :class:`AdapterRepository` (white-box)."""
        if self.adapters is None:
            raise BbxError("this backend has no adapter repository: give the local backend "
                           "an adapters folder")
        return self.repository

    def model_source(self) -> Any:
        """The ``engine`` ability: the model's files (a ``ModelSource``)."""
        return self.source

    # ---- verbs --------------------------------------------------------------------------

    def label_logprobs(
        self, prompts: Sequence[str], label_words: Sequence[str], adapter: Adapter = None
    ) -> list[list[float]]:
        with self._lock:
            out = self.engine.label_logprobs(prompts, label_words,
                                             adapters=self._rows(adapter, len(prompts)))
        self._report(prompts)
        return out

    def score(
        self, prompts: Sequence[str], continuations: Sequence[str], adapter: Adapter = None
    ) -> list[list[float]]:
        with self._lock:
            out = self.engine.score(prompts, continuations,
                                    adapters=self._rows(adapter, len(prompts)))
        self._report([p + c for p, c in zip(prompts, continuations, strict=True)])
        return out

    def hidden(
        self, prompts: Sequence[str], position: Position = "last", adapter: Adapter = None
    ) -> list[list[float]]:
        with self._lock:
            out = self.engine.hidden(prompts, position,
                                     adapters=self._rows(adapter, len(prompts)))
        self._report(prompts)
        return out

    def generate(
        self, prompts: Sequence[str], params: dict[str, Any] | None = None, adapter: Adapter = None
    ) -> list[str]:
        params = dict(params or {})
        unknown = set(params) - _GEN_PARAMS
        if unknown:
            raise BbxError(f"unknown generation parameter(s) {sorted(unknown)}: "
                           f"use {', '.join(sorted(_GEN_PARAMS))}")
        with self._lock:
            out = self.engine.generate(prompts, **params,
                                       adapters=self._rows(adapter, len(prompts)))
        self._report(prompts, out)
        return out

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        with self._lock:
            if self.embed_model == "mean":
                return self.engine.mean_hidden(texts)
            return self._embedder_instance().embed(texts)

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        with self._lock:
            return self.engine.count_tokens(texts)

    def _report(self, read: Sequence[str], written: Sequence[str] | None = None) -> None:
        """Per item, the tokens it read and wrote, counted by the model's own tokenizer
        (:mod:`blackbox.backends.usage`); skipped outside a metered call (serving)."""
        if not usage_active():
            return
        out = self.count_tokens(written) if written is not None else [0] * len(read)
        report_items([TokenUsage(n, m) for n, m in zip(self.count_tokens(read), out,
                                                        strict=True)])

    def vocabulary(self) -> list[str]:
        """Decoded token strings, index = token id (" positive", not "Ġpositive")."""
        with self._lock:
            if getattr(self, "_vocab", None) is None:  # decoding 49k tokens takes seconds
                tok = self.engine.tokenizer
                self._vocab = [tok.decode([i]) for i in range(len(tok))]
            return list(self._vocab)

    def token_embeddings(self, which: str = "output") -> Any:
        """The ``(V, d)`` input- or output-embedding matrix as a float32 numpy array
        (MPD's label-word neighbours read the output rows)."""
        if which not in ("input", "output"):
            raise BbxError(f"unknown embedding table '{which}': use input or output")
        with self._lock:
            model = self.engine.model
            table = (model.get_output_embeddings() if which == "output"
                     else model.get_input_embeddings())
            return table.weight.detach().float().cpu().numpy()[: len(self.engine.tokenizer)]

    def close(self) -> None:
        with self._lock:
            self._engine = None
            self._embedder = None
            self._repo = None


def _folder_listing(folder: Path) -> str:
    """Names and sizes of the files in an adapter folder (part of the fingerprint)."""
    items = sorted(f"{p.relative_to(folder)}:{p.stat().st_size}" for p in folder.rglob("*")
                   if p.is_file())
    return hashlib.sha256("\n".join(items).encode()).hexdigest()
