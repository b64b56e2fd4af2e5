"""The OpenAI routes: ``/v1/models``, ``/v1/completions``, ``/v1/chat/completions``,
``/v1/embeddings``, with the official response shapes.

Semantics follow OpenAI (and vLLM where OpenAI is silent):

* ``/v1/completions`` with ``echo=true, max_tokens=0, logprobs=k`` scores the prompt: every
  prompt token's log-prob (``None`` for the first, which nothing predicts) and its top-k;
* ``logprobs`` on generated text are those of the completion's tokens as the tokenizer
  splits the returned text;
* ``logit_bias`` shifts the next-token logits and the reported log-probs (as OpenAI's do);
  bbx applies it to single-token greedy completions (``max_tokens <= 1``,
  ``temperature = 0``), the idiom classifiers use, and refuses it elsewhere;
* ``stream=true`` sends the text as it is generated, in OpenAI's chunk shapes (see
  :mod:`blackbox.serve.streaming`), then ``[DONE]`` (with ``stream_options.include_usage``,
  a last chunk holding the usage before it); with ``logprobs`` (which need the whole text)
  the answer comes as one chunk;
* on the local backend, generation requests decode together in one continuous batch,
  behind a bounded queue: a full queue is a 503 with ``Retry-After``;
* a prompt and ``max_tokens`` that do not fit the model's context together are a 400 with
  OpenAI's ``context_length_exceeded`` message, not a completion cut short;
* fields bbx cannot honour are 400s with code ``unsupported_parameter`` (see
  :mod:`blackbox.serve.schemas`), never silently ignored.
"""

from __future__ import annotations

import base64
import struct
import time
import uuid
from typing import Any

from fastapi import APIRouter, Request

from blackbox.serve.errors import APIError
from blackbox.serve.generation import Params
from blackbox.serve.schemas import ChatRequest, CompletionRequest, EmbeddingRequest
from blackbox.serve.service import Service
from blackbox.serve.streaming import one_chunk, stream_chat, stream_completion
from blackbox.serve.streaming import usage as _usage

router = APIRouter()
DEFAULT_CHAT_MAX_TOKENS = 512


def service(request: Request) -> Service:
    return request.app.state.service


def _bias(raw: dict[str, float] | None) -> dict[int, float] | None:
    if not raw:
        return None
    return {int(k): float(v) for k, v in raw.items()}


def _unsupported(param: str, why: str) -> APIError:
    return APIError(400, f"{param}: not supported by bbx serve ({why})", param,
                    "unsupported_parameter")


def _check_context(ctx: int | None, prompt_len: int, max_tokens: int | None, where: str,
                   param: str) -> None:
    """OpenAI's 400 when the prompt and the completion asked for exceed the context; with
    ``max_tokens=None`` (none asked for) the prompt must leave room for one token."""
    if ctx is None:
        return
    head = f"This model's maximum context length is {ctx} tokens. However, "
    if max_tokens is None:
        if prompt_len >= ctx:
            raise APIError(400, f"{head}your {where} resulted in {prompt_len} tokens, which "
                           f"leaves no room for a completion. Please reduce the length of the "
                           f"{where}.", param, "context_length_exceeded")
    elif prompt_len + max_tokens > ctx:
        raise APIError(400, f"{head}you requested {prompt_len + max_tokens} tokens "
                       f"({prompt_len} in the {where}, {max_tokens} in the completion). Please "
                       f"reduce the length of the {where} or the completion.", param,
                       "context_length_exceeded")


@router.get("/v1/models")
async def list_models(request: Request) -> dict[str, Any]:
    """The served model, and each adapter as a model whose parent is the base (as vLLM)."""
    svc = service(request)
    created = int(request.app.state.started)
    data = [{"id": svc.model_id, "object": "model", "created": created, "owned_by": "bbx",
             "root": svc.model_id, "parent": None, "max_model_len": svc.context_length}]
    data += [{"id": n, "object": "model", "created": created, "owned_by": "bbx", "root": n,
              "parent": svc.model_id} for n in svc.adapter_names()]
    return {"object": "list", "data": data}


