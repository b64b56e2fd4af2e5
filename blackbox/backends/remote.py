"""The remote backend: any OpenAI-compatible server through the official ``openai`` SDK.

It works against OpenAI, vLLM, llama.cpp's servers and ``bbx serve``, on either of two
routes (``api``): ``completions`` (``/v1/completions``: the prompt is text the model
continues) or ``chat`` (``/v1/chat/completions``: the prompt is a user message and label
words start the assistant's reply). ``api: auto`` (the default) decides once per server
and model (:mod:`blackbox.backends.remote_api`); the choice is in ``capabilities.extra``
(``api``, ``api_decided``) and in the fingerprint.

What a server can give is detected once (``GET /v1/bbx`` answers on bbx servers, 404
elsewhere) and decides how each verb is answered:

=================  ==========================================  ===============================
verb               bbx server, completions (extensions)        any other server, or chat
=================  ==========================================  ===============================
label_logprobs     ``/v1/label_logprobs``: exact, any word     next-token ``top_logprobs``
score              ``/v1/score``                               ``echo=true, max_tokens=0``
                                                               (completions only)
hidden             ``/v1/hidden_states``                       ``/v1/embeddings`` (documented
                                                               stand-in: ``hidden="embeddings"``)
generate / embed   ``/v1/completions`` / ``/v1/embeddings``    the route in use / the same
=================  ==========================================  ===============================

**The top-k mode** (``capabilities.label_logprobs == "topk"``): one greedy one-token
request per prompt with its top-k log-probs (k at most 20 on chat), ``logit_bias`` for the
words outside it, a floor for the rest: :mod:`blackbox.backends.remote_topk`. How label
words meet tokens (chat: stripped and case-folded, ``" positive"`` -> ``"positive"``;
multi-token words: their first token): :mod:`blackbox.backends.labels`.

The ``echo`` mode (``label_logprobs="echo"``, completions only) scores each word as a
continuation with ``echo=true, max_tokens=0`` (vLLM's idiom): exact on servers that
implement echo log-probs correctly (vLLM does; llama-cpp-python 0.3.36 does not), one
request per (prompt, word).

The ``generate`` mode (``capabilities.label_logprobs == "generate"``), for servers with
no log-probs at all: label scores read from generated answers (one-hot, or the frequencies
of ``samples`` replies): :mod:`blackbox.backends.remote_generate`.

**Usage**: every response's ``usage`` (prompt and completion tokens) is reported to the
metered wrapper (:mod:`blackbox.backends.usage`), credited to the item(s) the request
served; what a request may cost before it is sent: :mod:`blackbox.backends.remote_usage`.
Each request's answers are handed over as they arrive (:func:`~blackbox.backends.usage.deliver`),
so when a batch fails part-way the metered wrapper keeps what was received; after the first
failure nothing more of the batch is sent, and what is in flight is waited for.

Retries live in the SDK only (``max_retries``, honouring ``retry-after``); every request has
a ``timeout``. ``base_url`` may list several endpoints of one model (checked at the start
against each one's ``/v1/models``): each has its own ``max_concurrency`` bound, halved on
429s and regrown as it answers, calls go to the least busy one, and one that fails is taken
out for a while (:mod:`blackbox.backends.endpoints`). Failures after the retries are
one-line :class:`~blackbox.errors.BbxError` s naming the fix
(:mod:`blackbox.backends.remote_errors`).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from typing import Any

from blackbox.backends import usage
from blackbox.backends.base import Adapter, Capabilities, Position, normalize_adapter
from blackbox.backends.endpoints import EndpointPool, observed_http_client, split_urls
from blackbox.backends.remote_api import check_modes, decide_api
from blackbox.backends.remote_errors import _message as _message  # re-exported
from blackbox.backends.remote_errors import explain
from blackbox.backends.remote_generate import generated_row
from blackbox.backends.remote_topk import BIAS, first_token_id, topk_row
from blackbox.backends.remote_usage import usage_bounds
from blackbox.backends.shapes import NextToken, next_token
from blackbox.backends.usage import TokenUsage
from blackbox.errors import BbxError

__all__ = ["BIAS", "CHAT_MAX_TOP_LOGPROBS", "RemoteBackend"]

CHARS_PER_TOKEN = 4  # token estimate for budgets: remote servers are not tokenized locally
CHAT_MAX_TOP_LOGPROBS = 20  # OpenAI's limit on chat top_logprobs
LABEL_MODES = ("auto", "extension", "echo", "topk", "generate")
APIS = ("auto", "chat", "completions")


class RemoteBackend:
    """An OpenAI-compatible server behind the Backend verbs (see module docs).

    ``base_url`` defaults to ``$OPENAI_BASE_URL`` (else OpenAI's); a list (or a string with
    commas) is several endpoints of one model, each with its own ``max_concurrency``
    bound. The key is read from the
    environment variable NAMED by ``api_key_env`` (a self-hosted server with no key gets a
    placeholder). ``model`` defaults to the server's first model. ``api``: ``auto``, ``chat``
    or ``completions``; ``system``: a system message before every chat prompt (chat only).
    ``label_logprobs``: ``auto`` (extension on a bbx server's completions route, else
    top-k), ``extension``, ``echo``, ``topk`` or ``generate`` (``generate_max_tokens``,
    ``samples``, ``sample_temperature``).
    """

    name = "remote"

    def __init__(
        self,
        base_url: str | Sequence[str] | None = None,
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
        api: str = "auto",
        system: str | None = None,
        generate_max_tokens: int = 8,
        samples: int = 1,
        sample_temperature: float = 1.0,
        tokenizer: str | None = None,
    ) -> None:
        if label_logprobs not in LABEL_MODES:
            raise BbxError(f"unknown label_logprobs mode '{label_logprobs}': use "
                           + ", ".join(LABEL_MODES))
        if api not in APIS:
            raise BbxError(f"unknown api '{api}': use auto, chat or completions")
        urls = split_urls(base_url) or split_urls(os.environ.get("OPENAI_BASE_URL"))
        self.base_urls: list[str] = urls
        self.base_url: str | None = urls[0] if urls else None  # the first (or only) one
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
        self.api = api
        self.system = system or None
        self.top_logprobs = int(top_logprobs)
        self.use_logit_bias = logit_bias
        self.batch_size = max(1, int(batch_size))
        self.generate_max_tokens = max(1, int(generate_max_tokens))
        self.samples = max(1, int(samples))
        self.sample_temperature = float(sample_temperature)
        self.generate_stats = {"replies": 0, "unparsed": 0, "short_of_n": 0}
        self.bias_note: str | None = None  # why logit_bias is not used, once we know
        self.tokenize_route: str | None = ""  # "": not probed yet; None: the server has none
        # the model's own tokenizer, named by the user where the server has none to ask
        # (loaded here: a bad name fails before anything is paid)
        self.tokenizer = None
        if tokenizer:
            from blackbox.backends.tokenizer import NamedTokenizer

            self.tokenizer = NamedTokenizer(tokenizer)
        self._http_client = http_client
        # http_client (tests, proxies): used as given, one endpoint, attempts not observed
        if http_client is not None and len(urls) > 1:
            raise BbxError("http_client serves one endpoint: give one base_url with it")
        self.endpoints = EndpointPool(urls or [None], self.max_concurrency, self._new_client)
        self._pool: ThreadPoolExecutor | None = None
        self._info: dict[str, Any] | None = None
        self._token_ids: dict[str, int | None] = {}
        self._lock = threading.Lock()
        self._info_lock = threading.Lock()

    # ---- client and detection -----------------------------------------------------------

    def _new_client(self, ep: Any) -> Any:
        """The ``openai.OpenAI`` client of one endpoint; its attempts report to the pool."""
        import openai

        http = self._http_client or observed_http_client(self.endpoints, ep)
        return openai.OpenAI(base_url=ep.url, api_key=self._key, timeout=self.timeout,
                             max_retries=self.max_retries, http_client=http)

    @property
    def client(self) -> Any:
        """The ``openai.OpenAI`` client of the endpoint the current call holds (inside
        :meth:`_call`), else of the first endpoint that is up."""
        lease = self.endpoints.current()
        ep = lease.endpoint if lease is not None else self.endpoints.default()
        return self.endpoints.client_of(ep)

    def _call(self, fn: Callable[[], Any]) -> Any:
        """Run one SDK call on a leased endpoint (``self.client`` inside ``fn`` is its
        client). Retries happen inside the SDK; a call the endpoint failed (connection,
        timeout, 5xx, 429 after the retries) goes to another endpoint that has not failed
        it, if any; other errors, and the last failure, become one-line BbxErrors."""
        import openai

        held = self.endpoints.current()
        if held is not None:  # inside another call (or a pinned one): its endpoint, no fail-over
            try:
                return fn()
            except (openai.APIStatusError, openai.APIConnectionError) as e:
                raise explain(self, held.endpoint, e) from e
        tried: list[int] = []
        while True:
            with self.endpoints.lease(exclude=tried) as ep:
                try:
                    res = fn()
                except (openai.APIStatusError, openai.APIConnectionError) as e:
                    elsewhere = isinstance(e, openai.APIConnectionError) or \
                        e.status_code == 429 or e.status_code >= 500
                    if not self.endpoints.fail_over(ep, elsewhere, tried):
                        raise explain(self, ep, e, len(tried)) from e
                    continue
                self.endpoints.answered(ep)
                return res

    def _where(self) -> str:
        lease = self.endpoints.current()
        url = lease.endpoint.url if lease is not None else self.base_url
        return url or "the OpenAI API"

    @property
    def info(self) -> dict[str, Any]:
        """What the server is: the bbx ``/v1/bbx`` answer (or ``{"bbx": False}``), plus the
        route in use (``api``) and how it was decided (``api_decided``)."""
        if self._info is None:
            with self._info_lock:  # verbs on several threads at once: detect only once
                if self._info is None:
                    self._info = self._detect()
        return self._info

    def _detect(self) -> dict[str, Any]:
        """Ask every endpoint what it is (several must agree on the model and, for bbx
        servers, on the server fingerprint: :func:`check_same_model`), then decide the
        route."""
        eps = self.endpoints.endpoints
        infos, listed = [], []
        for ep in eps:
            with self.endpoints.lease(pin=ep):
                infos.append(self._server_info())
                if self.model is None or len(eps) > 1:
                    listed.append([m.id for m in self._call(
                        lambda: self.client.models.list()).data])
        info = infos[0]
        if listed:
            self.model = check_same_model([e.url for e in eps], infos, listed, self.model)
        info["api"], info["api_decided"] = decide_api(self, info["bbx"])
        check_modes(self, info)
        return info

    def _server_info(self) -> dict[str, Any]:
        """The bbx ``/v1/bbx`` answer of the endpoint the call holds, or ``{"bbx": False}``."""
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
            return {**answer, "bbx": True}
        return {"bbx": False}

    @property
    def api_in_use(self) -> str:
        """The route the verbs use: ``chat`` or ``completions`` (decided once)."""
        return str(self.info["api"])

    @property
    def label_mode(self) -> str:
        """How label words are scored here: ``extension``, ``echo``, ``topk`` or
        ``generate``."""
        if self.mode != "auto":
            return self.mode
        return "extension" if self.info["bbx"] and self.api_in_use == "completions" \
            else "topk"

    @property
    def k(self) -> int:
        """The top-k asked for (on chat at most :data:`CHAT_MAX_TOP_LOGPROBS`)."""
        return min(self.top_logprobs, CHAT_MAX_TOP_LOGPROBS) if self.api_in_use == "chat" \
            else self.top_logprobs

    @property
    def capabilities(self) -> Capabilities:
        info = self.info
        bbx, chat, mode = info["bbx"], info["api"] == "chat", self.label_mode
        extra: dict[str, Any] = {
            "base_url": self.base_url if len(self.base_urls) <= 1 else list(self.base_urls),
            "model": self.model, "label_mode": mode,
            "bbx_server": bbx, "api": info["api"], "api_decided": info["api_decided"]}
        if chat:
            extra["system"] = self.system
        if self.tokenizer is not None:
            extra["tokenizer"] = self.tokenizer.spec
        if mode == "topk":
            extra["logit_bias"] = self.bias_note or (
                "off" if not self.use_logit_bias else
                "no tokenize route: words outside the top-k get the floor (give "
                "backend.tokenizer)"
                if self.tokenize_route is None and self.tokenizer is None else "on")
        if mode == "generate":
            extra["generate"] = {"max_tokens": self.generate_max_tokens,
                                 "samples": self.samples,
                                 "temperature": self.sample_temperature if self.samples > 1
                                 else 0.0}
        return Capabilities(
            label_logprobs="topk" if mode == "topk" else "generate" if mode == "generate"
            else "exact",
            score=not chat,
            hidden=info.get("hidden", "native") if bbx else "embeddings",
            generate=True, embed=True, adapters=bool(info.get("adapters")) if bbx else False,
            topk=self.k if mode == "topk" else None, extra=extra,
            # the optional abilities a bbx server offers (blackbox.backends.abilities)
            # (the token list needs the server's tokenizer: token_logprobs says it has one)
            vocabulary=self.tokenizer is not None or (
                bbx and "vocabulary" in (info.get("extensions") or ())
                and bool(info.get("token_logprobs", True))),
            rows=True, materialize=bbx and bool(info.get("adapters")))

    @property
    def fingerprint(self) -> str:
        """``remote:<url>:<model>[:chat]:<label mode>[:system=<digest>][:tokenizer=<digest>]
        [:<bbx fingerprint>]``
        (completions fingerprints are those of earlier versions: their caches stay valid).
        Several endpoints serve one model, so ``<url>`` is then ``endpoints``: the cache is
        the model's, shared by any list of its endpoints (in any order)."""
        info = self.info
        where = "endpoints" if len(self.base_urls) > 1 else self.base_url or "openai"
        parts = ["remote", where, str(self.model)]
        mode = self.label_mode
        if info["api"] == "chat":
            parts += ["chat", f"topk{self.k}" if mode == "topk" else self._mode_key()]
            if self.system:
                parts.append("system=" + hashlib.sha256(self.system.encode()).hexdigest()[:16])
        else:
            parts.append(self._mode_key())
        if self.tokenizer is not None and mode == "topk":
            # words the top-k misses are recovered through its ids, not floored: other values
            parts.append("tokenizer=" + self.tokenizer.digest)
        if info.get("fingerprint"):
            parts.append(str(info["fingerprint"]))  # a restarted server on another model
        return ":".join(parts)

    def _mode_key(self) -> str:
        mode = self.label_mode
        if mode != "generate":
            return mode
        key = f"generate-m{self.generate_max_tokens}"
        return key + (f"-n{self.samples}-t{self.sample_temperature:g}" if self.samples > 1
                      else "")

    def _extra(self, adapter: Adapter) -> dict[str, Any] | None:
        spec = normalize_adapter(adapter)
        if spec is None:
            return None
        if not self.info["bbx"]:
            raise BbxError(f"{self._where()} is not a bbx server: adapters and mixtures need "
                           "bbx serve --adapters DIR")
        return {"adapter": spec}

    def _map(self, fn: Callable[[Any], Any], items: Sequence[Any],
             owners: Sequence[Sequence[int]] | None = None, rows: bool = False) -> list[Any]:
        """``fn`` over items on one thread per request slot (``max_concurrency`` per
        endpoint; the pool's adaptive limits decide how many are in flight), results in
        order. The usage each reports credits ``owners[j]``, the verb's items unit ``j``
        serves (default: unit ``j`` is item ``j``); each unit runs in a copy of the caller's
        context, so the metered call's usage scope reaches the pool's threads.

        Each unit's answer is handed to the metered call as it arrives
        (:func:`~blackbox.backends.usage.deliver`): without ``owners`` it is item ``j``'s;
        with them and ``rows``, a list, one per owner; else (units that are parts of an
        item's answer) nothing is delivered."""
        deliver = "one" if owners is None else "rows" if rows else None
        stop = threading.Event()  # set by the first failure: units not yet started skip
        units = [_serving(fn, x, owners[j] if owners is not None else (j,), deliver, stop)
                 for j, x in enumerate(items)]
        if len(units) <= 1:
            return [u() for u in units]
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.endpoints.bound,
                                                thread_name_prefix="bbx-remote")
            pool = self._pool
        futures = [pool.submit(u) for u in units]
        # the first failure ends the map: nothing more is sent (what is queued is cancelled
        # or skips, rather than retrying behind the failing calls on the same dead server),
        # and what is in flight is waited for, since it is sent and paid for: its answer is
        # delivered to the metered call, which keeps it
        try:
            wait(futures, return_when=FIRST_EXCEPTION)
        except BaseException:  # an interrupt: send nothing more
            stop.set()
            for g in futures:
                g.cancel()
            raise
        failed = [f for f in futures if f.done() and not f.cancelled()
                  and f.exception() is not None]
        if failed:
            stop.set()
            for g in futures:
                g.cancel()
            wait(futures)
            real = [f for f in failed if not isinstance(f.exception(), _Skipped)] or failed
            raise real[0].exception()  # type: ignore[misc]
        return [f.result() for f in futures]

    def _chunk_owners(self, n: int) -> list[range]:
        """The items each of :meth:`_chunks`'s chunks serves."""
        return [range(i, min(n, i + self.batch_size)) for i in range(0, n, self.batch_size)]

    def _chunks(self, items: Sequence[Any]) -> list[list[Any]]:
        return [list(items[i:i + self.batch_size]) for i in range(0, len(items),
                                                                   self.batch_size)]

    def _ext(self, route: str, key: str, field: str, items: Sequence[Any],
             body: Callable[[list[Any]], dict[str, Any]]) -> list[Any]:
        """An extension route over chunks of items; per item, ``data[i][field]``."""
        def one(chunk: list[Any]) -> list[Any]:
            res = self._call(lambda: self.client.post(
                route, body={"model": self.model, **body(chunk)}, cast_to=object))
            usage.report_response(res)
            rows = sorted(res["data"], key=lambda d: d["index"])
            return [r[field] for r in rows]

        return [r for part in self._map(one, self._chunks(items),
                                        self._chunk_owners(len(items)), rows=True)
                for r in part]

    # ---- the two routes -----------------------------------------------------------------

    def messages(self, prompt: str) -> list[dict[str, str]]:
        """The chat rendering of a rendered prompt: the ``system`` message (when set), then
        the prompt, verbatim, as the user message; the reply is the assistant's."""
        head = [{"role": "system", "content": self.system}] if self.system else []
        return [*head, {"role": "user", "content": prompt}]

    def next_token(self, prompt: str, extra: dict[str, Any] | None,
                   bias: dict[str, int] | None = None) -> NextToken:
        """One greedy token with its top-k log-probs, on the route in use."""
        chat = self.api_in_use == "chat"
        kw: dict[str, Any] = {"logit_bias": bias} if bias else {}
        if chat:
            res = self._call(lambda: self.client.chat.completions.create(
                model=self.model, messages=self.messages(prompt), max_tokens=1,
                temperature=0, logprobs=True, top_logprobs=self.k, extra_body=extra, **kw))
        else:
            res = self._call(lambda: self.client.completions.create(
                model=self.model, prompt=prompt, max_tokens=1, temperature=0,
                logprobs=self.k, extra_body=extra, **kw))
        usage.report_response(res)
        got = next_token(res.choices[0].logprobs) if res.choices else None
        if got is None or (not chat and not got.top):
            raise BbxError(f"{self._where()} returned no top_logprobs: it cannot score label "
                           "words this way; use label_logprobs: generate")
        return got

    def replies(self, prompt: str, kwargs: dict[str, Any], extra: dict[str, Any] | None
                ) -> list[str]:
        """Generated texts for one prompt, on the route in use (several with ``n``)."""
        if self.api_in_use == "chat":
            res = self._call(lambda: self.client.chat.completions.create(
                model=self.model, messages=self.messages(prompt), extra_body=extra, **kwargs))
            usage.report_response(res)
            return [c.message.content or "" for c in sorted(res.choices, key=lambda c: c.index)]
        res = self._call(lambda: self.client.completions.create(
            model=self.model, prompt=prompt, extra_body=extra, **kwargs))
        usage.report_response(res)
        return [c.text for c in sorted(res.choices, key=lambda c: c.index)]

    def first_token(self, text: str) -> int | None:
        """The server's first token id of ``text`` (``None`` without a tokenize route)."""
        if text not in self._token_ids:
            self._token_ids[text] = first_token_id(self, text)
        return self._token_ids[text]

    # ---- verbs --------------------------------------------------------------------------

    def label_logprobs(
        self, prompts: Sequence[str], label_words: Sequence[str], adapter: Adapter = None
    ) -> list[list[float]]:
        """Per prompt, each label word's score as the mode in use gives it (module docs):
        exact log-probs, top-k log-probs (multi-token words: their first token), or the
        generate mode's one-hot / frequency scores."""
        prompts, words = list(prompts), list(label_words)
        extra = self._extra(adapter)
        mode = self.label_mode
        if mode == "extension":
            return self._ext("/label_logprobs", "label_logprobs", "logprobs", prompts,
                             lambda c: {"prompts": c, "label_words": words, **(extra or {})})
        if mode == "echo":
            pairs = [(p, w) for p in prompts for w in words]
            owners = [(k // len(words),) for k in range(len(pairs))]  # a pair serves its prompt
            sums = [sum(x) for x in self._echo_scores(pairs, extra, owners)]
            return [sums[i * len(words):(i + 1) * len(words)] for i in range(len(prompts))]
        if mode == "generate":
            return self._map(lambda p: generated_row(self, p, words, extra), prompts)
        return self._map(lambda p: topk_row(self, p, words, extra), prompts)

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
                with usage.serving(idx):  # the subset's reports credit these rows
                    got = self.label_logprobs([prompts[i] for i in idx], words,
                                              adapters[idx[0]])
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
            usage.report_response(res)
            return [r["logprobs"] for r in sorted(res["data"], key=lambda d: d["index"])]

        out = [None] * len(prompts)
        for (_, idx), rows in zip(jobs, self._map(one, jobs, [idx for _, idx in jobs],
                                                  rows=True), strict=True):
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

    def vocabulary(self) -> list[str]:
        """The tokenizer's pieces, index = token id: the user's ``tokenizer`` when given,
        else a bbx server's (``GET /v1/vocabulary``). The ``vocabulary`` ability, where
        ``capabilities.vocabulary`` says there is one."""
        if self.tokenizer is not None:
            return self.tokenizer.pieces()
        res = self._call(lambda: self.client.get("/vocabulary", cast_to=object))
        tokens = res.get("tokens") if isinstance(res, dict) else None
        if not isinstance(tokens, list) or not all(isinstance(t, str) for t in tokens):
            raise BbxError(f"{self._where()}/vocabulary answered no token list: give "
                           "candidate words with vocab: [...] or vocab: FILE")
        return tokens

    def score(
        self, prompts: Sequence[str], continuations: Sequence[str], adapter: Adapter = None
    ) -> list[list[float]]:
        if len(prompts) != len(continuations):
            raise BbxError("score needs one continuation per prompt")
        extra = self._extra(adapter)
        if self.api_in_use == "chat":
            raise BbxError("score needs the completions route (prompt log-probs: chat "
                           "routes have no echo): capabilities.score is False with api: chat")
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
        _ = self.info
        return self._map(lambda p: self.replies(p, kwargs, extra)[0], list(prompts))

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        _ = self.info

        def one(chunk: list[str]) -> list[list[float]]:
            res = self._call(lambda: self.client.embeddings.create(
                model=self.model, input=chunk, encoding_format="float"))
            usage.report_response(res)
            return [d.embedding for d in sorted(res.data, key=lambda d: d.index)]

        texts = list(texts)
        return [v for part in self._map(one, self._chunks(texts),
                                        self._chunk_owners(len(texts)), rows=True)
                for v in part]

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        """Counts from the user's ``tokenizer`` when given, else an estimate (about 4
        characters a token)."""
        if self.tokenizer is not None:
            return self.tokenizer.count(list(texts))
        return [max(1, math.ceil(len(t) / CHARS_PER_TOKEN)) for t in texts]

    def usage_bounds(self, verb: str, items: list[dict[str, Any]], texts: list[str],
                     expected: bool = False) -> list[TokenUsage]:
        """Per item, the most its requests may cost, or (``expected``) what they typically
        cost: :func:`blackbox.backends.remote_usage.usage_bounds`."""
        return usage_bounds(self, verb, items, texts, expected)

    def close(self) -> None:
        with self._lock:
            if self._pool is not None:
                self._pool.shutdown(wait=True)
                self._pool = None
            for ep in self.endpoints.endpoints:
                if ep.client is not None:
                    ep.client.close()
                    ep.client = None

    # ---- fallbacks ----------------------------------------------------------------------

    def _echo_scores(self, pairs: list[tuple[str, str]], extra: dict[str, Any] | None,
                     owners: Sequence[Sequence[int]] | None = None) -> list[list[float]]:
        """Continuation token log-probs via ``echo=true, max_tokens=0`` (vLLM's idiom)."""
        _ = self.info

        def one(pair: tuple[str, str]) -> list[float]:
            prompt, cont = pair
            res = self._call(lambda: self.client.completions.create(
                model=self.model, prompt=prompt + cont, max_tokens=0, echo=True, logprobs=0,
                temperature=0, extra_body=extra))
            usage.report_response(res)
            lp = res.choices[0].logprobs
            if lp is None or lp.text_offset is None:
                raise BbxError(f"{self._where()} returned no echo log-probs: use a bbx or vLLM "
                               "server, or label_logprobs: topk")
            return [float(v) for off, v in zip(lp.text_offset, lp.token_logprobs, strict=True)
                    if off >= len(prompt) and v is not None]

        return self._map(one, pairs, owners)


def _serving(fn: Callable[[Any], Any], x: Any, owners: Sequence[int],
             deliver: str | None = None, stop: threading.Event | None = None
             ) -> Callable[[], Any]:
    """``fn(x)`` as a task for the pool: in a copy of this context, crediting ``owners``;
    its answer delivered to the metered call as ``owners``' one answer (``deliver="one"``)
    or as a list, one per owner (``"rows"``). With ``stop``: a failure sets it, and a task
    that starts after that raises :class:`_Skipped` without sending anything."""
    def task() -> Any:
        if stop is not None and stop.is_set():
            raise _Skipped
        try:
            with usage.serving(owners):
                got = fn(x)
                if deliver is not None:
                    usage.deliver([got] if deliver == "one" else got)
                return got
        except BaseException:
            if stop is not None:
                stop.set()
            raise

    return usage.bind(task)


class _Skipped(Exception):
    """A pool task not run because another task of its map had failed."""


def check_same_model(urls: list[str | None], infos: list[dict[str, Any]],
                     listed: list[list[str]], model: str | None) -> str:
    """The model every endpoint serves: ``model``, or the first endpoint's (its bbx model,
    else the first it lists); a one-line error when an endpoint lists none, lacks it, or
    is another bbx server (other weights or adapters: another ``fingerprint``)."""
    where = [u or "the OpenAI API" for u in urls]
    if not listed[0]:
        raise BbxError(f"{where[0]} lists no models: give model=")
    if model is None:
        named = infos[0].get("model")
        model = named if isinstance(named, str) and named in listed[0] else listed[0][0]
    for url, ids in zip(where, listed, strict=True):
        if model not in ids:
            several = f" (one of {len(urls)} endpoints)" if len(urls) > 1 else ""
            raise BbxError(f"{url}{several} does not serve model '{model}' (it lists: "
                           f"{', '.join(ids[:8]) or 'none'}): list endpoints of one model "
                           "in base_url, or give model= one they all serve")
    prints = {str(i.get("fingerprint")) for i in infos}
    if len(prints) > 1:
        raise BbxError(f"the endpoints are different servers of '{model}' (bbx fingerprints "
                       f"{', '.join(sorted(prints))}): list endpoints of one model in base_url")
    return model
