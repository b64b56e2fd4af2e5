"""The bbx extensions: exact label-word log-probs, scores, hidden states, the adapter
repository, server capabilities, the tokenizer's vocabulary, and vLLM's ``/tokenize``.

Every extension takes ``adapter`` (a name or a mixture) like the OpenAI routes do, and is
batched across concurrent requests. ``GET /v1/bbx`` is how a client detects a bbx server
(other servers answer 404) and which extensions it has.
"""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, Request

from blackbox import __version__
from blackbox.serve.errors import APIError
from blackbox.serve.schemas import (
    AdapterLoadRequest,
    AdapterMaterializeRequest,
    HiddenRequest,
    LabelLogprobsRequest,
    ScoreRequest,
    TokenizeRequest,
)
from blackbox.serve.service import Service

router = APIRouter()
public = APIRouter()  # no auth: liveness only
EXTENSIONS = ["label_logprobs", "score", "hidden_states", "adapters", "tokenize", "vocabulary"]


def service(request: Request) -> Service:
    return request.app.state.service


@public.get("/health")
async def health(request: Request) -> dict[str, Any]:
    """Liveness: ``{"status": "ok"}`` plus batching and decoding counters."""
    svc = service(request)
    out = {"status": "ok", "model": svc.model_id,
           "uptime_s": round(time.time() - request.app.state.started, 1),
           "batching": svc.batcher.stats.as_dict(), "reuse": svc.reuse.stats.as_dict()}
    if svc.decoder is not None:
        out["decoding"] = svc.decoder.as_dict()
    return out


@router.get("/v1/bbx")
async def bbx_info(request: Request) -> dict[str, Any]:
    """What this server is: bbx version, model, fingerprint, extensions, adapters."""
    svc = service(request)
    caps = svc.backend.capabilities
    return {"object": "bbx.server", "version": __version__, "model": svc.model_id,
            "fingerprint": svc.backend.fingerprint, "extensions": EXTENSIONS,
            "token_logprobs": svc.local, "adapters": bool(caps.adapters),
            "context_length": svc.context_length,
            "hidden": caps.hidden, "label_logprobs": caps.label_logprobs}


def _data(kind: str, rows: list[Any], field: str) -> list[dict[str, Any]]:
    return [{"object": kind, "index": i, field: r} for i, r in enumerate(rows)]


@router.post("/v1/label_logprobs")
async def label_logprobs(req: LabelLogprobsRequest, request: Request) -> dict[str, Any]:
    """Per prompt, log P(label word | prompt) for each label word, exactly (full vocabulary)."""
    svc = service(request)
    req.warn_extra("/v1/label_logprobs")
    adapter = svc.resolve_adapter(req.model, req.adapter)
    rows = await svc.label_logprobs(list(req.prompts), list(req.label_words), adapter)
    n = svc.count_tokens(req.prompts)
    return {"object": "list", "model": svc.model_id, "label_words": req.label_words,
            "data": _data("label_logprobs", rows, "logprobs"),
            "usage": {"prompt_tokens": n, "total_tokens": n}}


@router.post("/v1/score")
async def score(req: ScoreRequest, request: Request) -> dict[str, Any]:
    """Per (prompt, continuation), the log-prob of each continuation token."""
    svc = service(request)
    req.warn_extra("/v1/score")
    adapter = svc.resolve_adapter(req.model, req.adapter)
    rows = await svc.score(list(req.prompts), list(req.continuations), adapter)
    n = svc.count_tokens([p + c for p, c in zip(req.prompts, req.continuations, strict=True)])
    return {"object": "list", "model": svc.model_id,
            "data": _data("score", rows, "token_logprobs"),
            "usage": {"prompt_tokens": n, "total_tokens": n}}


@router.post("/v1/hidden_states")
async def hidden_states(req: HiddenRequest, request: Request) -> dict[str, Any]:
    """Per input, the last layer's hidden state at its scoring position."""
    svc = service(request)
    req.warn_extra("/v1/hidden_states")
    adapter = svc.resolve_adapter(req.model, req.adapter)
    texts = [req.input] if isinstance(req.input, str) else list(req.input)
    if svc.backend.capabilities.hidden != "native":
        raise APIError(400, "this backend has no hidden states: use /v1/embeddings",
                       "input", "unsupported")
    rows = await svc.hidden(texts, req.position, adapter)
    n = svc.count_tokens(texts)
    return {"object": "list", "model": svc.model_id,
            "data": _data("hidden_state", rows, "hidden"),
            "usage": {"prompt_tokens": n, "total_tokens": n}}


