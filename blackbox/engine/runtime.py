"""The batched verbs over one loaded causal LM: label log-probs, scores, hidden states, text.

Every verb follows the same plan: tokenize everything, sort the sequences by length, cut
them into batches (at most ``batch_size`` rows and ``max_batch_tokens`` padded tokens), run
ONE forward pass per batch under ``torch.inference_mode()``, and put the answers back in the
caller's order. Batches are left-padded, with an attention mask and position ids that count
from each row's first real token, so a padded row gives the same numbers as the row alone
(up to float rounding). Text is the exception: it decodes in a continuous batch over a KV
cache (:mod:`blackbox.engine.decode`), padded the same way.

Logits are computed only where they are read (``logits_to_keep``): the LM head of a small
model over a 49k vocabulary costs as much as several transformer layers per position.

Tokenization conventions:

* prompts get the tokenizer's special tokens (a BOS where the model expects one); an empty
  prompt that tokenizes to nothing is scored after the BOS token (or EOS when there is none);
* label words and continuations are tokenized on their own, without special tokens, and
  appended to the prompt's tokens. They should carry their leading space (" positive"). So a
  multi-token label word's log-prob is exactly the sum of its :meth:`Engine.score` values;
* a prompt (plus the label or continuation tokens) longer than the model's context is a
  :class:`~blackbox.errors.BbxError` naming both lengths; nothing is silently truncated.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

import torch

from blackbox.errors import BbxError

Reads = list[tuple[int, int]]  # (positions back from the end: 1 = last, token id to read)


def context_length(model: Any, tokenizer: Any) -> int:
    """The longest sequence the model takes: its position limit, or the tokenizer's if lower."""
    limit = int(getattr(model.config, "max_position_embeddings", 0) or 0) or 1 << 30
    tok_limit = getattr(tokenizer, "model_max_length", None)
    # Tokenizers without a limit report a sentinel around 1e30; ignore it.
    if isinstance(tok_limit, int) and 0 < tok_limit < 1 << 24:
        limit = min(limit, tok_limit)
    return limit


def default_batch_tokens(device_type: str) -> int:
    """Padded tokens per forward pass when the caller sets none: 1024 on a CPU, 8192 else.

    On a CPU a batch's activations should stay in cache (the MLP's 1536-wide intermediate
    of 1024 tokens is 3 MB in bf16): measured on a 2-core Zen 4, SmolLM2 in bf16 scored
    66-token AG News prompts 25% faster in batches of 1024 tokens than of 32 rows (2100
    tokens), 20-token SST-2 prompts 4% faster. A GPU wants the largest batch that fits.
    """
    return 1024 if device_type == "cpu" else 8192


