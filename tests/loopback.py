"""A small HTTP/1.1 server for an ASGI app on 127.0.0.1, with seeded faults and a kill
switch: what the remote backend's fault and endpoint tests (and
``scripts/bench_endpoints.py``) run against.

Not uvicorn, because a fault test needs what an ASGI app cannot do: drop a connection
without an answer, and refuse new connections when killed mid-run. Each request draws
once from a seeded generator (in arrival order): ``rate_429`` answers 429 with
``retry-after`` (seconds), ``rate_500`` answers 500 (with the same ``retry-after``, as
overloaded servers send), ``drop`` aborts the connection
without an answer, ``stall`` waits ``stall_s`` (past the client's timeout) before
answering; the rest reach the app. ``kill_after``: after that many answered requests the
server closes its port and every open connection.
"""

from __future__ import annotations

import asyncio
import json
import random
import threading
from dataclasses import dataclass, field
from typing import Any

REASONS = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found",
           422: "Unprocessable Entity", 429: "Too Many Requests",
           500: "Internal Server Error"}


@dataclass
class Faults:
    """Per-request fault probabilities (their sum at most 1) and their parameters."""

    rate_429: float = 0.0
    rate_500: float = 0.0
    drop: float = 0.0
    stall: float = 0.0
    retry_after_s: float = 0.02
    stall_s: float = 2.0
    seed: int = 0


@dataclass
class Counts:
    requests: int = 0
    answered: int = 0  # reached the app and were answered
    r429: int = 0
    r500: int = 0
    drops: int = 0
    stalls: int = 0
    by_path: dict[str, int] = field(default_factory=dict)


class LoopbackServer:
    """``with LoopbackServer(app, faults) as base:`` serves ``app`` at ``base`` (``/v1``)."""

    def __init__(self, app: Any, faults: Faults | None = None,
                 kill_after: int | None = None) -> None:
        self.app, self.faults, self.kill_after = app, faults or Faults(), kill_after
        self.counts = Counts()
        self._rng = random.Random(self.faults.seed)
        self._loop = asyncio.new_event_loop()
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self.port = 0
        self.killed = False

    def __enter__(self) -> str:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(timeout=30)
        return f"http://127.0.0.1:{self.port}/v1"

    def __exit__(self, *exc: object) -> None:
        self.kill()
        asyncio.run_coroutine_threadsafe(self._cancel_all(), self._loop).result(timeout=30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=30)
        self._loop.close()

    async def _cancel_all(self) -> None:
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _start(self) -> None:
        self._server = await asyncio.start_server(self._connection, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    def kill(self) -> None:
        """Close the port and every open connection (later connections are refused)."""
        if not self.killed and self._thread.is_alive():
            asyncio.run_coroutine_threadsafe(self._kill(), self._loop).result(timeout=30)

    async def _kill(self) -> None:
        if self.killed:
            return
        self.killed = True
        if self._server is not None:
            self._server.close()
        for w in list(self._writers):
            w.transport.abort()

    # ---- one connection, many requests ---------------------------------------------------

    async def _connection(self, reader: asyncio.StreamReader,
                          writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            while not self.killed:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                lines = head.decode("latin-1").split("\r\n")
                method, target, _ = lines[0].split(" ", 2)
                headers = [tuple(x.split(":", 1)) for x in lines[1:] if ":" in x]
                headers = [(k.strip().lower(), v.strip()) for k, v in headers]
                size = int(dict(headers).get("content-length", "0"))
                body = await reader.readexactly(size) if size else b""
                if not await self._answer(writer, method, target, headers, body):
                    return
        finally:
            self._writers.discard(writer)
            writer.transport.abort()

    async def _answer(self, writer: asyncio.StreamWriter, method: str, target: str,
                      headers: list[tuple[str, str]], body: bytes) -> bool:
        """Answer one request; False when the connection is gone."""
        f, c = self.faults, self.counts
        c.requests += 1
        draw = self._rng.random()
        if draw < f.rate_429:
            c.r429 += 1
            return await self._write(writer, 429, _error("rate limited (injected)"),
                                     [("retry-after", f"{f.retry_after_s:g}")])
        draw -= f.rate_429
        if draw < f.rate_500:
            c.r500 += 1
            return await self._write(writer, 500, _error("server error (injected)"),
                                     [("retry-after", f"{f.retry_after_s:g}")])
        draw -= f.rate_500
        if draw < f.drop:
            c.drops += 1
            writer.transport.abort()  # no answer at all
            return False
        draw -= f.drop
        if draw < f.stall:
            c.stalls += 1
            await asyncio.sleep(f.stall_s)
        status, out_headers, out = await self._asgi(method, target, headers, body)
        if self.killed:
            return False
        path = target.split("?", 1)[0]
        c.answered += 1
        c.by_path[path] = c.by_path.get(path, 0) + 1
        ok = await self._write(writer, status, out, out_headers)
        if self.kill_after is not None and c.answered >= self.kill_after:
            await self._kill()
            return False
        return ok

    async def _asgi(self, method: str, target: str, headers: list[tuple[str, str]],
                    body: bytes) -> tuple[int, list[tuple[str, str]], bytes]:
        path, _, query = target.partition("?")
        scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
                 "method": method, "scheme": "http", "path": path, "root_path": "",
                 "raw_path": path.encode(), "query_string": query.encode(),
                 "headers": [(k.encode(), v.encode()) for k, v in headers],
                 "server": ("127.0.0.1", self.port), "client": ("127.0.0.1", 0)}
        sent = False
        status, out_headers, chunks = 500, [], []

        async def receive() -> dict[str, Any]:
            nonlocal sent
            if sent:
                await asyncio.sleep(3600)  # no disconnect while the app answers
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            nonlocal status, out_headers
            if message["type"] == "http.response.start":
                status = message["status"]
                out_headers = [(k.decode(), v.decode()) for k, v in message.get("headers", [])
                               if k.lower() not in (b"content-length", b"connection")]
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))

        await self.app(scope, receive, send)
        return status, out_headers, b"".join(chunks)

    async def _write(self, writer: asyncio.StreamWriter, status: int, body: bytes,
                     headers: list[tuple[str, str]] | None = None) -> bool:
        hdrs = [("content-type", "application/json")] if not any(
            k.lower() == "content-type" for k, _ in headers or []) else []
        lines = [f"HTTP/1.1 {status} {REASONS.get(status, 'Status')}",
                 *(f"{k}: {v}" for k, v in [*hdrs, *(headers or [])]),
                 f"content-length: {len(body)}", "", ""]
        try:
            writer.write("\r\n".join(lines).encode("latin-1") + body)
            await writer.drain()
        except ConnectionError:
            return False
        return True


def _error(message: str) -> bytes:
    return json.dumps({"error": {"message": message, "type": "server_error", "param": None,
                                 "code": None}}).encode()