@router.post("/tokenize")
async def tokenize(req: TokenizeRequest, request: Request) -> dict[str, Any]:
    """vLLM's ``/tokenize``: token ids of a prompt (clients use it for ``logit_bias``)."""
    svc = service(request)
    req.warn_extra("/tokenize")
    if not svc.local:
        _ = svc.engine
    ids = svc.prompt_ids(req.prompt) if req.add_special_tokens else svc.piece_ids(req.prompt)
    return {"tokens": ids, "count": len(ids), "max_model_len": svc.context_length}


@router.get("/v1/vocabulary")
async def vocabulary(request: Request) -> dict[str, Any]:
    """Every token of the model's tokenizer as text, ``tokens[i]`` = token id ``i``.

    Tokenizers are public for hosted models too, and prompt search over tokens (ClaPS's
    candidate vocabulary) needs them; the weights (the embedding table) stay private.
    """
    import asyncio

    svc = service(request)
    if not svc.local:
        _ = svc.engine  # the 400: no tokenizer behind this backend
    tokens = await asyncio.to_thread(svc.vocabulary)
    return {"object": "vocabulary", "model": svc.model_id, "size": len(tokens),
            "tokens": tokens}


# ---- the adapter repository -----------------------------------------------------------

def _repo(svc: Service) -> Any:
    repo = svc.repository
    if repo is None:
        raise APIError(400, "this server has no adapter repository: start it with "
                       "--adapters DIR", None, "adapters_unsupported")
    return repo


@router.get("/v1/adapters")
async def list_adapters(request: Request) -> dict[str, Any]:
    """The adapters this server can apply (loaded into memory or not yet)."""
    svc = service(request)
    repo = svc.repository
    if repo is None:
        return {"object": "list", "data": [{"name": n, "object": "adapter"}
                                           for n in svc.adapter_names()]}
    return {"object": "list", "data": [{"object": "adapter", **a} for a in repo.list()]}


@router.post("/v1/adapters")
async def load_adapter(req: AdapterLoadRequest, request: Request) -> dict[str, Any]:
    """Load (or reload) adapter ``name``: from ``path`` when the server allows paths, else
    from ``<adapters folder>/<name>``. The weights are read and checked now."""
    import asyncio

    svc = service(request)
    repo = _repo(svc)
    if req.path is not None and not svc.allow_adapter_paths:
        raise APIError(403, "this server loads adapters from its adapter folder only (start "
                       "it with --allow-adapter-paths to load from other paths)", "path")
    info = await asyncio.to_thread(repo.load, req.name, req.path)
    return {"object": "adapter", **info}


@router.post("/v1/adapters/materialize")
async def materialize_adapter(req: AdapterMaterializeRequest, request: Request
                              ) -> dict[str, Any]:
    """Save a mixture ``adapter`` as a new PEFT adapter ``name`` in the server's adapter
    folder and load it: a black-box merge's result, servable by any LoRA server after."""
    import asyncio

    svc = service(request)
    repo = _repo(svc)
    req.warn_extra("/v1/adapters/materialize")
    spec = svc.resolve_adapter(None, req.adapter)
    if not isinstance(spec, dict):
        raise APIError(400, "adapter must be a mixture {adapters, alpha, beta}", "adapter")
    if req.name in repo.names():
        raise APIError(409, f"adapter '{req.name}' already exists: choose another name", "name",
                       "adapter_exists")
    info = await asyncio.to_thread(repo.materialize, req.name, spec)
    return {"object": "adapter", **info}


@router.delete("/v1/adapters/{name}")
async def unload_adapter(name: str, request: Request) -> dict[str, Any]:
    """Forget an adapter; requests naming it get 404 afterwards."""
    svc = service(request)
    _repo(svc).unload(name)
    return {"object": "adapter", "name": name, "deleted": True}