@router.get("/v1/models/{model_id}")
async def get_model(model_id: str, request: Request) -> dict[str, Any]:
    """One model by id (404 when unknown)."""
    for m in (await list_models(request))["data"]:
        if m["id"] == model_id:
            return m
    raise APIError(404, f"model '{model_id}' does not exist", "model", "model_not_found")


# ---- completions ----------------------------------------------------------------------

def _completion_logprobs(svc: Service, seq: list[int], rec: Any, offset0: int,
                         extra: tuple[int, float, list[tuple[int, float]]] | None = None
                         ) -> dict[str, Any]:
    """The legacy ``logprobs`` object for tokens ``seq[rec.start:]`` (plus one extra token)."""
    special = set(getattr(svc.tokenizer, "all_special_ids", []) or [])
    tokens, lps, tops, offsets = [], [], [], []
    at = offset0
    entries = list(zip(seq[rec.start:], rec.logprobs, rec.top, strict=True))
    if extra is not None:
        entries.append(extra)
    for tok, lp, top in entries:
        text = svc.token_text(tok)
        tokens.append(text)
        lps.append(lp)
        tops.append(None if lp is None else _top_dict(svc, top))
        offsets.append(at)
        at += 0 if tok in special else len(text)
    return {"tokens": tokens, "token_logprobs": lps, "top_logprobs": tops,
            "text_offset": offsets}


def _top_dict(svc: Service, top: list[tuple[int, float]]) -> dict[str, float]:
    # distinct ids can decode to the same text (partial UTF-8 bytes): keep the likeliest
    out: dict[str, float] = {}
    for i, v in top:
        out.setdefault(svc.token_text(i), v)
    return out


