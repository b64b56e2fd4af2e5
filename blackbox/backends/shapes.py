"""The two shapes servers answer log-probs in, read the same way on both routes.

* **legacy** (OpenAI's ``/v1/completions``, vLLM, llama-cpp-python, bbx):
  ``logprobs = {tokens: [...], token_logprobs: [...], top_logprobs: [{text: lp}, ...]}``;
* **chat** (OpenAI's ``/v1/chat/completions``, and llama.cpp's C++ ``llama-server`` on
  ``/v1/completions`` too): ``logprobs = {content: [{token, logprob, top_logprobs:
  [{token, logprob}, ...]}, ...]}``.

Either shape may arrive on either route, so the reader looks at the fields, not the route.
Values come as SDK objects (fields the SDK does not know are kept as extras) or as dicts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class NextToken:
    """The first generated token: its text and log-prob, and the server's top-k list.

    ``top`` keeps the server's order and every entry (the chat shape may list two ids with
    the same text, e.g. partial UTF-8 bytes); ``token``/``logprob`` are ``None`` when the
    server did not say.
    """

    top: list[tuple[str, float]]
    token: str | None
    logprob: float | None


def _get(obj: Any, key: str) -> Any:
    if obj is None:
        return None
    if isinstance(obj, dict):
        return obj.get(key)
    value = getattr(obj, key, None)
    if value is None:
        extra = getattr(obj, "model_extra", None)  # fields the SDK's model does not declare
        if isinstance(extra, dict):
            value = extra.get(key)
    return value


def _float(v: Any) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if not math.isnan(f) else None


def next_token(logprobs: Any) -> NextToken | None:
    """The first token of a choice's ``logprobs``, in either shape: ``None`` when the server
    sent no log-probs at all, an empty :class:`NextToken` for an empty reply (the model
    ended at once). The chosen token joins ``top`` when the server left it out."""
    if logprobs is None:
        return None
    content = _get(logprobs, "content")
    if isinstance(content, list):  # the chat shape
        if not content:
            return NextToken([], None, None)
        first = content[0]
        top = []
        for entry in _get(first, "top_logprobs") or []:
            lp = _float(_get(entry, "logprob"))
            tok = _get(entry, "token")
            if lp is not None and isinstance(tok, str):
                top.append((tok, lp))
        token = _get(first, "token")
        return _with_chosen(top, token, _float(_get(first, "logprob")))
    tops = _get(logprobs, "top_logprobs")  # the legacy shape
    tokens = _get(logprobs, "tokens")
    values = _get(logprobs, "token_logprobs")
    if not isinstance(tokens, list) and not isinstance(tops, list):
        return None
    top_map = tops[0] if isinstance(tops, list) and tops and isinstance(tops[0], dict) else {}
    top = [(str(k), f) for k, v in top_map.items() if (f := _float(v)) is not None]
    token = tokens[0] if isinstance(tokens, list) and tokens else None
    value = _float(values[0]) if isinstance(values, list) and values else None
    return _with_chosen(top, token, value)


def _with_chosen(top: list[tuple[str, float]], token: Any, value: float | None) -> NextToken:
    tok = token if isinstance(token, str) else None
    if tok is not None and value is not None and all(t != tok for t, _ in top):
        top = [*top, (tok, value)]  # a server that lists no top-k still names its pick
    return NextToken(top, tok, value)
