"""The remote backend: any OpenAI-compatible server through the official ``openai`` SDK.

It works against OpenAI, vLLM, llama.cpp's server and ``bbx serve``. What a server can
give is detected once (``GET /v1/bbx`` answers on bbx servers, 404 elsewhere) and decides
how each verb is answered:

=================  ==========================================  ===============================
verb               bbx server (extensions)                     any other server (fallback)
=================  ==========================================  ===============================
label_logprobs     ``/v1/label_logprobs``: exact, any word     next-token ``top_logprobs``
score              ``/v1/score``                               ``echo=true, max_tokens=0``
hidden             ``/v1/hidden_states``                       ``/v1/embeddings`` (documented
                                                               stand-in: ``hidden="embeddings"``)
generate / embed   ``/v1/completions`` / ``/v1/embeddings``    the same
=================  ==========================================  ===============================

**The top-k fallback** (``capabilities.label_logprobs == "topk"``): one greedy one-token
completion with ``logprobs=k`` per prompt; a label word whose text is one of the top-k
tokens gets that token's log-prob. Each word still missing, when the server has a tokenize
route (vLLM's and bbx's ``/tokenize``, llama.cpp's ``/extras/tokenize``) and ``logit_bias``
is on, gets one more call with a +``BIAS`` bias on its first token, which makes it the
greedy token, and the log-prob the server reports for that token is read: servers that
report log-probs after the bias (as OpenAI does) give ``log p'``, and the unbiased value is
recovered exactly from the shift of the reference token (the unbiased top-1):
``log p = log p' - BIAS + (log p_ref - log p'_ref)``; servers that report raw log-probs
(llama.cpp) leave the reference unchanged and give ``log p`` itself. A word still missing
gets the **floor**: the smaller of the lowest top-k log-prob and the log of the probability
mass outside the top-k, an upper bound on its true value. Multi-token words are scored by
their first token only in this mode.

The ``echo`` mode (``label_logprobs="echo"``) scores each word as a continuation with
``echo=true, max_tokens=0`` (vLLM's idiom): exact on servers that implement echo log-probs
correctly (vLLM does; llama-cpp-python 0.3.36 does not), one request per (prompt, word).

Retries live in the SDK only (``max_retries``, honouring ``retry-after``); requests run on at
most ``max_concurrency`` threads; every request has a ``timeout``. Failures after the
retries are :class:`~blackbox.errors.BbxError` with the server's message.
"""

from __future__ import annotations

import json
import math
import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from blackbox.backends.base import Adapter, Capabilities, Position, normalize_adapter
from blackbox.errors import BbxError

BIAS = 30.0  # logit shift that pulls a label token into the top-k
CHARS_PER_TOKEN = 4  # token estimate for budgets: remote servers are not tokenized locally


