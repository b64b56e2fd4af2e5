"""Structured output refuses the schema keywords its grammar cannot enforce, by name and
place, so a client never receives a "matching" document that breaks its schema."""

from __future__ import annotations

from blackbox.engine.constrain import unenforced


def test_unenforced_keywords_are_named_with_their_place_and_property_names_are_not() -> None:
    schema = {"type": "object", "minProperties": 1,
              "properties": {"format": {"type": "string"},  # a property, not the keyword
                             "score": {"type": "number", "exclusiveMaximum": 1},
                             "tags": {"type": "array", "uniqueItems": True,
                                      "items": {"type": "string", "format": "email"}}},
              "anyOf": [{"properties": {"x": {"not": {"type": "null"}}}}],
              "$defs": {"when": {"type": "string", "format": "date-time"}}}
    assert unenforced(schema) == [
        "'minProperties' at the top level",
        "'exclusiveMaximum' at properties.score",
        "'uniqueItems' at properties.tags",
        "'format' at properties.tags.items",
        "'format' at $defs.when",
        "'not' at anyOf[0].properties.x",
    ]
    # what the grammar does enforce passes untouched
    assert unenforced({"type": "object", "required": ["a"], "properties": {
        "a": {"enum": ["x", "y"]}, "b": {"type": "string", "maxLength": 5},
        "c": {"type": "array", "minItems": 1, "items": {"type": "integer"}}}}) == []
