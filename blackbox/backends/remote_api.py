"""Which route the remote backend speaks: ``api: auto | chat | completions``.

``completions`` sends the rendered prompt to ``/v1/completions`` as text the model
continues; ``chat`` sends it to ``/v1/chat/completions`` as the user message (after the
``system`` message when one is set), and the answer is the assistant's reply.

``auto`` decides once per server and model (for every backend of the process): a bbx
server keeps completions (its extensions are there); elsewhere one probe asks the
completions route for one token (``prompt="Hi", max_tokens=1``), and a model it refuses
(400, 404, 405 or 501, or another client error that names chat, as OpenAI's "This is a
chat model and not supported in the v1/completions endpoint") is a chat model. A bad key,
rate limits, server errors and a model the server does not list (404) are errors, not a
decision. The choice and its reason are
``capabilities.extra["api"]`` and ``["api_decided"]``; the fingerprint names chat.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

from blackbox.backends.remote_errors import UnknownModel
from blackbox.errors import BbxError

if TYPE_CHECKING:
    from blackbox.backends.remote import RemoteBackend

REFUSED = (400, 404, 405, 501)  # a completions route that refuses a model: a chat model
_DETECTED: dict[tuple[str, str], tuple[str, str]] = {}  # (url, model) -> (api, why)
_LOCK = threading.Lock()


def decide_api(b: RemoteBackend, bbx: bool) -> tuple[str, str]:
    """(the route, why) for backend ``b`` on a server that is (not) a bbx server."""
    if b.api != "auto":
        return b.api, "set"
    if bbx:
        return "completions", "bbx server (its extensions are on the completions route)"
    key = (b.base_url or "openai", str(b.model))
    with _LOCK:  # once per server and model: later backends reuse the answer
        if key not in _DETECTED:
            _DETECTED[key] = _probe(b)
        return _DETECTED[key]


def _probe(b: RemoteBackend) -> tuple[str, str]:
    try:
        b._call(lambda: b.client.completions.create(model=b.model, prompt="Hi", max_tokens=1,
                                                    temperature=0))
    except UnknownModel:
        raise  # a model the server does not serve is an error, not a chat model
    except BbxError as e:
        status = getattr(e.__cause__, "status_code", None)
        names_chat = "chat" in str(e).lower() and status is not None and status < 500 \
            and status not in (401, 403, 408, 429)
        if status in REFUSED or names_chat:
            return "chat", f"auto: /v1/completions refused the model ({e})"
        raise
    return "completions", "auto: /v1/completions answered"


def check_modes(b: RemoteBackend, info: dict[str, Any]) -> None:
    """Refuse settings the route in use cannot honour, with what to use instead."""
    chat = info["api"] == "chat"
    if b.mode == "extension" and (chat or not info["bbx"]):
        raise BbxError(f"{b._where()} has no bbx extensions" + (
            " on the chat route" if info["bbx"] else "") + ": use label_logprobs: topk "
            "(or echo on servers with echo log-probs, or generate without log-probs)")
    if chat and b.mode == "echo":
        raise BbxError("label_logprobs: echo needs the completions route (chat has no echo): "
                       "use topk or generate")
    if b.system and not chat:
        raise BbxError("system is a chat message and the completions route has none: use "
                       "api: chat, or put the text in the prompt")
