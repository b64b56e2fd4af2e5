"""Structured output: JSON that a row's tokens must spell, enforced token by token.

``response_format: {"type": "json_object"}`` or ``{"type": "json_schema", ...}`` on the chat
route becomes a :class:`JsonGuide` on each of the request's decode rows: before a row's next
token is picked, every token that cannot continue a valid document is masked out, and the
end-of-sequence token is allowed only once the document is complete. The parsing is
lm-format-enforcer's (a maintained library that walks a JSON Schema character by character
over a prefix tree of the vocabulary); this module only hands it the tokenizer.

Its own ``transformers`` integration imports names that transformers 5 removed, so the
vocabulary table it needs (``(id, text, starts a word)`` for every regular token) is built
here from the engine's tokenizer. Tokens that decode to a partial UTF-8 character are left
out of that table: JSON strings are then spelled from whole characters only (non-ASCII text
still comes out, from the tokens that hold whole characters).
"""

from __future__ import annotations

import threading
from typing import Any

from blackbox.errors import BbxError

_LOCK = threading.Lock()


def tokenizer_data(engine: Any) -> Any:
    """lm-format-enforcer's table of ``engine``'s vocabulary, built once per engine (~1 s)."""
    with _LOCK:
        data = getattr(engine, "_json_tokenizer_data", None)
        if data is None:
            from lmformatenforcer import TokenEnforcerTokenizerData

            tok = engine.tokenizer
            special = set(tok.all_special_ids)
            regular = []
            for i in range(len(tok)):
                if i in special:
                    continue
                text = tok.decode([i])
                if text and "\ufffd" not in text:
                    regular.append((i, text, text[:1].isspace()))
            eos = sorted(engine.eos_ids) if engine.eos_ids else tok.eos_token_id
            data = TokenEnforcerTokenizerData(regular, tok.decode, eos, False, len(tok))
            engine._json_tokenizer_data = data
        return data


#: JSON Schema keywords lm-format-enforcer (0.11) parses past without enforcing: a document
#: decoded under them can break them (a "maximum": 100 integer came out as 1000), so a schema
#: that uses one is refused up front rather than answered with a document that does not match.
UNENFORCED = ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf",
              "format", "uniqueItems", "contains", "minContains", "maxContains",
              "minProperties", "maxProperties", "propertyNames", "patternProperties",
              "dependentRequired", "dependentSchemas", "not", "if", "then", "else")


def unenforced(schema: Any, path: str = "the top level") -> list[str]:
    """``"'keyword' at path"`` for each :data:`UNENFORCED` keyword in ``schema`` (property
    names are not keywords: a property called ``format`` is fine)."""
    if not isinstance(schema, dict):
        return []
    here = "" if path == "the top level" else f"{path}."
    out = [f"'{k}' at {path}" for k in UNENFORCED if k in schema]
    for key in ("properties", "$defs", "definitions"):
        for name, sub in (schema.get(key) or {}).items():
            out += unenforced(sub, f"{here}{key}.{name}")
    for key in ("items", "additionalProperties"):
        out += unenforced(schema.get(key), f"{here}{key}")
    for key in ("prefixItems", "anyOf", "oneOf", "allOf"):
        for i, sub in enumerate(schema.get(key) or []):
            out += unenforced(sub, f"{here}{key}[{i}]")
    return out


class JsonGuide:
    """Which tokens may come next in one row, so that its text is a JSON document matching
    ``schema`` (``None``: any JSON object). One guide per row: it remembers the row's parse."""

    def __init__(self, engine: Any, schema: dict[str, Any] | None,
                 prompt_ids: list[int]) -> None:
        from lmformatenforcer import CharacterLevelParserConfig, JsonSchemaParser, TokenEnforcer

        # at most 8 whitespace characters in a row (the library allows 12): enough for a
        # newline and three levels of two-space indentation, and a model that prefers blanks
        # cannot spend its max_tokens on them
        config = CharacterLevelParserConfig(max_consecutive_whitespaces=8)
        if found := unenforced(schema):
            raise BbxError("this JSON schema cannot be enforced: " + ", ".join(found)
                           + " (bbx serve's grammar does not enforce these keywords); leave "
                           "them out and check those values after the response")
        try:
            parser = JsonSchemaParser(schema if schema is not None else {"type": "object"},
                                      config)
        except Exception as e:  # noqa: BLE001 - the library raises many kinds on bad schemas
            raise BbxError(f"this JSON schema cannot be enforced: {e}") from None
        self._enforcer = TokenEnforcer(tokenizer_data(engine), parser)
        self._prompt = list(prompt_ids)

    def allowed(self, generated: list[int]) -> list[int]:
        """Token ids that may follow the row's ``generated`` tokens (never empty: when the
        parser is stuck it allows only the end of sequence)."""
        out = self._enforcer.get_allowed_tokens(self._prompt + generated)
        return list(out.allowed_tokens if hasattr(out, "allowed_tokens") else out)


def guide_schema(response_format: dict[str, Any] | None) -> tuple[bool, dict[str, Any] | None]:
    """``(constrained, schema)`` for a validated chat ``response_format``."""
    if not response_format or response_format.get("type") == "text":
        return False, None
    if response_format["type"] == "json_object":
        return True, None
    return True, response_format["json_schema"].get("schema") or {}
