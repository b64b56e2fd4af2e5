"""The remote backend's failures as one-line :class:`~blackbox.errors.BbxError` s that name
the problem and the fix (the CLI prints them and exits 2).

An SDK error arrives here after the SDK's retries (and, with several endpoints, after every
endpoint was tried). The cases a user meets first get their own message: a server that
cannot be reached, a wrong key (401), a model the server does not serve (404, checked
against its ``/v1/models``), a model that refuses both the completions and the chat route,
``top_logprobs`` above the server's cap, time-outs and rate limits that outlast the
retries. Anything else is the server's own message with its status.
"""

from __future__ import annotations

import contextlib
import json
import re
from typing import TYPE_CHECKING, Any

from blackbox.errors import BbxError

if TYPE_CHECKING:
    from blackbox.backends.endpoints import Endpoint
    from blackbox.backends.remote import RemoteBackend

REFUSED = (400, 404, 405, 422, 501)  # a route that refuses a request or a model


class UnknownModel(BbxError):
    """The server does not serve the model asked for (a 404 on a model it does not list):
    not a sign of a chat model, so route detection passes it on."""


_CAP = re.compile(r"(?:max(?:imum)?|at most|<=|less than or equal to|up to|limit)"
                  r"\D{0,24}?(\d+)", re.IGNORECASE)


def explain(b: RemoteBackend, ep: Endpoint, e: Exception, tried: int = 1) -> BbxError:
    """The one-line error for SDK error ``e`` raised by a call to endpoint ``ep``
    (``tried``: how many endpoints failed the call)."""
    import openai

    where = ep.url or "the OpenAI API"
    head = f"all {tried} endpoints failed the call; the last, " if tried > 1 else ""
    retries = f"after {b.max_retries} retries"
    if isinstance(e, openai.AuthenticationError):
        return BbxError(f"{head}{where} refused the API key (401): set ${b.api_key_env} to "
                        "a valid key")
    if isinstance(e, openai.APITimeoutError):
        return BbxError(f"{head}{where} timed out {retries} (timeout {b.timeout:g} s): raise "
                        "backend.timeout, or check that the server is not overloaded")
    if isinstance(e, openai.APIConnectionError):
        cause = _cause(e)
        return BbxError(f"{head}cannot reach {where} ({cause}): start the server, or fix "
                        "base_url (--base-url)")
    if not isinstance(e, openai.APIStatusError):
        return BbxError(f"{head}{where}: {e}")
    status, msg, path = e.status_code, _message(e), _path(e)
    if isinstance(e, openai.RateLimitError):
        return BbxError(f"{head}{where} still answered 429 (rate limit) {retries}: {msg}; "
                        "lower backend.max_concurrency, or raise backend.max_retries")
    if status >= 500:
        return BbxError(f"{head}{where} answered {status} {retries}: {msg}")
    if status == 404:
        listed = _listed(b, ep)
        if listed is not None and b.model is not None and b.model not in listed:
            shown = ", ".join(listed[:8]) + (", ..." if len(listed) > 8 else "")
            return UnknownModel(f"{where} does not serve model '{b.model}' (it lists: "
                                f"{shown or 'none'}): give --model (backend.model) one of "
                                "them")
    if status in REFUSED:
        sent = _sent(e)
        k = sent.get("top_logprobs") if sent.get("logprobs") is True else sent.get("logprobs")
        cap = _CAP.search(msg)
        most = int(cap.group(1)) if cap else None
        # a cap: the message is about log-probs and names a smaller maximum, or our number
        if isinstance(k, int) and not isinstance(k, bool) and "logprob" in msg.lower() and (
                (most is not None and most < k) or re.search(rf"\b{k}\b", msg)):
            n = most if most is not None and most < k else "a smaller number"
            return BbxError(f"{where} refuses top_logprobs={k} ({msg}): set the recipe's "
                            f"backend.top_logprobs to {n} (bbx run RECIPE --set "
                            f"backend.top_logprobs={most if isinstance(n, int) else 'N'})")
        decided = str((b._info or {}).get("api_decided", ""))
        if path.endswith("/chat/completions") and decided.startswith("auto: /v1/completions "
                                                                        "refused"):
            return BbxError(f"{where}: model '{b.model}' refuses both /v1/completions and "
                            f"/v1/chat/completions ({msg}): use a text-generation model "
                            "(--model)")
    return BbxError(f"{where} answered {status}: {msg}")


def _listed(b: RemoteBackend, ep: Endpoint) -> list[str] | None:
    """The model ids ``ep`` lists (``None`` when it cannot say): one request, no retries."""
    with contextlib.suppress(Exception):
        client = b.endpoints.client_of(ep).with_options(max_retries=0)
        return sorted(m.id for m in client.models.list().data)
    return None


def _sent(e: Any) -> dict[str, Any]:
    """The JSON body of the request that failed (``{}`` when there is none)."""
    with contextlib.suppress(Exception):
        body = json.loads(e.request.content or b"{}")
        if isinstance(body, dict):
            return body
    return {}


def _path(e: Any) -> str:
    with contextlib.suppress(Exception):
        return str(e.request.url.path)
    return ""


def _cause(e: BaseException) -> str:
    """The innermost reason of a connection error, in a few words."""
    inner: BaseException = e
    while inner.__cause__ is not None:
        inner = inner.__cause__
    text = str(inner).splitlines()[0] if str(inner) else type(inner).__name__
    return text if inner is not e else str(e)


def _message(e: Any) -> str:
    body = getattr(e, "body", None)
    if isinstance(body, dict):
        err = body.get("error", body)
        if isinstance(err, dict) and err.get("message"):
            return str(err["message"]).splitlines()[0]
        if isinstance(err, str):
            return err.splitlines()[0]
    return str(getattr(e, "message", e)).splitlines()[0]
