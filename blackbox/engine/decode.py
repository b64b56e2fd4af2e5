"""Continuous batching for generation: a running decode batch that rows join and leave at
step boundaries, over one transformers ``DynamicCache``.

The loop is written here, not taken from ``model.generate()``: ``generate`` decodes a fixed
batch to its end (no request can join while others decode), its streamers take a single
sequence, and it samples from the global RNG, where every bbx row samples from its own
generator (seeded by the request's seed and prompt, so a sample does not depend on which
rows share the batch). The pieces it is made of are transformers' own: the model's forward
pass with a ``DynamicCache``, its attention mask and position ids.

* The batch is one left-padded KV cache: row ``i`` holds ``[pads][prompt][generated]``,
  right-aligned, with a 0/1 attention mask over the same columns.
* **Join**: new rows are prefilled in their own forward pass (left-padded, as the scoring
  verbs pad; split by :meth:`Engine._batches`), take their first token from its logits, and
  their cache is left-padded to the batch's width (or the batch's to theirs) and
  concatenated along the batch dimension.
* **Step**: one forward pass of one token per row; position ids are each row's count of real
  tokens, the mask hides the pads.
* **Leave**: finished and cancelled rows are removed between steps, and the columns that are
  padding in every remaining row are cut off.

A row never attends to another row's tokens or to padding, and its positions count from its
own first token, so greedy decoding gives a row the same tokens alone or in any batch (up to
float rounding, as the scoring verbs).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.nn import functional

from blackbox.errors import BbxError

log = logging.getLogger(__name__)


@dataclass(eq=False)
class Row:
    """One sequence being generated (compared by identity).

    ``limit`` is how many tokens it may generate (``max_tokens`` within the context);
    ``stream`` keeps ``text`` current after every token (else it is decoded at the end, or
    whenever a ``stops`` string must be looked for). ``guide`` (a
    :class:`~blackbox.engine.constrain.JsonGuide`) restricts each next token to those that
    keep the text a valid JSON document. ``factors`` are its LoRA factors
    (``None``: the base model), ``adapter`` the spec they come from, ``index`` and ``tag``
    the owner's. ``finish`` is ``"stop"`` (EOS or a stop string), ``"length"``, or
    ``"cancelled"`` once it has left the batch without finishing.
    """

    ids: list[int]
    limit: int
    temperature: float = 0.0
    top_p: float = 1.0
    generator: torch.Generator | None = None
    stops: list[str] = field(default_factory=list)
    stream: bool = False
    guide: Any = None
    adapter: Any = None
    factors: Any = None
    index: int = 0
    tag: Any = None
    new: list[int] = field(default_factory=list)
    text: str = ""
    finish: str | None = None
    cancelled: bool = False
    sent: str = ""  # the part of ``text`` handed out by take_text
    joined_at: float = 0.0  # time.perf_counter() when it was admitted
    # the tokenizer's decode may drop a space before punctuation that follows it
    # (``clean_up_tokenization_spaces``): only then is a trailing space held back
    hold_spaces: bool = True

    def take_text(self) -> str:
        """The text generated since the last call that later tokens can no longer change.

        Held back until more tokens (or the end) settle it: an incomplete UTF-8 character,
        trailing spaces where the tokenizer cleans up spaces (it drops a space before
        punctuation that follows it; newlines it never touches), and a tail that may be the
        start of a stop string. So the pieces join to ``text``.
        """
        safe = self.text if self.finish is not None else \
            _stable(self.text, self.stops, self.hold_spaces)
        if not safe.startswith(self.sent):
            if self.finish is not None:
                log.warning("streamed text diverged from the final text: %r vs %r",
                            self.sent, self.text)
            return ""
        piece, self.sent = safe[len(self.sent):], safe
        return piece


def new_row(ids: list[int], prompt: str, max_tokens: int, context: int,
            temperature: float = 0.0, top_p: float = 1.0, seed: int = 0,
            stops: Iterable[str] = (), **kwargs: Any) -> Row:
    """A row for a prompt's token ids; sampled rows get their seeded generator."""
    gen = row_generator(seed, prompt) if temperature > 0 else None
    return Row(ids=list(ids), limit=max(0, min(max_tokens, context - len(ids))),
               temperature=temperature, top_p=top_p, generator=gen,
               stops=[s for s in stops if s], **kwargs)