@router.post("/v1/completions")
async def completions(req: CompletionRequest, request: Request) -> Any:
    """OpenAI completions, plus the bbx ``adapter`` field."""
    svc = service(request)
    req.warn_extra("/v1/completions")
    adapter = svc.resolve_adapter(req.model, req.adapter)
    prompts = [req.prompt] if isinstance(req.prompt, str) else list(req.prompt)
    if req.best_of not in (None, req.n):
        raise _unsupported("best_of", "best_of must equal n: leave it out")
    max_tokens = 16 if req.max_tokens is None else req.max_tokens
    if svc.local:  # the longest prompt must fit with max_tokens (OpenAI's default 16 too)
        lengths = svc.prompt_lengths(prompts)
        i = max(range(len(prompts)), key=lengths.__getitem__)
        _check_context(svc.context_length, lengths[i], max_tokens,
                       "prompt" if len(prompts) == 1 else f"longest prompt (prompt {i})",
                       "prompt")
    bias = _bias(req.logit_bias)
    if bias and not (max_tokens == 0 or (max_tokens == 1 and req.temperature == 0)):
        raise _unsupported("logit_bias", "it applies to single-token greedy completions only: "
                           "max_tokens <= 1, temperature 0")
    k = req.logprobs
    token_level = k is not None or bias is not None
    if token_level and not svc.local:
        _ = svc.engine  # raises the 400 that names the limitation
    created, rid = int(time.time()), f"cmpl-{uuid.uuid4().hex[:24]}"
    choices: list[dict[str, Any]] = []
    prompt_tokens = svc.count_tokens(prompts)
    completion_tokens = 0
    stop = [req.stop] if isinstance(req.stop, str) else req.stop
    if max_tokens == 0 or (token_level and max_tokens == 1 and req.temperature == 0):
        # scoring / one greedy token: a single forward pass per prompt, no generation loop
        if svc.local:
            seqs = [svc.prompt_ids(p) for p in prompts]
            recs = await svc.seq_logprobs(seqs, [0 if req.echo else len(s) for s in seqs],
                                          k or 0, k or 0, bias, adapter)
        for i, p in enumerate(prompts):
            text, lp_obj, finish = (p if req.echo else ""), None, "length"
            if max_tokens == 1:
                rec = recs[i]
                tok = rec.next_pick
                eos = tok in svc.engine.eos_ids
                piece = "" if eos else svc.decode([tok])
                # a stop string in the token ends the text there, as in generation
                cuts = [piece.find(s) for s in stop or [] if s and s in piece]
                text += piece[:min(cuts)] if cuts else piece
                finish = "stop" if eos or cuts else "length"
                completion_tokens += 1
                if k is not None:
                    extra = (tok, rec.next_logprob, rec.next_top)
                    lp_obj = _completion_logprobs(svc, seqs[i], rec, 0, extra)
            elif k is not None and svc.local:
                lp_obj = _completion_logprobs(svc, seqs[i], recs[i], 0) if req.echo else \
                    {"tokens": [], "token_logprobs": [], "top_logprobs": [], "text_offset": []}
            for j in range(req.n):
                choices.append({"index": i * req.n + j, "text": text, "logprobs": lp_obj,
                                "finish_reason": finish})
    else:
        params = Params(max_tokens, req.temperature, req.top_p, svc.sample_seed(req.seed), stop)
        streaming = req.stream and k is None
        gen = svc.generation(prompts, params, req.n, adapter, stream=streaming)
        if streaming:
            head = {"id": rid, "object": "text_completion", "created": created,
                    "model": svc.model_id}
            prefixes = [p if req.echo else "" for p in prompts for _ in range(req.n)]
            return await stream_completion(gen, head, prefixes, _include_usage(req),
                                           prompt_tokens)
        outs = await gen.collect()
        for i, p in enumerate(prompts):
            for j in range(req.n):
                out = outs[i * req.n + j]
                completion_tokens += out.tokens
                lp_obj = None
                if k is not None:
                    p_ids = svc.prompt_ids(p)
                    seq = p_ids + svc.piece_ids(out.text)
                    rec = (await svc.seq_logprobs([seq], [0 if req.echo else len(p_ids)], k, 0,
                                                  None, adapter))[0]
                    lp_obj = _completion_logprobs(svc, seq, rec, 0)
                choices.append({"index": i * req.n + j,
                                "text": (p if req.echo else "") + out.text,
                                "logprobs": lp_obj, "finish_reason": out.finish})
    usage = _usage(prompt_tokens, completion_tokens)
    body = {"id": rid, "object": "text_completion", "created": created, "model": svc.model_id,
            "choices": choices, "usage": usage}
    if req.stream:
        return one_chunk([{**body, "usage": None}], usage if _include_usage(req) else None)
    return body


def _include_usage(req: Any) -> bool:
    return req.stream_options is not None and bool(req.stream_options.include_usage)


# ---- chat -----------------------------------------------------------------------------

def _chat_logprobs(svc: Service, seq: list[int], rec: Any) -> dict[str, Any]:
    def entry(tok: int, lp: float) -> dict[str, Any]:
        text = svc.token_text(tok)
        return {"token": text, "logprob": lp, "bytes": list(text.encode("utf-8"))}

    content = []
    for tok, lp, top in zip(seq[rec.start:], rec.logprobs, rec.top, strict=True):
        content.append({**entry(tok, lp), "top_logprobs": [entry(i, v) for i, v in top]})
    return {"content": content, "refusal": None}