class Engine:
    """Batched scoring and generation over one (model, tokenizer) pair. Not thread-safe."""

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        device: str | torch.device | None = None,
        dtype: torch.dtype | None = None,
        batch_size: int = 32,
        max_batch_tokens: int | None = None,
        max_logits: int = 1 << 26,
    ) -> None:
        param = next(model.parameters())
        self.device = torch.device(device) if device is not None else param.device
        if max_batch_tokens is None:
            max_batch_tokens = default_batch_tokens(self.device.type)
        if batch_size < 1 or max_batch_tokens < 1 or max_logits < 1:
            raise BbxError("batch_size, max_batch_tokens and max_logits must be at least 1")
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.dtype = dtype or param.dtype
        self.batch_size = batch_size
        self.max_batch_tokens = max_batch_tokens
        self.max_logits = max_logits  # kept logit values per batch (64M: 256 MB in fp32)
        self.max_length = context_length(model, tokenizer)
        eos = tokenizer.eos_token_id
        self.pad_id = next(i for i in (tokenizer.pad_token_id, eos, 0) if i is not None)
        # An empty prompt has no position to predict from: start it with BOS (or EOS).
        start = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else eos
        self._start_ids = [start] if start is not None else []
        gen_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
        ids = gen_eos if isinstance(gen_eos, list) else [gen_eos]
        self.eos_ids = {i for i in [eos, *ids] if i is not None}
        # Per-row LoRA factors (a blackbox.engine.lora.BatchedLora), set by the local backend
        # when it has an adapter repository; the verbs' ``adapters`` give one per prompt.
        self.adapters: Any = None

    @classmethod
    def from_spec(
        cls, spec: str = "default", device: str = "auto", dtype: str = "auto", **kwargs: Any
    ) -> Engine:
        """Load a model with :func:`blackbox.engine.loader.load_model` and wrap it."""
        from blackbox.engine.loader import load_model

        loaded = load_model(spec, device=device, dtype=dtype)
        return cls(loaded.model, loaded.tokenizer, loaded.placement.device,
                   getattr(torch, loaded.placement.dtype), **kwargs)

    @property
    def hidden_size(self) -> int:
        """Width of the vectors :meth:`hidden` returns."""
        return int(self.model.config.hidden_size)

    # ---- tokenization -------------------------------------------------------------------

    def _prompt_ids(self, prompts: Sequence[str]) -> list[list[int]]:
        if isinstance(prompts, str):
            raise BbxError("pass a list of prompts, not a single string")
        if not prompts:
            return []
        ids = self.tokenizer(list(prompts), add_special_tokens=True)["input_ids"]
        out = [list(x) if x else list(self._start_ids) for x in ids]
        if any(not x for x in out):
            raise BbxError("an empty prompt cannot be scored: this tokenizer has no BOS token")
        return out

    def _piece_ids(self, texts: Sequence[str], what: str) -> list[list[int]]:
        if isinstance(texts, str):
            raise BbxError(f"pass a list of {what}s, not a single string")
        ids = self.tokenizer(list(texts), add_special_tokens=False)["input_ids"] if texts else []
        for text, x in zip(texts, ids, strict=True):
            if not x:
                raise BbxError(f"{what} {text!r} is empty after tokenization: give some text")
        return [list(x) for x in ids]

    def _check_length(self, index: int, n: int) -> None:
        if n > self.max_length:
            raise BbxError(
                f"prompt {index} needs {n} tokens, more than the model's context of "
                f"{self.max_length} tokens: shorten it (e.g. set max_words on the task)"
            )

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        """Per text, its token count as the model sees it (special tokens included)."""
        if isinstance(texts, str):
            raise BbxError("pass a list of texts, not a single string")
        if not texts:
            return []
        return [len(x) for x in self.tokenizer(list(texts), add_special_tokens=True)["input_ids"]]

    # ---- batching -----------------------------------------------------------------------

    def _batches(
        self, lengths: Sequence[int], keeps: Sequence[int] | None = None
    ) -> Iterator[list[int]]:
        """Indices grouped into batches of similar length, longest first (OOM shows early).

        A batch holds at most ``batch_size`` rows and ``max_batch_tokens`` padded tokens, and
        at most ``max_logits`` logit values when ``keeps`` (logit positions per row) is given.
        """
        order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
        vocab = int(getattr(self.model.config, "vocab_size", 0) or 0)
        batch: list[int] = []
        keep = 0
        for i in order:
            longest = lengths[batch[0]] if batch else lengths[i]
            k = max(keep, keeps[i]) if keeps is not None else 0
            n = len(batch) + 1
            if batch and (n > self.batch_size or n * longest > self.max_batch_tokens
                          or n * k * vocab > self.max_logits):
                yield batch
                batch, k = [], keeps[i] if keeps is not None else 0
            batch.append(i)
            keep = k
        if batch:
            yield batch

    def _rows(self, rows: Sequence[Any] | None, batch: Sequence[int]) -> Any:
        """The per-row adapter factors of one batch, active for the forward passes inside."""
        if rows is None or all(rows[i] is None for i in batch):
            return contextlib.nullcontext()
        if self.adapters is None:
            raise BbxError("this engine has no adapters attached: run without an adapter")
        return self.adapters.rows([rows[i] for i in batch])

    def _pad(self, seqs: Sequence[Sequence[int]]) -> dict[str, torch.Tensor]:
        """Left-pad; position ids count from each row's first real token."""
        width = max(len(s) for s in seqs)
        ids = torch.full((len(seqs), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        for row, s in enumerate(seqs):
            ids[row, width - len(s):] = torch.tensor(s, dtype=torch.long)
            mask[row, width - len(s):] = 1
        pos = (mask.cumsum(-1) - 1).clamp(min=0)
        return {"input_ids": ids.to(self.device), "attention_mask": mask.to(self.device),
                "position_ids": pos.to(self.device)}

    @torch.inference_mode()
    def _read_logprobs(
        self, seqs: Sequence[list[int]], reads: Sequence[Reads],
        rows: Sequence[Any] | None = None,
    ) -> list[list[float]]:
        """Per sequence, the log-prob of each (positions back, token) read.

        ``(1, t)`` is the log-prob that ``t`` follows the whole sequence; ``(k, t)`` that it
        follows the sequence minus its last ``k - 1`` tokens. Logits are computed for the
        last ``max k`` positions of each batch only.
        """
        out: list[list[float]] = [[] for _ in seqs]
        backs = [max((b for b, _ in r), default=1) for r in reads]
        for batch in self._batches([len(s) for s in seqs], backs):
            keep = max(backs[i] for i in batch)
            with self._rows(rows, batch):
                logits = self.model(**self._pad([seqs[i] for i in batch]), use_cache=False,
                                    logits_to_keep=keep).logits
            # log-softmax over the full vocabulary, in fp32 whatever the model dtype; row by
            # row at the read positions only, so no fp32 copy of all kept logits is made.
            for row, i in enumerate(batch):
                if not reads[i]:
                    continue
                pos = torch.tensor([keep - back for back, _ in reads[i]], device=logits.device)
                tok = torch.tensor([t for _, t in reads[i]], device=logits.device)
                logp = torch.log_softmax(logits[row, pos].float(), dim=-1)
                out[i] = logp[torch.arange(len(pos), device=logits.device), tok].tolist()
        return out

    # ---- verbs --------------------------------------------------------------------------

    def label_logprobs(
        self, prompts: Sequence[str], label_words: Sequence[str],
        adapters: Sequence[Any] | None = None,
    ) -> list[list[float]]:
        """Per prompt, log P(label word | prompt) for each word, over the full vocabulary.

        A multi-token word scores as the sum of its tokens' log-probs. When every word is
        one token this is one forward pass per batch with logits at the last position only;
        otherwise each prompt is extended once per multi-token word. ``adapters`` (here and
        in every verb): per prompt, LoRA factors or ``None`` (see :meth:`_rows`).
        """
        words = self._piece_ids(label_words, "label word")
        if not words:
            raise BbxError("label_logprobs needs at least one label word")
        p_ids = self._prompt_ids(prompts)
        extra = max(len(w) for w in words) - 1
        for i, p in enumerate(p_ids):
            self._check_length(i, len(p) + extra)
        if extra == 0:
            last: list[Reads] = [[(1, w[0]) for w in words]] * len(p_ids)
            return self._read_logprobs(p_ids, last, _per_row(adapters, len(p_ids)))
        # One sequence per (prompt, multi-token word): prompt + word[:-1]. Single-token words
        # are read from the first of these at the prompt's last position (same prefix).
        multi = [j for j, w in enumerate(words) if len(w) > 1]
        first = words[multi[0]]
        seqs: list[list[int]] = []
        reads_all: list[Reads] = []
        for p in p_ids:
            for j in multi:
                w = words[j]
                reads = [(len(w) - r, t) for r, t in enumerate(w)]
                if j == multi[0]:
                    reads += [(len(first), w2[0]) for w2 in words if len(w2) == 1]
                seqs.append(p + w[:-1])
                reads_all.append(reads)
        rows = _per_row(adapters, len(p_ids))
        flat = self._read_logprobs(seqs, reads_all, None if rows is None else
                                   [rows[i] for i in range(len(p_ids)) for _ in multi])
        out = []
        for i in range(len(p_ids)):
            rows = flat[i * len(multi):(i + 1) * len(multi)]
            singles = iter(rows[0][len(first):])
            sums = {j: sum(rows[k][:len(words[j])]) for k, j in enumerate(multi)}
            out.append([sums[j] if j in sums else next(singles) for j in range(len(words))])
        return out

    def score(self, prompts: Sequence[str], continuations: Sequence[str],
              adapters: Sequence[Any] | None = None) -> list[list[float]]:
        """Per (prompt, continuation) pair, the log-prob of each continuation token."""
        if len(prompts) != len(continuations):
            raise BbxError(f"score needs one continuation per prompt: got {len(prompts)} "
                           f"prompts and {len(continuations)} continuations")
        p_ids = self._prompt_ids(prompts)
        c_ids = self._piece_ids(continuations, "continuation")
        seqs, reads = [], []
        for i, (p, c) in enumerate(zip(p_ids, c_ids, strict=True)):
            self._check_length(i, len(p) + len(c) - 1)
            seqs.append(p + c[:-1])
            reads.append([(len(c) - r, t) for r, t in enumerate(c)])
        return self._read_logprobs(seqs, reads, _per_row(adapters, len(seqs)))

    @torch.inference_mode()
    def hidden(self, prompts: Sequence[str], position: str = "last",
               adapters: Sequence[Any] | None = None) -> list[list[float]]:
        """Per prompt, the last layer's (final-norm) hidden state at the prompt's last token.

        ``position="mask"`` means the same for a causal LM: the state that predicts the
        next token, where a masked LM would read its mask.
        """
        if position not in ("last", "mask"):
            raise BbxError(f"unknown hidden-state position '{position}': use last or mask")
        p_ids = self._prompt_ids(prompts)
        for i, p in enumerate(p_ids):
            self._check_length(i, len(p))
        rows = _per_row(adapters, len(p_ids))
        base = self.model.base_model  # the decoder without the LM head: no logits at all
        out: list[list[float]] = [[] for _ in p_ids]
        for batch in self._batches([len(p) for p in p_ids]):
            with self._rows(rows, batch):
                states = base(**self._pad([p_ids[i] for i in batch]), use_cache=False)
            last = states.last_hidden_state[:, -1, :].float().cpu()
            for row, i in enumerate(batch):
                out[i] = last[row].tolist()
        return out

    @torch.inference_mode()
    def mean_hidden(self, texts: Sequence[str],
                    adapters: Sequence[Any] | None = None) -> list[list[float]]:
        """Per text, the last layer's states mean-pooled over its tokens, L2-normalized.

        A stand-in sentence embedding from the LM itself, for when no embedding model is
        installed.
        """
        ids = self._prompt_ids(texts)
        for i, x in enumerate(ids):
            self._check_length(i, len(x))
        out: list[list[float]] = [[] for _ in ids]
        for batch in self._batches([len(x) for x in ids]):
            inputs = self._pad([ids[i] for i in batch])
            with self._rows(_per_row(adapters, len(ids)), batch):
                states = self.model.base_model(**inputs, use_cache=False).last_hidden_state
            mask = inputs["attention_mask"].unsqueeze(-1).to(states.dtype)
            pooled = ((states * mask).sum(1) / mask.sum(1)).float()
            vecs = torch.nn.functional.normalize(pooled, dim=-1).cpu()
            for row, i in enumerate(batch):
                out[i] = vecs[row].tolist()
        return out

    def generate(
        self,
        prompts: Sequence[str],
        max_tokens: int = 64,
        temperature: float = 0.0,
        top_p: float = 1.0,
        seed: int = 0,
        stop: Sequence[str] | str | None = None,
        adapters: Sequence[Any] | None = None,
    ) -> list[str]:
        """Per prompt, a continuation: greedy at ``temperature=0``, else sampled.

        Sampling draws from one generator per prompt seeded by ``seed`` and the prompt text,
        so a prompt's sample does not depend on which prompts share its batch. Generation
        stops at EOS, at ``max_tokens``, at the context limit, or at a ``stop`` string (which
        is cut off, as OpenAI does). Prompts decode in one continuous batch
        (:class:`~blackbox.engine.decode.DecodeBatch`): a prompt that finishes early makes
        room for the next one at once.
        """
        from collections import deque

        from blackbox.engine.decode import DecodeBatch, new_row

        if max_tokens < 0 or temperature < 0 or not 0 < top_p <= 1:
            raise BbxError("generate needs max_tokens >= 0, temperature >= 0, 0 < top_p <= 1")
        stops = [s for s in ([stop] if isinstance(stop, str) else stop or []) if s]
        p_ids = self._prompt_ids(prompts)
        for i, p in enumerate(p_ids):
            self._check_length(i, len(p))
        factors = _per_row(adapters, len(p_ids)) or [None] * len(p_ids)
        rows = [new_row(ids, prompt, max_tokens, self.max_length, temperature, top_p, seed,
                        stops, factors=f)
                for ids, prompt, f in zip(p_ids, prompts, factors, strict=True)]
        batch = DecodeBatch(self)
        waiting = deque(rows)
        while waiting or batch.rows:
            joining = [waiting.popleft() for _ in range(batch.room(waiting))]
            if joining:
                batch.admit(joining)
            batch.step()
        return [r.text for r in rows]

    def _decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True)


def _per_row(adapters: Sequence[Any] | None, n: int) -> Sequence[Any] | None:
    if adapters is not None and len(adapters) != n:
        raise BbxError(f"got {len(adapters)} adapters for {n} prompts: give one per prompt")
    return adapters
