"""Token-level log-probs over whole sequences: what OpenAI's ``logprobs`` / ``echo`` return.

The :class:`~blackbox.engine.runtime.Engine` verbs read a few chosen tokens; the serving
layer also needs, per position, the log-prob of the token that is there and the top-k
alternatives (``echo=true`` prompt scoring, ``logprobs`` on generated text), and the top-k of
the next token under an optional ``logit_bias`` (OpenAI reports log-probs after the bias).
This module does that with the engine's own batching, padding and per-row adapters.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from blackbox.errors import BbxError


@dataclass
class SeqLogprobs:
    """Log-probs of one sequence from position ``start`` on, plus its next-token top-k.

    ``logprobs[j]`` is the log-prob of token ``start + j`` given the tokens before it
    (``None`` for position 0, which nothing predicts); ``top[j]`` its top-k alternatives as
    ``(token id, log-prob)``; ``next_top`` the top-k after the last token (``next_k`` of
    them), ``next_pick`` the greedy next token under the bias.
    """

    start: int
    logprobs: list[float | None] = field(default_factory=list)
    top: list[list[tuple[int, float]]] = field(default_factory=list)
    next_top: list[tuple[int, float]] = field(default_factory=list)
    next_pick: int | None = None
    next_logprob: float | None = None


@torch.inference_mode()
def sequence_logprobs(
    engine: Any,
    seqs: Sequence[list[int]],
    starts: Sequence[int],
    top_k: int = 0,
    next_k: int = 0,
    logit_bias: dict[int, float] | None = None,
    adapters: Sequence[Any] | None = None,
) -> list[SeqLogprobs]:
    """Per token-id sequence, log-probs of its tokens from ``starts[i]`` on (see
    :class:`SeqLogprobs`); ``logit_bias`` shifts the next-token logits only (the prompt's
    own tokens are scored unbiased, as OpenAI's ``echo`` does)."""
    if len(starts) != len(seqs):
        raise BbxError("sequence_logprobs needs one start per sequence")
    vocab = engine.model.get_output_embeddings().weight.shape[0]
    bias = None
    if logit_bias:
        bias = torch.zeros(vocab)
        for tok, b in logit_bias.items():
            if not 0 <= int(tok) < vocab:
                raise BbxError(f"logit_bias token id {tok} is outside the vocabulary "
                               f"(0..{vocab - 1})")
            bias[int(tok)] = float(b)
    for i, s in enumerate(seqs):
        if not s:
            raise BbxError(f"sequence {i} is empty")
        engine._check_length(i, len(s))
    first = [min(max(1, st), len(s)) for st, s in zip(starts, seqs, strict=True)]
    keeps = [len(s) - f + 1 for s, f in zip(seqs, first, strict=True)]
    out = [SeqLogprobs(start=min(max(0, st), len(s))) for st, s in zip(starts, seqs, strict=True)]
    for batch in engine._batches([len(s) for s in seqs], keeps):
        keep = max(keeps[i] for i in batch)
        with engine._rows(adapters, batch):
            logits = engine.model(**engine._pad([seqs[i] for i in batch]), use_cache=False,
                                  logits_to_keep=keep).logits
        for row, i in enumerate(batch):
            seq, n = seqs[i], len(seqs[i])
            rec = out[i]
            if rec.start == 0:
                rec.logprobs.append(None)
                rec.top.append([])
            # kept column c holds the logits after token (n - keep + c)
            cols = list(range(keep - (n - first[i]) - 1, keep - 1))
            if cols:
                logp = torch.log_softmax(logits[row, cols].float(), dim=-1)
                toks = torch.tensor(seq[first[i]:], device=logp.device)
                rec.logprobs += logp[torch.arange(len(cols), device=logp.device), toks].tolist()
                if top_k > 0:
                    vals, idx = logp.topk(min(top_k, vocab), dim=-1)
                    rec.top += [list(zip(ix, vs, strict=True))
                                for ix, vs in zip(idx.tolist(), vals.tolist(), strict=True)]
                else:
                    rec.top += [[] for _ in cols]
            last = logits[row, keep - 1].float()
            if bias is not None:
                last = last + bias.to(last.device)
            logp = torch.log_softmax(last, dim=-1)
            rec.next_pick = int(logp.argmax())
            rec.next_logprob = float(logp[rec.next_pick])
            if next_k > 0:
                vals, idx = logp.topk(min(next_k, vocab))
                rec.next_top = list(zip(idx.tolist(), vals.tolist(), strict=True))
    return out