def row_generator(seed: int, prompt: str) -> torch.Generator:
    """The sampling generator of a (seed, prompt) pair."""
    digest = hashlib.sha256(f"{seed}\x1f{prompt}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "big") >> 1)


@dataclass
class DecodeStats:
    """Counters for ``/health`` and the tests: how much decoding was shared."""

    forwards: int = 0  # every forward pass: prefills + steps
    prefills: int = 0
    steps: int = 0
    row_steps: int = 0  # rows summed over steps: row_steps / steps is the mean batch
    max_rows: int = 0  # the most rows one step decoded
    rows: int = 0  # rows admitted
    tokens: int = 0  # tokens generated
    cancelled: int = 0

    def as_dict(self) -> dict[str, float]:
        out: dict[str, float] = dict(vars(self))
        out["rows_per_step"] = round(self.row_steps / self.steps, 3) if self.steps else 0.0
        return out


class DecodeBatch:
    """The running batch over one :class:`~blackbox.engine.runtime.Engine` (see module docs).

    At most ``max_rows`` rows (default: the engine's ``batch_size``) decode together, and
    their KV cache at most ``max_tokens`` token columns summed over rows when every row has
    reached its limit (default: 16 times the engine's ``max_batch_tokens``). Not
    thread-safe: the caller holds the model.
    """

    def __init__(self, engine: Any, max_rows: int | None = None,
                 max_tokens: int | None = None, stats: DecodeStats | None = None) -> None:
        self.engine = engine
        self.max_rows = max(1, max_rows or engine.batch_size)
        self.max_tokens = max(1, max_tokens or 16 * engine.max_batch_tokens)
        self.stats = stats or DecodeStats()
        self.rows: list[Row] = []
        self._cache: Any = None
        self._mask: torch.Tensor | None = None  # (rows, columns) 0/1, long
        # whether the tokenizer's decode drops a space before punctuation (Row.hold_spaces)
        self._cleans_spaces = bool(getattr(engine.tokenizer, "clean_up_tokenization_spaces",
                                           True))

    def room(self, candidates: Iterable[Row]) -> int:
        """How many of ``candidates`` (from the front) may join now; an empty batch takes
        at least one."""
        n = len(self.rows)
        longest = max((_final(r) for r in self.rows), default=0)
        k = 0
        for r in candidates:
            wider = max(longest, _final(r))
            if n and (n + 1 > self.max_rows or (n + 1) * wider > self.max_tokens):
                break
            n, longest, k = n + 1, wider, k + 1
        return k

    @torch.inference_mode()
    def admit(self, rows: list[Row]) -> None:
        """Prefill ``rows``, pick each one's first token, and join the unfinished ones."""
        live = []
        now = time.perf_counter()
        for r in rows:
            self.stats.rows += 1
            r.joined_at = now
            r.hold_spaces = self._cleans_spaces
            if r.limit <= 0:
                r.finish = "length"
            else:
                live.append(r)
        for chunk in self.engine._batches([len(r.ids) for r in live]):
            group = [live[i] for i in chunk]
            inputs = self.engine._pad([r.ids for r in group])
            # a plain DynamicCache (full-attention layers) whatever the config says: its
            # layers are tensors that can be padded and concatenated row-wise
            cache = _new_cache()
            with self._lora(group):
                res = self.engine.model(**inputs, cache=cache, use_cache=True,
                                        logits_to_keep=1)
            self.stats.forwards += 1
            self.stats.prefills += 1
            for r, tok in zip(group, _pick(res.logits[:, -1, :], group), strict=True):
                self._accept(r, tok)
            keep = [i for i, r in enumerate(group) if r.finish is None]
            if keep:
                self._join([group[i] for i in keep], res.cache, inputs["attention_mask"], keep)

    @torch.inference_mode()
    def step(self) -> None:
        """One forward pass of one token per row; finished rows leave the batch."""
        if not self.rows:
            return
        assert self._mask is not None
        rows = self.rows
        dev = self.engine.device
        ids = torch.tensor([[r.new[-1]] for r in rows], dtype=torch.long, device=dev)
        pos = self._mask.sum(1, keepdim=True)  # each row's real tokens so far
        mask = torch.cat([self._mask, self._mask.new_ones((len(rows), 1))], dim=1)
        with self._lora(rows):
            res = self.engine.model(input_ids=ids, attention_mask=mask, position_ids=pos,
                                    cache=self._cache, use_cache=True, logits_to_keep=1)
        self._cache, self._mask = res.cache, mask
        self.stats.forwards += 1
        self.stats.steps += 1
        self.stats.row_steps += len(rows)
        self.stats.max_rows = max(self.stats.max_rows, len(rows))
        for r, tok in zip(rows, _pick(res.logits[:, -1, :], rows), strict=True):
            self._accept(r, tok)
        self.prune()

    def prune(self) -> None:
        """Remove finished and cancelled rows; cut the columns that are padding in all."""
        keep = [i for i, r in enumerate(self.rows) if r.finish is None and not r.cancelled]
        if len(keep) == len(self.rows):
            return
        for r in self.rows:
            if r.finish is None and r.cancelled:
                r.finish = "cancelled"
                self.stats.cancelled += 1
        if not keep:
            self.rows, self._cache, self._mask = [], None, None
            return
        assert self._mask is not None
        idx = torch.tensor(keep, device=self._mask.device)
        mask = self._mask[idx]
        cut = mask.shape[1] - int(mask.sum(1).max())
        for layer in self._cache.layers:
            layer.keys = layer.keys[idx, :, cut:]
            layer.values = layer.values[idx, :, cut:]
        self._mask = mask[:, cut:]
        self.rows = [self.rows[i] for i in keep]

    def _join(self, rows: list[Row], cache: Any, mask: torch.Tensor, keep: list[int]) -> None:
        if len(keep) < mask.shape[0]:  # some finished on their first token
            idx = torch.tensor(keep, device=mask.device)
            mask = mask[idx]
            for layer in cache.layers:
                layer.keys, layer.values = layer.keys[idx], layer.values[idx]
        if self._cache is None or self._mask is None:
            self.rows, self._cache, self._mask = list(rows), cache, mask
            return
        width = max(self._mask.shape[1], mask.shape[1])
        for old, new in zip(self._cache.layers, cache.layers, strict=True):
            old.keys = torch.cat([_left_pad(old.keys, width), _left_pad(new.keys, width)])
            old.values = torch.cat([_left_pad(old.values, width),
                                    _left_pad(new.values, width)])
        self._mask = torch.cat([_left_pad(self._mask, width), _left_pad(mask, width)])
        self.rows += rows

    def _accept(self, row: Row, tok: int) -> None:
        if tok in self.engine.eos_ids:
            row.finish = "stop"
        else:
            row.new.append(tok)
            self.stats.tokens += 1
            if len(row.new) >= row.limit:
                row.finish = "length"
        # decoding every row after every token costs ~1% of a step (a fast tokenizer, a
        # few hundred tokens); without streaming or stop strings it waits for the end
        if row.stream or row.stops or row.finish is not None:
            text = self.engine._decode(row.new)
            cuts = [text.find(s) for s in row.stops if s in text]
            if cuts:
                text, row.finish = text[:min(cuts)], "stop"
            row.text = text

    def _lora(self, rows: list[Row]) -> Any:
        factors = [r.factors for r in rows]
        if all(f is None for f in factors):
            return contextlib.nullcontext()
        if self.engine.adapters is None:
            raise BbxError("this engine has no adapters attached: run without an adapter")
        return self.engine.adapters.rows(factors)


def _new_cache() -> Any:
    from transformers import DynamicCache

    return DynamicCache()


def _final(row: Row) -> int:
    return len(row.ids) + row.limit


def _left_pad(t: torch.Tensor, width: int) -> torch.Tensor:
    """Zeros on the left of the sequence axis (dim 2 of (rows, heads, seq, dim) tensors,
    dim 1 of a (rows, seq) mask) up to ``width``."""
    extra = width - t.shape[-2 if t.dim() == 4 else -1]
    if extra == 0:
        return t
    return functional.pad(t, (0, 0, extra, 0) if t.dim() == 4 else (extra, 0))


def _pick(logits: torch.Tensor, rows: list[Row]) -> list[int]:
    """Per row, the greedy argmax or a temperature / nucleus sample from its generator
    (among the tokens its guide allows, if it has one)."""
    logits = logits.float()
    for i, r in enumerate(rows):
        if r.guide is not None:
            allowed = torch.tensor(r.guide.allowed(r.new), dtype=torch.long,
                                   device=logits.device)
            masked = torch.full_like(logits[i], float("-inf"))
            masked[allowed] = logits[i, allowed]
            logits[i] = masked
    out = logits.argmax(dim=-1).tolist()
    for i, r in enumerate(rows):
        if r.temperature == 0:
            continue
        probs = torch.softmax(logits[i] / r.temperature, dim=-1).cpu()
        if r.top_p < 1:
            sorted_p, idx = probs.sort(descending=True)
            # keep the smallest prefix whose mass reaches top_p (always at least one token)
            sorted_p[sorted_p.cumsum(-1) - sorted_p >= r.top_p] = 0
            probs = torch.zeros_like(probs).scatter(-1, idx, sorted_p)
        out[i] = int(torch.multinomial(probs, 1, generator=r.generator))
    return out


def _stable(text: str, stops: list[str], hold_spaces: bool = True) -> str:
    """``text`` without the tail later tokens may still change (see Row.take_text)."""
    end = len(text)
    while end and text[end - 1] == "\ufffd":  # a character whose bytes span tokens
        end -= 1
    while hold_spaces and end and text[end - 1] == " ":
        end -= 1
    hold = 0
    for s in stops:
        for k in range(min(len(s) - 1, end), hold, -1):
            if text.endswith(s[:k], 0, end):
                hold = k
                break
    return text[:end - hold]
