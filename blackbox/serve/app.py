"""The FastAPI application of ``bbx serve``: any Backend over the OpenAI protocol + bbx
extensions, with bearer-token auth, a body-size limit and OpenAI error envelopes.

``create_app(backend)`` builds the app; :func:`serve` runs it with uvicorn. Pure-ASGI
middlewares run before FastAPI parses anything:

* the error guard, outermost, keeps every exception from reaching uvicorn, which answers
  it by closing the connection: a 500 is an error envelope on a connection that stays
  usable (keep-alive), like any other error;
* the auth guard answers 401 unless ``Authorization: Bearer <key>`` matches, on every route
  but ``/health`` (and the docs), when the server has an API key;
* the size guard answers 413 to bodies over ``max_body_bytes`` (by ``Content-Length``, or
  while reading a chunked body, before the app sees it), so an oversized request never
  reaches the JSON parser.
"""

from __future__ import annotations

import hmac
import json
import logging
import time
from collections.abc import Awaitable, Callable, MutableMapping
from contextlib import asynccontextmanager
from typing import Any

from blackbox.serve.errors import install_handlers

log = logging.getLogger("blackbox.serve")
Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
ASGIApp = Callable[[Scope, Callable[[], Awaitable[Message]], Callable[[Message], Awaitable[None]]],
                   Awaitable[None]]
PUBLIC_PATHS = {"/health", "/docs", "/openapi.json", "/docs/oauth2-redirect", "/redoc"}
DEFAULT_MAX_BODY = 8 * 1024 * 1024


async def _send_error(send: Any, status: int, message: str, code: str,
                      type_: str = "invalid_request_error",
                      headers: list[tuple[bytes, bytes]] | None = None) -> None:
    body = json.dumps({"error": {"message": message, "type": type_, "param": None,
                                 "code": code}}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode()), *(headers or [])]})
    await send({"type": "http.response.body", "body": body})


class BodyLimit:
    """Refuse request bodies over ``limit`` bytes with a 413 envelope.

    A declared ``Content-Length`` over the limit is refused before reading. Any other body
    (chunked ones have no length) is read here, counted as it arrives and refused as soon as
    it passes the limit; the app then gets the body already read. Counting inside the app's
    own reads would not do: FastAPI turns any error raised while it reads the body into a
    400 "error parsing the body".
    """

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app, self.limit = app, limit

    async def _too_large(self, send: Any) -> None:
        await _send_error(send, 413, f"the request body is over this server's limit of "
                          f"{self.limit} bytes", "body_too_large")

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    too_big = int(value) > self.limit
                except ValueError:
                    return await _send_error(send, 400, "bad Content-Length header",
                                             "invalid_header")
                if too_big:
                    return await self._too_large(send)
        body = bytearray()
        while True:
            msg = await receive()
            if msg["type"] != "http.request":  # the client went away: nobody to answer
                return
            body += msg.get("body", b"")
            if len(body) > self.limit:
                return await self._too_large(send)
            if not msg.get("more_body", False):
                break
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:  # after the body: disconnects, as the server reports them
                return await receive()
            replayed = True
            return {"type": "http.request", "body": bytes(body), "more_body": False}

        await self.app(scope, replay, send)


class ServerErrors:
    """Answer unhandled exceptions with a 500 envelope and never let them reach uvicorn.

    Starlette re-raises an exception after its handler has answered the 500; uvicorn then
    closes the connection without a ``Connection: close``, and the client's next request on
    it fails with a reset. Swallowing the re-raise keeps the connection usable.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = done = False

        async def tracking_send(msg: Message) -> None:
            nonlocal started, done
            if msg["type"] == "http.response.start":
                started = True
            elif msg["type"] == "http.response.body" and not msg.get("more_body", False):
                done = True
            await send(msg)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception:
            if done:  # answered (the app's handler logged it): the connection is fine
                return
            if started:  # a response cut short: only closing the connection can say so
                raise
            log.exception("unhandled error (a bug in bbx serve)")
            await _send_error(send, 500, "internal error", "internal_error", "server_error")


class BearerAuth:
    """Require ``Authorization: Bearer <key>`` on every route but the public ones."""

    def __init__(self, app: ASGIApp, key: str) -> None:
        self.app, self.key = app, key.encode()

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope.get("path") in PUBLIC_PATHS:
            return await self.app(scope, receive, send)
        given = b""
        for name, value in scope.get("headers", []):
            if name == b"authorization":
                scheme, _, token = value.partition(b" ")
                given = token.strip() if scheme.lower() == b"bearer" else b""
        if not hmac.compare_digest(given, self.key):  # constant time: no key oracle
            return await _send_error(send, 401, "missing or wrong API key: send "
                                     "'Authorization: Bearer <key>'", "invalid_api_key",
                                     "authentication_error",
                                     [(b"www-authenticate", b"Bearer")])
        await self.app(scope, receive, send)


def create_app(
    backend: Any,
    api_key: str | None = None,
    model_name: str | None = None,
    max_body_bytes: int = DEFAULT_MAX_BODY,
    max_batch: int = 64,
    max_wait_ms: float = 4.0,
    allow_adapter_paths: bool = False,
    warm: bool = True,
    max_queue: int | None = None,
) -> Any:
    """An ASGI app serving ``backend`` (see module docs). ``warm`` loads the model at start.
    ``max_queue`` bounds the generation sequences waiting for a place in the decode batch
    (default 256); past it requests get a 503 with ``Retry-After``."""
    from fastapi import FastAPI

    from blackbox import __version__
    from blackbox.serve import bbx_routes, openai_routes
    from blackbox.serve.service import Service

    svc = Service(backend, model_name=model_name, max_batch=max_batch,
                  max_wait_s=max_wait_ms / 1000.0, allow_adapter_paths=allow_adapter_paths,
                  max_queue=max_queue)

    @asynccontextmanager
    async def lifespan(_app: Any) -> Any:
        yield
        svc.close()

    app = FastAPI(
        title="bbx serve", version=__version__, lifespan=lifespan,
        description="An OpenAI-compatible server over a local model and an adapter "
        "repository. bbx extensions: `adapter` (a name or a mixture {adapters, alpha, beta}) "
        "on every route; /v1/label_logprobs, /v1/score, /v1/hidden_states, /v1/adapters, "
        "/v1/bbx, /tokenize.",
    )
    app.state.service = svc
    app.state.started = time.time()
    install_handlers(app)
    app.include_router(bbx_routes.public)
    app.include_router(openai_routes.router)
    app.include_router(bbx_routes.router)
    if warm:
        svc.warm()
    # auth outside the size guard: a client without the key gets its 401 before the server
    # reads (and holds) any of its body
    wrapped: Any = BodyLimit(app, max_body_bytes)
    if api_key:
        wrapped = BearerAuth(wrapped, api_key)
    wrapped = ServerErrors(wrapped)
    # keep the FastAPI object reachable (tests, openapi()) through the middleware stack
    wrapped.fastapi = app
    return wrapped


def serve(app: Any, host: str = "127.0.0.1", port: int = 8000,
          log_level: str = "info") -> None:
    """Run an app from :func:`create_app` with uvicorn until interrupted."""
    import uvicorn

    uvicorn.run(app, host=host, port=port, log_level=log_level, lifespan="on")
