"""The request each workload sends, timed as the client sees it.

OpenAI routes go through the openai SDK (``AsyncOpenAI``; generation streamed with
``stream_options.include_usage``, so the last chunk's usage counts the tokens); bbx's
extension routes through httpx2 (the httpx the SDK is built on). Every sender returns a
:class:`~blackbox.bench.metrics.Trace`; a failed request is a trace with its ``error``,
never an exception, so one bad answer does not stop the run.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np

from blackbox.bench.config import BenchConfig
from blackbox.bench.metrics import Trace
from blackbox.bench.prompts import Prompts


class Clients:
    """The SDK client and the raw HTTP client of one run, on one clock."""

    def __init__(self, cfg: BenchConfig, api_key: str, clock: Callable[[], float]) -> None:
        import httpx2
        import openai

        # as many connections as the SDK's own pool (1000): a request waiting for a free
        # connection would count the client's queue as the server's latency
        size = max(1000, cfg.concurrency)
        self.openai = openai.AsyncOpenAI(base_url=cfg.base_url, api_key=api_key,
                                         max_retries=0, timeout=cfg.timeout)
        self.http = httpx2.AsyncClient(
            base_url=cfg.base_url, timeout=cfg.timeout,
            headers={"Authorization": f"Bearer {api_key}"},
            limits=httpx2.Limits(max_connections=size, max_keepalive_connections=100))
        self.clock = clock

    async def close(self) -> None:
        """Close both clients."""
        await self.openai.close()
        await self.http.aclose()


def mixture(names: list[str], seed: int, index: int) -> dict[str, Any]:
    """Request ``index``'s adapter mixture: alpha uniform in [0, 1], beta uniform in
    [-1, 1], seeded per request, so every request is a new mixture (nothing to cache)."""
    rng = np.random.default_rng([seed, index])
    return {"adapters": names, "alpha": rng.uniform(0, 1, len(names)).round(6).tolist(),
            "beta": rng.uniform(-1, 1, len(names)).round(6).tolist()}


def _error(e: BaseException) -> str:
    """A short, stable description (the run's error counts group by it)."""
    status = getattr(e, "status_code", None)
    body = getattr(e, "body", None)
    message = body.get("message") if isinstance(body, dict) else None
    text = message or str(e) or type(e).__name__
    return (f"{status}: " if status else f"{type(e).__name__}: ") + text[:200]


class Sender:
    """Sends request ``index`` of a run's workload and returns its trace."""

    def __init__(self, cfg: BenchConfig, prompts: Prompts, clients: Clients, model: str,
                 mixture_adapters: list[str] | None) -> None:
        self.cfg, self.prompts, self.c, self.model = cfg, prompts, clients, model
        self.mixture_adapters = mixture_adapters or []
        self.extra: dict[str, Any] = {"adapter": cfg.adapter} if cfg.adapter else {}

    async def __call__(self, index: int, scheduled: float) -> Trace:
        clock = self.c.clock
        trace = Trace(index=index, scheduled=scheduled, start=clock(), items=self.cfg.batch)
        try:
            if self.cfg.workload == "chat":
                await self._chat(trace)
            elif self.cfg.workload == "completion":
                await self._completion(trace)
            elif self.cfg.workload == "next-token":
                await self._next_token(trace)
            else:
                await self._bbx(trace)
        except Exception as e:  # noqa: BLE001 - recorded per request, counted in the summary
            trace.error = _error(e)
        trace.end = clock()
        return trace

    def _sampling(self, index: int) -> dict[str, Any]:
        # a seed per request: sampled answers (and so their lengths) repeat run to run on
        # servers that honour it
        return {"model": self.model, "max_tokens": self.cfg.max_tokens,
                "temperature": self.cfg.temperature, "seed": self.cfg.seed + index,
                "stream": True,
                "stream_options": {"include_usage": True},
                **({"extra_body": self.extra} if self.extra else {})}

    def _usage(self, trace: Trace, chunk: Any) -> None:
        if getattr(chunk, "usage", None) is not None:
            trace.output_tokens = chunk.usage.completion_tokens
            trace.prompt_tokens = chunk.usage.prompt_tokens

    async def _chat(self, trace: Trace) -> None:
        prompt = self.prompts.batch(trace.index, 1)[0]
        stream = await self.c.openai.chat.completions.create(
            messages=[{"role": "user", "content": prompt}], **self._sampling(trace.index))
        async for chunk in stream:
            now = self.c.clock()
            self._usage(trace, chunk)
            for choice in chunk.choices:
                if choice.delta.content:
                    trace.chunks.append((now, choice.delta.content))

    async def _completion(self, trace: Trace) -> None:
        prompt = self.prompts.batch(trace.index, 1)[0]
        stream = await self.c.openai.completions.create(prompt=prompt,
                                                        **self._sampling(trace.index))
        async for chunk in stream:
            now = self.c.clock()
            self._usage(trace, chunk)
            for choice in chunk.choices:
                if choice.text:
                    trace.chunks.append((now, choice.text))

    async def _next_token(self, trace: Trace) -> None:
        # the classifier idiom: one greedy token and its top-5 log-probs per prompt
        out = await self.c.openai.completions.create(
            model=self.model, prompt=self.prompts.batch(trace.index, self.cfg.batch),
            max_tokens=1, logprobs=5, temperature=0.0, extra_body=self.extra or None)
        if out.usage is not None:
            trace.prompt_tokens = out.usage.prompt_tokens

    async def _bbx(self, trace: Trace) -> None:
        prompts = self.prompts.batch(trace.index, self.cfg.batch)
        words = self.prompts.label_words
        body: dict[str, Any] = {"model": self.model, **self.extra}
        if self.cfg.workload in ("label-logprobs", "mixture"):
            route = "/label_logprobs"
            body.update(prompts=prompts, label_words=words)
            if self.cfg.workload == "mixture":
                body["adapter"] = mixture(self.mixture_adapters, self.cfg.seed, trace.index)
        elif self.cfg.workload == "score":
            route = "/score"
            body.update(prompts=prompts,
                        continuations=[words[(trace.index + j) % len(words)]
                                       for j in range(len(prompts))])
        else:
            route = "/hidden_states"
            body["input"] = prompts
        response = await self.c.http.post(route, json=body)
        if response.status_code != 200:
            try:
                message = response.json()["error"]["message"]
            except Exception:  # noqa: BLE001 - a server that is not bbx answers anything
                message = response.text[:200]
            raise _HTTPStatus(response.status_code, message)
        usage = response.json().get("usage") or {}
        trace.prompt_tokens = usage.get("prompt_tokens")


class _HTTPStatus(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status_code = status
        self.body = {"message": message}


def now_clock() -> Callable[[], float]:
    """The run's clock: seconds since it was made (``time.perf_counter`` based)."""
    t0 = time.perf_counter()
    return lambda: time.perf_counter() - t0