class RemoteBackend:
    """An OpenAI-compatible server behind the Backend verbs (see module docs).

    ``base_url`` defaults to ``$OPENAI_BASE_URL`` (else OpenAI's); the key is read from the
    environment variable NAMED by ``api_key_env`` (a self-hosted server with no key gets a
    placeholder). ``model`` defaults to the server's first model. ``label_logprobs``:
    ``auto`` (extension when present, else top-k), ``extension``, ``echo`` or ``topk``.
    """

    name = "remote"

    def __init__(
        self,
        base_url: str | None = None,
        api_key_env: str = "OPENAI_API_KEY",
        model: str | None = None,
        max_concurrency: int = 8,
        timeout: float = 60.0,
        max_retries: int = 3,
        label_logprobs: str = "auto",
        top_logprobs: int = 20,
        logit_bias: bool = True,
        batch_size: int = 32,
        http_client: Any = None,
    ) -> None:
        if label_logprobs not in ("auto", "extension", "echo", "topk"):
            raise BbxError(f"unknown label_logprobs mode '{label_logprobs}': use auto, "
                           "extension, echo or topk")
        self.base_url = (base_url or os.environ.get("OPENAI_BASE_URL") or "").rstrip("/") \
            or None
        self.api_key_env = api_key_env
        key = os.environ.get(api_key_env)
        if not key:
            if self.base_url is None:
                raise BbxError(f"no API key: set ${api_key_env}, or give base_url for a "
                               "self-hosted server")
            key = "EMPTY"  # self-hosted servers without auth still need a non-empty key
        self._key = key
        self.model = model
        self.max_concurrency = max(1, int(max_concurrency))
        self.timeout = float(timeout)
        self.max_retries = int(max_retries)
        self.mode = label_logprobs
        self.top_logprobs = int(top_logprobs)
        self.use_logit_bias = logit_bias
        self.batch_size = max(1, int(batch_size))
        self._http_client = http_client
        self._client: Any = None
        self._pool: ThreadPoolExecutor | None = None
        self._info: dict[str, Any] | None = None
        self._token_ids: dict[str, list[int] | None] = {}
        self._tokenize_route: str | None | bool = False  # False: not probed yet
        self._lock = threading.Lock()

    # ---- client and detection -----------------------------------------------------------

    @property
    def client(self) -> Any:
        """The ``openai.OpenAI`` client (made on first use)."""
        with self._lock:
            if self._client is None:
                import openai

                self._client = openai.OpenAI(base_url=self.base_url, api_key=self._key,
                                             timeout=self.timeout, max_retries=self.max_retries,
                                             http_client=self._http_client)
            return self._client

    def _call(self, fn: Callable[[], Any]) -> Any:
        """Run one SDK call (retries inside the SDK); errors become one-line BbxErrors."""
        import openai

        try:
            return fn()
        except openai.AuthenticationError as e:
            raise BbxError(f"{self._where()} refused the API key: set ${self.api_key_env} "
                           "to a valid key") from e
        except openai.APIStatusError as e:
            raise BbxError(f"{self._where()} answered {e.status_code}: {_message(e)}") from e
        except openai.APITimeoutError as e:
            raise BbxError(f"{self._where()} timed out after {self.max_retries} retries "
                           f"(timeout {self.timeout} s)") from e
        except openai.APIConnectionError as e:
            raise BbxError(f"cannot reach {self._where()}: {e}") from e

    def _where(self) -> str:
        return self.base_url or "the OpenAI API"

    @property
    def info(self) -> dict[str, Any]:
        """What the server is: the bbx ``/v1/bbx`` answer, or ``{"bbx": False}``."""
        if self._info is None:
            import openai

            try:
                answer = self._call(lambda: self.client.get("/bbx", cast_to=object))
            except BbxError as e:
                # an unknown route is "no extensions"; a bad key or a dead server is an error
                status = getattr(e.__cause__, "status_code", None)
                if isinstance(e.__cause__, openai.AuthenticationError) or status not in (
                        400, 404, 405, 422, 501):
                    raise
                answer = None
            if isinstance(answer, dict) and answer.get("object") == "bbx.server":
                info = {**answer, "bbx": True}
            else:
                info = {"bbx": False}
            if self.model is None:
                models = self._call(lambda: self.client.models.list())
                ids = [m.id for m in models.data]
                if not ids:
                    raise BbxError(f"{self._where()} lists no models: give model=")
                self.model = info.get("model") if info.get("model") in ids else ids[0]
            if self.mode == "extension" and not info["bbx"]:
                raise BbxError(f"{self._where()} has no bbx extensions: use "
                               "label_logprobs: topk (or echo on servers with echo log-probs)")
            self._info = info
        return self._info

    @property
    def label_mode(self) -> str:
        """How label words are scored here: ``extension``, ``echo`` or ``topk``."""
        if self.mode != "auto":
            return self.mode
        return "extension" if self.info["bbx"] else "topk"

    @property
    def capabilities(self) -> Capabilities:
        info = self.info
        bbx = info["bbx"]
        mode = self.label_mode
        return Capabilities(
            label_logprobs="topk" if mode == "topk" else "exact",
            score=True,
            hidden=info.get("hidden", "native") if bbx else "embeddings",
            generate=True, embed=True, adapters=bool(info.get("adapters")) if bbx else False,
            topk=self.top_logprobs if mode == "topk" else None,
            extra={"base_url": self.base_url, "model": self.model, "label_mode": mode,
                   "bbx_server": bbx},
        )

    @property
    def fingerprint(self) -> str:
        """``remote:<url>:<model>:<label mode>[:<bbx server fingerprint>]``."""
        info = self.info
        parts = ["remote", self.base_url or "openai", str(self.model), self.label_mode]
        if info.get("fingerprint"):
            parts.append(str(info["fingerprint"]))  # a restarted server on another model
        return ":".join(parts)

    def _extra(self, adapter: Adapter) -> dict[str, Any] | None:
        spec = normalize_adapter(adapter)
        if spec is None:
            return None
        if not self.info["bbx"]:
            raise BbxError(f"{self._where()} is not a bbx server: adapters and mixtures need "
                           "bbx serve --adapters DIR")
        return {"adapter": spec}

    def _map(self, fn: Callable[[Any], Any], items: Sequence[Any]) -> list[Any]:
        """``fn`` over items on at most ``max_concurrency`` threads, results in order."""
        if len(items) <= 1:
            return [fn(x) for x in items]
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.max_concurrency,
                                                thread_name_prefix="bbx-remote")
        return list(self._pool.map(fn, items))

    def _chunks(self, items: Sequence[Any]) -> list[list[Any]]:
        return [list(items[i:i + self.batch_size]) for i in range(0, len(items),
                                                                   self.batch_size)]

    def _ext(self, route: str, key: str, field: str, items: Sequence[Any],
             body: Callable[[list[Any]], dict[str, Any]]) -> list[Any]:
        """An extension route over chunks of items; per item, ``data[i][field]``."""
        def one(chunk: list[Any]) -> list[Any]:
            res = self._call(lambda: self.client.post(
                route, body={"model": self.model, **body(chunk)}, cast_to=object))
            rows = sorted(res["data"], key=lambda d: d["index"])
            return [r[field] for r in rows]

        return [r for part in self._map(one, self._chunks(items)) for r in part]

    # ---- verbs --------------------------------------------------------------------------

    def label_logprobs(
        self, prompts: Sequence[str], label_words: Sequence[str], adapter: Adapter = None
    ) -> list[list[float]]:
        prompts, words = list(prompts), list(label_words)
        extra = self._extra(adapter)
        mode = self.label_mode
        if mode == "extension":
            return self._ext("/label_logprobs", "label_logprobs", "logprobs", prompts,
                             lambda c: {"prompts": c, "label_words": words, **(extra or {})})
        if mode == "echo":
            pairs = [(p, w) for p in prompts for w in words]
            sums = [sum(x) for x in self._echo_scores(pairs, extra)]
            return [sums[i * len(words):(i + 1) * len(words)] for i in range(len(prompts))]
        return self._map(lambda p: self._topk_row(p, words, extra), prompts)

    def label_logprobs_rows(
        self, prompts: Sequence[str], label_words: Sequence[str], adapters: Sequence[Adapter]
    ) -> list[list[float]]:
        """Per prompt its own adapter: every (adapter, chunk) request is in flight at once
        (up to ``max_concurrency``), so a bbx server batches different mixtures together."""
        prompts, words = list(prompts), list(label_words)
        groups: dict[str, list[int]] = {}
        for i, a in enumerate(adapters):
            groups.setdefault(json.dumps(normalize_adapter(a), sort_keys=True), []).append(i)
        if self.label_mode != "extension" or len(groups) == 1:
            out: list[Any] = [None] * len(prompts)
            for idx in groups.values():
                got = self.label_logprobs([prompts[i] for i in idx], words, adapters[idx[0]])
                for i, r in zip(idx, got, strict=True):
                    out[i] = r
            return out
        jobs = [(self._extra(adapters[idx[0]]), chunk) for idx in groups.values()
                for chunk in self._chunks(idx)]

        def one(job: tuple[dict[str, Any] | None, list[int]]) -> list[Any]:
            extra, idx = job
            res = self._call(lambda: self.client.post(
                "/label_logprobs", cast_to=object,
                body={"model": self.model, "prompts": [prompts[i] for i in idx],
                      "label_words": words, **(extra or {})}))
            return [r["logprobs"] for r in sorted(res["data"], key=lambda d: d["index"])]

        out = [None] * len(prompts)
        for (_, idx), rows in zip(jobs, self._map(one, jobs), strict=True):
            for i, r in zip(idx, rows, strict=True):
                out[i] = r
        return out

    def materialize_adapter(self, name: str, adapter: Adapter) -> dict[str, Any]:
        """Ask a bbx server to save a mixture as a new adapter ``name`` (PEFT, server-side)."""
        extra = self._extra(adapter)
        return self._call(lambda: self.client.post(
            "/adapters/materialize", cast_to=object, body={"name": name, **(extra or {})}))

    def list_adapters(self) -> list[str]:
        """Names of the adapters a bbx server holds (``GET /v1/adapters``)."""
        if not self.info["bbx"] or not self.info.get("adapters"):
            raise BbxError(f"{self._where()} has no adapter repository: start it with "
                           "bbx serve --adapters DIR")
        res = self._call(lambda: self.client.get("/adapters", cast_to=object))
        return sorted(d["name"] for d in res["data"])

    def score(
        self, prompts: Sequence[str], continuations: Sequence[str], adapter: Adapter = None
    ) -> list[list[float]]:
        if len(prompts) != len(continuations):
            raise BbxError("score needs one continuation per prompt")
        extra = self._extra(adapter)
        if self.info["bbx"]:
            return self._ext("/score", "score", "token_logprobs",
                             list(zip(prompts, continuations, strict=True)),
                             lambda c: {"prompts": [p for p, _ in c],
                                        "continuations": [x for _, x in c], **(extra or {})})
        return self._echo_scores(list(zip(prompts, continuations, strict=True)), extra)

    def hidden(
        self, prompts: Sequence[str], position: Position = "last", adapter: Adapter = None
    ) -> list[list[float]]:
        extra = self._extra(adapter)
        if self.info["bbx"] and self.info.get("hidden") == "native":
            return self._ext("/hidden_states", "hidden", "hidden", list(prompts),
                             lambda c: {"input": c, "position": position, **(extra or {})})
        return self.embed(prompts)  # the documented fallback: capabilities.hidden="embeddings"

    def generate(
        self, prompts: Sequence[str], params: dict[str, Any] | None = None, adapter: Adapter = None
    ) -> list[str]:
        params = dict(params or {})
        extra = self._extra(adapter)
        kwargs = {"max_tokens": int(params.pop("max_tokens", 64)),
                  "temperature": float(params.pop("temperature", 0.0))}
        for k in ("top_p", "seed", "stop"):
            if k in params:
                kwargs[k] = params.pop(k)
        if params:
            raise BbxError(f"unknown generation parameter(s) {sorted(params)}")

        def one(p: str) -> str:
            res = self._call(lambda: self.client.completions.create(
                model=self.model, prompt=p, extra_body=extra, **kwargs))
            return res.choices[0].text

        _ = self.info
        return self._map(one, list(prompts))

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        _ = self.info

        def one(chunk: list[str]) -> list[list[float]]:
            res = self._call(lambda: self.client.embeddings.create(
                model=self.model, input=chunk, encoding_format="float"))
            return [d.embedding for d in sorted(res.data, key=lambda d: d.index)]

        return [v for part in self._map(one, self._chunks(list(texts))) for v in part]

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        """An estimate (about 4 characters a token): remote text is not tokenized locally."""
        return [max(1, math.ceil(len(t) / CHARS_PER_TOKEN)) for t in texts]

    def close(self) -> None:
        with self._lock:
            if self._pool is not None:
                self._pool.shutdown(wait=True)
                self._pool = None
            if self._client is not None:
                self._client.close()
                self._client = None

    # ---- fallbacks ----------------------------------------------------------------------

    def _echo_scores(self, pairs: list[tuple[str, str]],
                     extra: dict[str, Any] | None) -> list[list[float]]:
        """Continuation token log-probs via ``echo=true, max_tokens=0`` (vLLM's idiom)."""
        _ = self.info

        def one(pair: tuple[str, str]) -> list[float]:
            prompt, cont = pair
            res = self._call(lambda: self.client.completions.create(
                model=self.model, prompt=prompt + cont, max_tokens=0, echo=True, logprobs=0,
                temperature=0, extra_body=extra))
            lp = res.choices[0].logprobs
            if lp is None or lp.text_offset is None:
                raise BbxError(f"{self._where()} returned no echo log-probs: use a bbx or vLLM "
                               "server, or label_logprobs: topk")
            return [float(v) for off, v in zip(lp.text_offset, lp.token_logprobs, strict=True)
                    if off >= len(prompt) and v is not None]

        return self._map(one, pairs)

    def _top(self, prompt: str, extra: dict[str, Any] | None,
             bias: dict[str, float] | None = None) -> tuple[dict[str, float], str, float]:
        """One greedy token: (its top-k log-probs by token text, the token, its log-prob)."""
        res = self._call(lambda: self.client.completions.create(
            model=self.model, prompt=prompt, max_tokens=1, temperature=0,
            logprobs=self.top_logprobs, logit_bias=bias, extra_body=extra))
        lp = res.choices[0].logprobs
        if lp is None or not lp.top_logprobs or not lp.top_logprobs[0]:
            raise BbxError(f"{self._where()} returned no top_logprobs: it cannot score label "
                           "words")
        top = {str(k): float(v) for k, v in lp.top_logprobs[0].items()}
        token = lp.tokens[0] if lp.tokens else res.choices[0].text
        value = lp.token_logprobs[0] if lp.token_logprobs else None
        return top, token, float(value) if value is not None else math.nan

    def _topk_row(self, prompt: str, words: list[str],
                  extra: dict[str, Any] | None) -> list[float]:
        top, _, _ = self._top(prompt, extra)
        found = {w: top[w] for w in words if w in top}
        missing = [w for w in words if w not in found]
        ref = max(top, key=lambda t: top[t])  # the likeliest token: a reference for the bias
        if missing and self.use_logit_bias and ref not in missing:
            for w in missing:
                tok = self._first_token(w)
                if tok is None:
                    continue
                # force w's (first) token with a large bias and read the greedy token's
                # log-prob; servers report it after the bias (OpenAI: undone with the shift
                # of the reference token) or before it (llama.cpp: the shift is 0)
                biased, chosen, value = self._top(prompt, extra, {str(tok): BIAS})
                if chosen != w or math.isnan(value) or ref not in biased:
                    continue
                shift = top[ref] - biased[ref]  # log Z' - log Z
                found[w] = value - BIAS + shift if abs(shift) > 1e-6 else value
        floor = min(min(top.values()), math.log(max(1e-300, 1.0 - sum(math.exp(v) for v in
                                                                       top.values()))))
        return [found.get(w, floor) for w in words]

    def _first_token(self, word: str) -> int | None:
        """The server's first token id of ``word`` (``None`` without a tokenize route)."""
        if word in self._token_ids:
            ids = self._token_ids[word]
            return ids[0] if ids else None
        ids = self._tokenize(word)
        self._token_ids[word] = ids
        return ids[0] if ids else None

    def _tokenize(self, text: str) -> list[int] | None:
        import openai

        root = (self.base_url or "").removesuffix("/v1")
        routes = [self._tokenize_route] if self._tokenize_route not in (False, None) else \
            ([] if self._tokenize_route is None else [f"{root}/tokenize",
                                                      f"{root}/extras/tokenize"])
        for route in routes:
            body = {"model": self.model, "prompt": text, "add_special_tokens": False} \
                if route.endswith("/tokenize") and "/extras/" not in route else \
                {"input": text, "add_special_tokens": False}
            try:
                res = self.client.post(route, body=body, cast_to=object)
            except (openai.APIStatusError, openai.APIConnectionError):
                continue
            tokens = res.get("tokens") if isinstance(res, dict) else None
            if isinstance(tokens, list) and all(isinstance(t, int) for t in tokens):
                self._tokenize_route = route
                return tokens
        self._tokenize_route = None
        return None


def _message(e: Any) -> str:
    body = getattr(e, "body", None)
    if isinstance(body, dict):
        err = body.get("error", body)
        if isinstance(err, dict) and err.get("message"):
            return str(err["message"])
    return str(getattr(e, "message", e)).splitlines()[0]
