"""Pydantic's validation errors rewritten as one sentence a client can act on.

Pydantic reports a bad field in its own terms: one error per member of a union, each at a
location that names the member (``prompt.function-after[_utf8(), str]``), with messages like
"Input should be a valid string". A client wants the field and what it may be:
``prompt: must be a string or a list of 1 to 2048 strings, got 5``.

The location is resolved against the request body (a union member's tag is no key of the
body, so it drops out), and the sentence comes from the request model's ``ALLOWED`` rules
(see :mod:`blackbox.serve.schemas`). Errors raised by bbx's own validators already are
sentences (an unsupported field, a lone surrogate): those are kept as they are.
"""

from __future__ import annotations

import functools
import json
import typing
from collections.abc import Callable, Sequence
from typing import Any

# pydantic error types that carry bbx's own message (field validators), not a type mismatch
_OWN_MESSAGES = ("value_error", "unsupported_parameter")
_OWN_CODES = ("unsupported_parameter",)  # error types that are the envelope's code too
_SHOWN_CHARS = 60  # how much of a bad value the message repeats


def resolve(loc: Sequence[Any], body: Any, missing: bool = False) -> list[str | int]:
    """The part of an error location that addresses the request body (union tags dropped);
    for a ``missing`` error the location's last key, the absent field, is kept."""
    keys = list(loc[1:] if loc[:1] == ("body",) else loc)
    path: list[str | int] = []
    at = body
    for i, key in enumerate(keys):
        if _has(at, key):
            at = at[key]
        elif missing and i == len(keys) - 1:
            pass  # the absent field: named in the path, it has no value
        else:
            continue  # a union member's tag ("str", "list[...]", "function-after[...]")
        path.append(key)
    return path


def _has(at: Any, key: Any) -> bool:
    """Whether ``key`` addresses something in ``at`` (a dict's key, a list's index)."""
    if isinstance(at, dict):
        return isinstance(key, str) and key in at
    return isinstance(at, list) and isinstance(key, int) and 0 <= key < len(at)


def value_at(body: Any, path: Sequence[str | int]) -> Any:
    """The value of the body at a resolved path."""
    at = body
    for key in path:
        at = at[key]
    return at


def shown(value: Any) -> str:
    """A bad value as the message repeats it: JSON, cut short."""
    try:
        text = json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= _SHOWN_CHARS else text[:_SHOWN_CHARS - 3] + "..."


def pattern(path: Sequence[str | int]) -> str:
    """A path as the rules name it: list indexes are ``*`` (``messages.*.role``)."""
    return ".".join("*" if isinstance(p, int) else p for p in path)


def rule_for(allowed: dict[str, str], path: Sequence[str | int]
             ) -> tuple[str | None, list[str | int]]:
    """The rule of the path, else of its nearest parent that has one, with the path the
    rule is about (a bad ``logit_bias.5`` is a bad ``logit_bias``)."""
    for n in range(len(path), 0, -1):
        rule = allowed.get(pattern(path[:n]))
        if rule is not None:
            return rule, list(path[:n])
    return None, list(path)


@functools.lru_cache(maxsize=64)
def allowed_for(endpoint: Callable[..., Any] | None) -> dict[str, str]:
    """The ``ALLOWED`` rules of the request model a route's endpoint takes (none: ``{}``)."""
    if endpoint is None:
        return {}
    try:
        hints = typing.get_type_hints(endpoint)
    except Exception:  # noqa: BLE001 - an unresolvable hint: describe without rules
        return {}
    for hint in hints.values():
        allowed = getattr(hint, "allowed", None)
        if isinstance(hint, type) and callable(allowed):
            return dict(allowed())
    return {}


def describe(errors: Sequence[dict[str, Any]], body: Any, allowed: dict[str, str]
             ) -> tuple[str, str | None, str]:
    """``(message, param, code)`` for a request's validation errors: the first bad field in
    one sentence, and how many other fields are bad."""
    if isinstance(body, bytes | str):  # not parsed: sent with another Content-Type
        return ("the request body must be a JSON object sent with Content-Type: "
                "application/json", None, "invalid_value")
    if not isinstance(body, dict):
        return (f"the request body must be a JSON object, got {shown(body)}", None,
                "invalid_value")
    resolved = [(resolve(tuple(e.get("loc", ())), body, e.get("type") == "missing"), e)
                for e in errors]
    order = {k: i for i, k in enumerate(body)}  # report the fields in the client's order
    fields = sorted(dict.fromkeys(str(p[0]) for p, _ in resolved if p),
                    key=lambda f: order.get(f, len(order)))
    if not fields:
        first = errors[0] if errors else {}
        return (f"the request body is invalid: {first.get('msg', 'invalid request')}", None,
                "invalid_value")
    mine = [(p, e) for p, e in resolved if p and p[0] == fields[0]]
    own = [(p, e) for p, e in mine if e.get("type") in _OWN_MESSAGES]
    # bbx's own message is the specific reason; otherwise the union as a whole, at its field
    path, err = own[0] if own else min(mine, key=lambda pe: len(pe[0]))
    more = len(fields) - 1
    tail = f" (and {more} more bad field{'s' if more > 1 else ''})" if more else ""
    code = str(err.get("type")) if err.get("type") in _OWN_CODES else "invalid_value"
    if own:
        param = ".".join(str(p) for p in path)
        msg = str(err.get("msg", "")).removeprefix("Value error, ")
        return f"{param}: {msg}{tail}", param, code
    rule, path = rule_for(allowed, path)
    param = ".".join(str(p) for p in path)
    if err.get("type") == "missing":
        need = f", must be {rule}" if rule else ""
        return f"{param}: required{need}{tail}", param, code
    if rule is None:  # a field without a rule: pydantic's words, still at the right field
        return f"{param}: {err.get('msg', 'invalid value')}{tail}", param, code
    return f"{param}: must be {rule}, got {shown(value_at(body, path))}{tail}", param, code
