"""OpenAI-style errors: every failure is ``{"error": {"message", "type", "param", "code"}}``.

Anything a client sends that cannot be served is a 4xx with this envelope, and the server
keeps serving: validation errors and malformed JSON (400), a bad key (401), unknown
models or adapters (404), oversized bodies (413). A full generation queue is a 503 with a
``Retry-After`` header (the SDK retries it). A 500 means a bug in bbx. A validation
error's message is one sentence naming the field and what it may be
(:mod:`blackbox.serve.validation`), not pydantic's internals.
"""

from __future__ import annotations

import logging
from typing import Any

from blackbox.errors import BbxError, UnknownAdapter

log = logging.getLogger("blackbox.serve")

_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
          404: "not_found_error", 405: "invalid_request_error", 413: "invalid_request_error",
          415: "invalid_request_error", 422: "invalid_request_error", 429: "rate_limit_error"}


class APIError(Exception):
    """An error answered with an OpenAI envelope and an HTTP status."""

    def __init__(self, status: int, message: str, param: str | None = None,
                 code: str | None = None, type_: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.headers = headers
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.type = type_ or _TYPES.get(status, "server_error" if status >= 500
                                        else "invalid_request_error")


def envelope(status: int, message: str, param: str | None = None, code: str | None = None,
             type_: str | None = None, headers: dict[str, str] | None = None) -> Any:
    """A JSONResponse holding the OpenAI error envelope."""
    from fastapi.responses import JSONResponse

    err = APIError(status, _printable(message) or "", _printable(param), code, type_)
    return JSONResponse(status_code=status, headers=headers, content={"error": {
        "message": err.message, "type": err.type, "param": err.param, "code": err.code}})


def _printable(text: str | None) -> str | None:
    """``text`` made UTF-8-safe: a client's lone surrogates echoed in a message would make
    the JSON encoder fail (a 500) while reporting a 400."""
    if text is None:
        return None
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def from_bbx_error(e: BbxError, param: str | None = None) -> APIError:
    """Map a library error to a status: unknown adapters are 404, the rest 400."""
    msg = str(e)
    if isinstance(e, UnknownAdapter):
        return APIError(404, msg, "adapter", "adapter_not_found")
    if "context of" in msg:
        return APIError(400, msg, param or "prompt", "context_length_exceeded")
    return APIError(400, msg, param, "invalid_value")


def install_handlers(app: Any) -> None:
    """Register the envelope handlers on a FastAPI app."""
    from fastapi.exceptions import RequestValidationError
    from starlette.exceptions import HTTPException as StarletteHTTPException

    @app.exception_handler(APIError)
    async def _api_error(_request: Any, exc: APIError) -> Any:
        return envelope(exc.status, exc.message, exc.param, exc.code, exc.type, exc.headers)

    @app.exception_handler(BbxError)
    async def _bbx_error(_request: Any, exc: BbxError) -> Any:
        err = from_bbx_error(exc)
        return envelope(err.status, err.message, err.param, err.code)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Any, exc: RequestValidationError) -> Any:
        from blackbox.serve.validation import allowed_for, describe

        errors = exc.errors()
        first = errors[0] if errors else {}
        if first.get("type") == "json_invalid":
            return envelope(400, "the request body is not valid JSON: "
                            f"{first.get('ctx', {}).get('error', 'parse error')}",
                            None, "invalid_json")
        if tuple(first.get("loc", ())) == ("body",) and first.get("type") == "missing":
            return envelope(400, "the request needs a JSON object body", None, "missing_body")
        route = request.scope.get("route")
        message, param, code = describe(errors, exc.body,
                                        allowed_for(getattr(route, "endpoint", None)))
        return envelope(400, message, param, code)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_request: Any, exc: StarletteHTTPException) -> Any:
        message = exc.detail if isinstance(exc.detail, str) else "request failed"
        if exc.status_code == 404 and message == "Not Found":
            message = "no such route: see /docs for the routes this server has"
        return envelope(exc.status_code, message, None, None)

    @app.exception_handler(Exception)
    async def _bug(_request: Any, exc: Exception) -> Any:
        log.exception("unhandled error (a bug in bbx serve)", exc_info=exc)
        return envelope(500, f"internal error: {type(exc).__name__}", None, "internal_error",
                        "server_error")