@router.post("/v1/chat/completions")
async def chat_completions(req: ChatRequest, request: Request) -> Any:
    """OpenAI chat completions over the model's chat template, plus ``adapter``."""
    svc = service(request)
    req.warn_extra("/v1/chat/completions")
    adapter = svc.resolve_adapter(req.model, req.adapter)
    if req.logit_bias:
        raise _unsupported("logit_bias", "it applies on /v1/completions only, to single-token "
                           "greedy completions")
    if (req.logprobs or req.top_logprobs) and not svc.local:
        _ = svc.engine
    if req.top_logprobs and not req.logprobs:
        raise APIError(400, "top_logprobs needs logprobs=true", "top_logprobs")
    messages = [{"role": m.role, "content": m.text()} for m in req.messages]
    prompt = svc.chat_prompt(messages)
    prompt_tokens = svc.count_tokens([prompt])
    ctx = svc.context_length
    max_tokens = req.max_completion_tokens if req.max_completion_tokens is not None \
        else req.max_tokens
    _check_context(ctx, prompt_tokens, max_tokens, "messages", "messages")
    if max_tokens is None:  # what is left of the context, at most the default
        max_tokens = DEFAULT_CHAT_MAX_TOKENS if ctx is None else \
            min(DEFAULT_CHAT_MAX_TOKENS, ctx - prompt_tokens)
    stop = [req.stop] if isinstance(req.stop, str) else req.stop
    fmt = req.response_format if (req.response_format or {}).get("type") != "text" else None
    if fmt is not None and svc.decoder is None:
        raise _unsupported("response_format", "structured output is enforced while decoding, "
                           "which needs the local engine: serve a local model or leave it out")
    params = Params(max_tokens, req.temperature, req.top_p, svc.sample_seed(req.seed), stop,
                    fmt)
    rid, created = f"chatcmpl-{uuid.uuid4().hex[:24]}", int(time.time())
    streaming = req.stream and not req.logprobs
    gen = svc.generation([prompt], params, req.n, adapter, stream=streaming)
    if streaming:
        head = {"id": rid, "object": "chat.completion.chunk", "created": created,
                "model": svc.model_id}
        return await stream_chat(gen, head, _include_usage(req), prompt_tokens)
    choices: list[dict[str, Any]] = []
    completion_tokens = 0
    for j, out in enumerate(await gen.collect()):
        completion_tokens += out.tokens
        lp_obj = None
        if req.logprobs:
            p_ids = svc.prompt_ids(prompt)
            seq = p_ids + svc.piece_ids(out.text)
            rec = (await svc.seq_logprobs([seq], [len(p_ids)], req.top_logprobs or 0,
                                          0, None, adapter))[0]
            lp_obj = _chat_logprobs(svc, seq, rec)
        choices.append({"index": j, "message": {"role": "assistant", "content": out.text},
                        "logprobs": lp_obj, "finish_reason": out.finish})
    if req.stream:  # with logprobs: the whole answer as one chunk
        chunks = [{"id": rid, "object": "chat.completion.chunk", "created": created,
                   "model": svc.model_id, "choices": [
                       {"index": c["index"], "delta": {"role": "assistant",
                                                       "content": c["message"]["content"]},
                        "logprobs": c["logprobs"], "finish_reason": c["finish_reason"]}]}
                  for c in choices]
        return one_chunk(chunks, _usage(prompt_tokens, completion_tokens)
                         if _include_usage(req) else None)
    return {"id": rid, "object": "chat.completion", "created": created, "model": svc.model_id,
            "choices": choices, "usage": _usage(prompt_tokens, completion_tokens)}


# ---- embeddings -----------------------------------------------------------------------

@router.post("/v1/embeddings")
async def embeddings(req: EmbeddingRequest, request: Request) -> dict[str, Any]:
    """Sentence embeddings (MiniLM by default; ``mean`` pools the LM under the adapter)."""
    svc = service(request)
    req.warn_extra("/v1/embeddings")
    adapter = svc.resolve_adapter(req.model, req.adapter)
    texts = [req.input] if isinstance(req.input, str) else list(req.input)
    vecs = await svc.embed(texts, adapter)
    if req.dimensions is not None and vecs and req.dimensions != len(vecs[0]):
        raise _unsupported("dimensions", f"this model's embeddings have {len(vecs[0])} "
                           "dimensions, and they cannot be shortened")
    data = []
    for i, v in enumerate(vecs):
        emb: Any = v
        if req.encoding_format == "base64":
            emb = base64.b64encode(struct.pack(f"<{len(v)}f", *v)).decode("ascii")
        data.append({"object": "embedding", "index": i, "embedding": emb})
    n = svc.count_tokens(texts)
    return {"object": "list", "data": data, "model": svc.model_id,
            "usage": {"prompt_tokens": n, "total_tokens": n}}
