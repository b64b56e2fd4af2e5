"""The model behind the routes: a Backend, its dynamic batcher, and token-level helpers.

Routes call :class:`Service`; it turns each scoring request into batcher jobs (so concurrent
requests share forward passes) and awaits them. On the local backend, generation requests
are rows of the decode scheduler's continuous batch instead (see
:mod:`blackbox.serve.generation`), behind a bounded queue. Token-level features
(``logprobs``, ``echo``, ``/tokenize``, chat templates) need the model's tokenizer, so they
work on a backend with the ``engine`` ability (the local one); on other backends they are a
clear 400. Adapters are listed through the ``adapters`` ability, and read from the
``repository`` ability where the backend has one.
"""

from __future__ import annotations

import asyncio
import copy
import json
import random
from collections.abc import Sequence
from typing import Any

from blackbox.backends.base import Adapter, normalize_adapter
from blackbox.errors import BbxError
from blackbox.serve.batcher import Batcher, Job
from blackbox.serve.errors import APIError, from_bbx_error
from blackbox.serve.generation import Generation, Params, batcher_generation, local_generation
from blackbox.serve.reuse import Reuse

FALLBACK_CHAT = "{role}: {content}\n"


class Service:
    """One backend served over HTTP (see module docs)."""

    def __init__(self, backend: Any, model_name: str | None = None, max_batch: int = 64,
                 max_wait_s: float = 0.004, allow_adapter_paths: bool = False,
                 max_queue: int | None = None) -> None:
        self.backend = backend
        self.allow_adapter_paths = allow_adapter_paths
        # what the backend declares (blackbox.backends.abilities), read once: the routes
        # test these flags, never the backend's class or attributes
        self.caps = backend.capabilities
        self.local = bool(self.caps.engine)  # token-level routes need the engine ability
        self.model_id = model_name or (backend.model_source().name if self.local
                                       else str(self.caps.extra.get("model") or backend.name))
        self.batcher = Batcher(backend, max_batch=max_batch, max_wait_s=max_wait_s,
                               rows=self.local)
        self.decoder: Any = None
        if self.local:  # torch loads here
            from blackbox.engine.scheduler import DEFAULT_MAX_QUEUE, DecodeScheduler

            self.decoder = DecodeScheduler(
                backend, DEFAULT_MAX_QUEUE if max_queue is None else max_queue)
        self._tokenizer: Any = None
        self._engine: Any = None
        self._repo: Any = None
        self._vocab: list[str] | None = None
        self.reuse = Reuse()  # identical base-model scoring items are computed once

    # ---- lifecycle ----------------------------------------------------------------------

    def warm(self) -> None:
        """Load the model now (not on the first request) and keep what routes read.

        The routes run on the event loop while the batcher thread holds the backend's lock
        for whole forward passes: anything a route reads (engine, tokenizer, repository) is
        fetched here once, so that no route ever waits on that lock and stalls the loop.
        """
        if self.local and self._engine is None:
            self._engine = self.backend.engine
            self._repo = (self.backend.adapter_repository() if self.caps.repository
                          else None)
            # a private copy: one fast tokenizer used from two threads can fail ("borrowed")
            self._tokenizer = copy.deepcopy(self._engine.tokenizer)

    def close(self) -> None:
        """Stop the batcher and the decode scheduler, and release the backend."""
        self.batcher.close()
        if self.decoder is not None:
            self.decoder.close()
        self.backend.close()

    @property
    def engine(self) -> Any:
        """The local engine (a 400 on backends without token-level access)."""
        if not self.local:
            raise APIError(400, "this server's backend has no token-level access: logprobs, "
                           "echo and tokenize need the local backend", None, "unsupported")
        if self._engine is None:
            self.warm()
        return self._engine

    @property
    def tokenizer(self) -> Any:
        """The routes' private copy of the model's tokenizer."""
        if self._tokenizer is None:
            _ = self.engine
        return self._tokenizer

    @property
    def context_length(self) -> int | None:
        """The model's context in tokens (``None`` when unknown)."""
        return int(self.engine.max_length) if self.local else None

    @property
    def repository(self) -> Any:
        """The adapter repository (``None`` without one)."""
        if not self.local:
            return None
        _ = self.engine
        return self._repo

    # ---- adapters -----------------------------------------------------------------------

    def adapter_names(self) -> list[str]:
        """Names of the adapters requests may name."""
        repo = self.repository
        if repo is not None:
            return repo.names()
        # a backend with adapters but no local repository (the fake one) lists its own
        return sorted(self.backend.list_adapters()) if self.caps.adapters else []

    def resolve_adapter(self, model: str | None, adapter: Any) -> Adapter:
        """The request's adapter: the ``adapter`` field, else ``model`` naming an adapter
        (as vLLM serves LoRA adapters as models). Unknown names are 404s."""
        if model not in (None, "", self.model_id):
            if model in self.adapter_names():
                if adapter is not None:
                    raise APIError(400, f"model '{model}' is an adapter and the request also "
                                   "names an adapter: give one of them", "adapter")
                adapter = model
            else:
                raise APIError(404, f"model '{model}' does not exist: this server has "
                               f"'{self.model_id}' and the adapters {self.adapter_names()}",
                               "model", "model_not_found")
        spec = normalize_adapter(adapter)
        if spec is not None:
            repo = self.repository
            if repo is not None:
                repo.validate(spec)
            elif not self.caps.adapters:
                raise APIError(400, "this server has no adapter repository: start it with "
                               "--adapters DIR", "adapter", "adapters_unsupported")
            else:
                names = self.adapter_names()
                for n in [spec] if isinstance(spec, str) else spec["adapters"]:
                    if n not in names:
                        raise APIError(404, f"unknown adapter '{n}'", "adapter",
                                       "adapter_not_found")
        return spec

    # ---- running jobs -------------------------------------------------------------------

    async def run(self, job: Job) -> list[Any]:
        """Queue a job on the batcher and await its per-item results."""
        try:
            return await asyncio.wrap_future(self.batcher.submit(job))
        except BbxError as e:
            raise from_bbx_error(e) from None

    async def label_logprobs(self, prompts: list[str], words: list[str],
                             adapter: Adapter) -> list[list[float]]:
        """Batched exact label-word log-probs."""
        return await self.run(Job("label_logprobs", tuple(words), prompts, adapter))

    async def score(self, prompts: list[str], conts: list[str],
                    adapter: Adapter) -> list[list[float]]:
        """Batched continuation token log-probs."""
        if len(prompts) != len(conts):
            raise APIError(400, f"score needs one continuation per prompt: got {len(prompts)} "
                           f"prompts and {len(conts)} continuations", "continuations")
        return await self.run(Job("score", None, list(zip(prompts, conts, strict=True)),
                                  adapter))

    async def hidden(self, prompts: list[str], position: str,
                     adapter: Adapter) -> list[list[float]]:
        """Batched hidden states at the scoring position."""
        return await self.run(Job("hidden", position, prompts, adapter))

    async def generate(self, prompts: list[str], params: dict[str, Any],
                       adapter: Adapter) -> list[str]:
        """Batched generation (requests with equal params share calls)."""
        key = tuple(sorted((k, tuple(v) if isinstance(v, list) else v)
                           for k, v in params.items()))
        return await self.run(Job("generate", key, prompts, adapter))

    def generation(self, prompts: list[str], params: Params, n: int, adapter: Adapter,
                   stream: bool = False) -> Generation:
        """``n`` choices per prompt (choice ``i * n + j`` is prompt ``i``'s ``j``-th), as
        events; on the local backend a 503 when the decode queue is full."""
        if self.decoder is not None:
            return local_generation(self, prompts, params, n, adapter, stream)
        return batcher_generation(self, prompts, params, n, adapter)

    async def embed(self, texts: list[str], adapter: Adapter) -> list[list[float]]:
        """Batched sentence embeddings."""
        if self.local and self.caps.extra.get("embed_model") == "mean":
            return await self.run(Job("mean_hidden", None, texts, adapter))
        return await self.run(Job("embed", None, texts, None))

    async def seq_logprobs(self, seqs: list[list[int]], starts: list[int], top_k: int,
                           next_k: int, bias: dict[int, float] | None,
                           adapter: Adapter) -> list[Any]:
        """Token log-probs of whole sequences (see :mod:`blackbox.engine.tokens`)."""
        from blackbox.engine.tokens import sequence_logprobs

        _ = self.engine
        items = list(zip(seqs, starts, strict=True))
        key = ("seq", top_k, next_k, json.dumps(bias, sort_keys=True))

        def call(its: list[Any], adapters: list[Adapter]) -> list[Any]:
            return self.backend.call_rows(
                sequence_logprobs, ([s for s, _ in its], [st for _, st in its]), adapters,
                top_k=top_k, next_k=next_k, logit_bias=bias)

        async def compute(idx: list[int]) -> list[Any]:
            return await self.run(Job("seq_logprobs", key, [items[i] for i in idx], adapter,
                                      call=call))

        if normalize_adapter(adapter) is not None:  # adapters can change: never kept
            return await compute(list(range(len(items))))
        return await self.reuse.get([(key, tuple(s), st) for s, st in items], compute)

    # ---- tokens -------------------------------------------------------------------------

    def prompt_ids(self, text: str, special: bool = True) -> list[int]:
        """Token ids of a prompt as the engine sees it (special tokens included)."""
        ids = list(self.tokenizer(text, add_special_tokens=special)["input_ids"])
        if special and not ids:
            ids = list(self.engine._start_ids)
        return ids

    def prompt_lengths(self, texts: Sequence[str]) -> list[int]:
        """Per prompt, its tokens as the engine runs it (an empty one is its start token)."""
        ids = self.tokenizer(list(texts), add_special_tokens=True)["input_ids"]
        return [len(x) or len(self.engine._start_ids) for x in ids]

    def piece_ids(self, text: str) -> list[int]:
        """Token ids of a continuation (no special tokens)."""
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def vocabulary(self) -> list[str]:
        """Every token's text, index = token id (" positive", not "Ġpositive"), exactly as
        the local backend's ``vocabulary()`` decodes them.

        Decoded once (49k decodes take seconds) with a private tokenizer copy: the route runs
        this in a worker thread, and the routes' copy stays on the event loop alone.
        """
        if self._vocab is None:
            tok = copy.deepcopy(self.tokenizer)
            self._vocab = [tok.decode([i]) for i in range(len(tok))]
        return self._vocab

    def token_text(self, tok: int) -> str:
        """The text of one token."""
        return self.tokenizer.decode([tok])

    def decode(self, ids: Sequence[int]) -> str:
        """Text of token ids, special tokens dropped."""
        return self.tokenizer.decode(list(ids), skip_special_tokens=True)

    def count_tokens(self, texts: Sequence[str]) -> int:
        """Total tokens of texts (0 when the backend cannot count them)."""
        if self.local:  # the routes' tokenizer copy: the backend's would wait for its lock
            return sum(len(x) for x in self.tokenizer(list(texts),
                                                      add_special_tokens=True)["input_ids"])
        try:
            return int(sum(self.backend.count_tokens(list(texts))))
        except BbxError:
            return 0

    def chat_prompt(self, messages: list[dict[str, str]]) -> str:
        """The prompt text for a chat: the model's chat template, else ``role: content``."""
        tok = self.tokenizer if self.local else None
        if tok is not None and getattr(tok, "chat_template", None):
            try:
                text = tok.apply_chat_template(messages, tokenize=False,
                                               add_generation_prompt=True)
            except Exception as e:  # noqa: BLE001 - jinja errors in the template
                raise APIError(400, f"the model's chat template rejected these messages: "
                               f"{str(e).splitlines()[0] if str(e) else type(e).__name__}",
                               "messages") from None
            bos = getattr(tok, "bos_token", None)
            # the template may write the BOS itself; the engine adds one when tokenizing
            if bos and text.startswith(bos) and self.prompt_ids("")[:1] == [tok.bos_token_id]:
                text = text[len(bos):]
            return str(text)
        return "".join(FALLBACK_CHAT.format(**m) for m in messages) + "assistant:"

    @staticmethod
    def sample_seed(seed: int | None) -> int:
        """The request's seed, or a random one (OpenAI samples differ without a seed)."""
        return int(seed) if seed is not None else random.randrange(2**31)
