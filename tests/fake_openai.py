"""A small OpenAI-compatible server for the chat tests, served on loopback by
``serve_support.running_server``: a fixed next-token distribution per prompt over a tiny
vocabulary, answered in the legacy or the chat log-prob shape on either route, with the
knobs real servers differ in (a completions route that refuses chat models, log-probs
after or before ``logit_bias``, no log-probs at all, ``n`` or not, a tokenize route or
not, and which field it reads) and the ways a user's input goes wrong (a key the server
refuses, a model it does not serve, a model neither route takes, a cap on
``top_logprobs``). Every request is recorded,
so tests can check what was sent, and every answer carries a ``usage`` (recorded in
``usages``) unless ``usage=False``.
"""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

VOCAB = ["The", " positive", "positive", "Positive", " negative", "negative", "neg", "ation",
         "x", "\n", "Pos", " neutral"]


def log_softmax(logits: list[float]) -> list[float]:
    m = max(logits)
    z = m + math.log(sum(math.exp(v - m) for v in logits))
    return [v - z for v in logits]


@dataclass
class FakeOpenAI:
    """The server's behaviour (see the module docs); ``app()`` is the ASGI app."""

    logits: dict[str, list[float]]  # prompt (the user message on chat) -> logits over VOCAB
    refuse_completions: bool = False  # answer 404 "This is a chat model ..." there
    completions_shape: str = "legacy"  # legacy | chat
    chat_shape: str = "chat"
    logprobs: bool = True  # False: never any log-probs (a server that drops them)
    bias_after: bool = True  # report log-probs after logit_bias (OpenAI) or before (llama.cpp)
    tokenize: bool = True
    # what /tokenize reads: vLLM's and bbx's "prompt", or llama-server's "content" (which
    # answers {"tokens": []} to a body without it)
    tokenize_reads: str = "prompt"
    n_supported: bool = True
    replies: dict[str, list[str]] = field(default_factory=dict)  # prompt -> generated texts
    model_id: str = "fake-chat"  # the one model served (others: 404, as OpenAI answers)
    api_key: str | None = None  # set: any other bearer key is answered 401
    max_logprobs: int | None = None  # set: more top log-probs asked is a 400 (vLLM's words)
    refuse_chat: bool = False  # the chat route refuses the model too (an embedding model)
    delay_s: float = 0.0  # every generation request waits this long (no compute)
    requests: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    usage: bool = True  # answers carry OpenAI's usage object
    usages: list[dict[str, int]] = field(default_factory=list)  # every usage reported

    def use(self, prompt: str, choices: list[dict[str, Any]]) -> dict[str, Any]:
        """The usage field of an answer: made-up but distinct counts (words + 7 read, each
        choice's characters written), recorded in ``usages``."""
        if not self.usage:
            return {}
        read = len(prompt.split()) + 7
        wrote = sum(len(c.get("text") or (c.get("message") or {}).get("content") or "")
                    for c in choices)
        u = {"prompt_tokens": read, "completion_tokens": wrote, "total_tokens": read + wrote}
        self.usages.append(u)
        return {"usage": u}

    def dist(self, prompt: str, bias: dict[str, float] | None) -> tuple[list[float],
                                                                        list[float]]:
        """(reported log-probs, the ones that pick the token) for one prompt."""
        raw = self.logits.get(prompt, [0.0] * len(VOCAB))  # e.g. the auto-detection probe
        shifted = list(raw)
        for k, v in (bias or {}).items():
            shifted[int(k)] += float(v)
        picked = log_softmax(shifted)
        return (picked if self.bias_after else log_softmax(raw)), picked

    def shape(self, kind: str, lps: list[float], pick: int, k: int) -> dict[str, Any]:
        order = sorted(range(len(VOCAB)), key=lambda i: -lps[i])[:k]
        if kind == "legacy":
            return {"tokens": [VOCAB[pick]], "token_logprobs": [lps[pick]],
                    "top_logprobs": [{VOCAB[i]: lps[i] for i in order}], "text_offset": [0]}

        def entry(i: int) -> dict[str, Any]:
            return {"token": VOCAB[i], "logprob": lps[i], "bytes": list(VOCAB[i].encode())}

        return {"content": [{**entry(pick), "top_logprobs": [entry(i) for i in order]}],
                "refusal": None}

    def answer(self, prompt: str, body: dict[str, Any], kind: str, k: int | None
               ) -> list[tuple[str, dict[str, Any] | None]]:
        """The choices: (text, logprobs object or None)."""
        if int(body.get("max_tokens") or 16) > 1 or prompt in self.replies:
            texts = self.replies[prompt]
            n = int(body.get("n") or 1) if self.n_supported else 1
            return [(texts[j % len(texts)], None) for j in range(n)]
        reported, picked = self.dist(prompt, body.get("logit_bias"))
        pick = max(range(len(VOCAB)), key=lambda i: picked[i])
        lp = self.shape(kind, reported, pick, k) if (self.logprobs and k is not None) else None
        return [(VOCAB[pick], lp)]

    def app(self) -> FastAPI:
        app = FastAPI()

        def error(status: int, message: str) -> JSONResponse:
            return JSONResponse({"error": {"message": message, "type": "invalid_request_error",
                                           "param": None, "code": None}}, status_code=status)

        def refused(request: Request, body: dict[str, Any], k: Any) -> JSONResponse | None:
            """The input errors, in the order servers check them."""
            if self.api_key is not None and request.headers.get("authorization") != \
                    f"Bearer {self.api_key}":
                return error(401, "Incorrect API key provided.")
            if body.get("model") != self.model_id:
                return error(404, f"The model `{body.get('model')}` does not exist.")
            if self.max_logprobs is not None and isinstance(k, int) and k > self.max_logprobs:
                return error(400, f"Requested sample logprobs of {k}, which is greater than "
                             f"max allowed: {self.max_logprobs}")
            return None

        @app.get("/v1/models")
        async def models(request: Request) -> Any:
            if self.api_key is not None and request.headers.get("authorization") != \
                    f"Bearer {self.api_key}":
                return error(401, "Incorrect API key provided.")
            return {"object": "list", "data": [{"id": self.model_id, "object": "model",
                                                "created": 0, "owned_by": "tests"}]}

        @app.post("/v1/completions")
        async def completions(request: Request) -> Any:
            body = await request.json()
            self.requests.append(("completions", body))
            if self.delay_s:
                await asyncio.sleep(self.delay_s)
            if (bad := refused(request, body, body.get("logprobs"))) is not None:
                return bad
            if self.refuse_chat:
                return error(400, "This model does not support the Completions API.")
            if self.refuse_completions:
                return error(404, "This is a chat model and not supported in the "
                             "v1/completions endpoint. Did you mean to use v1/chat/completions?")
            k = body.get("logprobs")
            choices = [{"index": j, "text": t, "logprobs": lp, "finish_reason": "length"}
                       for j, (t, lp) in enumerate(self.answer(body["prompt"], body,
                                                               self.completions_shape, k))]
            return {"id": "cmpl-1", "object": "text_completion", "created": 0,
                    "model": body["model"], "choices": choices,
                    **self.use(body["prompt"], choices)}

        @app.post("/v1/chat/completions")
        async def chat(request: Request) -> Any:
            body = await request.json()
            self.requests.append(("chat", body))
            if self.delay_s:
                await asyncio.sleep(self.delay_s)
            k = body.get("top_logprobs") if body.get("logprobs") else None
            if (bad := refused(request, body, k)) is not None:
                return bad
            if self.refuse_chat:
                return error(400, "This model does not support the Chat Completions API.")
            prompt = body["messages"][-1]["content"]
            choices = [{"index": j, "message": {"role": "assistant", "content": t},
                        "logprobs": lp, "finish_reason": "length"}
                       for j, (t, lp) in enumerate(self.answer(prompt, body, self.chat_shape,
                                                               k))]
            return {"id": "chatcmpl-1", "object": "chat.completion", "created": 0,
                    "model": body["model"], "choices": choices, **self.use(prompt, choices)}

        @app.post("/tokenize")
        async def tokenize(request: Request) -> Any:
            body = await request.json()
            self.requests.append(("tokenize", body))
            if not self.tokenize:
                return error(404, "Not Found")
            return {"tokens": greedy_ids(body.get(self.tokenize_reads) or "")}

        return app


def greedy_ids(text: str) -> list[int]:
    """Longest-match tokenization over :data:`VOCAB` (what the fake's tokenize route says)."""
    ids, at = [], 0
    while at < len(text):
        best = max((i for i, t in enumerate(VOCAB) if text.startswith(t, at)),
                   key=lambda i: len(VOCAB[i]), default=None)
        if best is None:
            raise ValueError(f"the fake vocabulary cannot spell {text[at:]!r}")
        ids.append(best)
        at += len(VOCAB[best])
    return ids


class SeededLogits(dict):
    """Logits for any prompt, drawn from its digest: a fake whose answers differ by prompt
    (so an evaluation's accuracy means something) and never by server or by run."""

    def get(self, prompt: str, default: Any = None) -> list[float]:  # type: ignore[override]
        import hashlib
        import random

        rng = random.Random(hashlib.sha256(prompt.encode()).digest())
        return [rng.gauss(0.0, 2.0) for _ in VOCAB]
