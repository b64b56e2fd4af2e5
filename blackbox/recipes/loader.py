"""Load a recipe: YAML → ``include:`` merge → ``--set key=value`` overrides → validation.

Errors come out as one-line :class:`~blackbox.errors.BbxError` messages that name the file,
the key and the fix (a misspelled key gets a did-you-mean).
"""

from __future__ import annotations

import copy
import json
import typing
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from blackbox.errors import BbxError, did_you_mean
from blackbox.recipes.schema import RecipeBase


def _read_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise BbxError(f"recipe file {path} not found: check the path")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        problem = getattr(e, "problem", e)
        raise BbxError(f"recipe {path}{where}: not valid YAML ({problem})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise BbxError(f"recipe {path}: the top level must be a mapping of keys")
    return data


def deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """``over`` on top of ``base``; nested mappings merge, everything else is replaced."""
    out = copy.deepcopy(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def _resolve_includes(path: Path, seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    path = path.resolve()
    if path in seen:
        raise BbxError(f"recipe {path}: include cycle through {' -> '.join(map(str, seen))}")
    data = _read_yaml(path)
    includes = data.pop("include", [])
    if isinstance(includes, str):
        includes = [includes]
    merged: dict[str, Any] = {}
    for inc in includes:
        merged = deep_merge(merged, _resolve_includes(path.parent / inc, (*seen, path)))
    return deep_merge(merged, data)


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``key.sub=value`` overrides; values are parsed as YAML (``3``, ``true``, ``[1,2]``)."""
    out = copy.deepcopy(data)
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise BbxError(
                f"--set {item!r}: use key=value (for example --set budget.max_queries=500)"
            )
        node = out
        parts = key.strip().split(".")
        for p in parts[:-1]:
            nxt = node.get(p)
            if nxt is None:
                nxt = node[p] = {}
            if not isinstance(nxt, dict):
                raise BbxError(f"--set {key}: '{p}' is not a mapping")
            node = nxt
        try:
            node[parts[-1]] = yaml.safe_load(raw)
        except yaml.YAMLError:
            node[parts[-1]] = raw
    return out


def overrides_between(base: dict[str, Any], data: dict[str, Any],
                      skip: tuple[str, ...] = ()) -> list[str]:
    """The ``key.sub=value`` overrides that turn ``base`` into ``data`` (the inverse of
    :func:`apply_overrides`, for a results file's reproduce command): nested mappings as
    dotted keys (one of another ``kind`` whole), keys in ``skip`` (dotted) left out, keys
    ``data`` lacks ignored."""
    out: list[str] = []

    def raw(v: Any) -> str:
        if isinstance(v, str):
            try:
                if yaml.safe_load(v) == v:
                    return v
            except yaml.YAMLError:
                pass
        return json.dumps(v)

    def walk(a: Any, b: dict[str, Any], prefix: str) -> None:
        for k in sorted(b):
            key = f"{prefix}{k}"
            if key in skip:
                continue
            old = a.get(k) if isinstance(a, dict) else None
            # a tagged mapping of another kind (a backend) is replaced whole: its old keys
            # would not validate under the new kind
            if isinstance(b[k], dict) and isinstance(old, dict) and old.get("kind") == b[k].get(
                    "kind"):
                walk(old, b[k], key + ".")
            elif not (isinstance(a, dict) and k in a and old == b[k]):
                out.append(f"{key}={raw(b[k])}")

    walk(base, data, "")
    return out


def _walk(model: type[RecipeBase], loc: tuple[Any, ...]) -> tuple[list[str], Any]:
    """Follow an error location through the models; drop discriminator tags from the path."""
    node: Any = model
    shown: list[str] = []
    for part in loc:
        fields = getattr(node, "model_fields", None)
        if fields is not None and part in fields:
            shown.append(str(part))
            ann = fields[part].annotation
            members = [a for a in typing.get_args(ann) if hasattr(a, "model_fields")]
            node = ann if hasattr(ann, "model_fields") else (members or [None])
            continue
        if isinstance(node, list):  # a union: the part is its tag (a backend kind, say)
            match = [m for m in node if m is not None and m.model_fields.get("kind") and
                     m.model_fields["kind"].default == part]
            # an untagged union (task: a name or a TaskSpec) is tagged by the member's
            # schema, e.g. 'function-after[_files_given(), TaskSpec]'
            match = match or [m for m in node if m is not None and str(part).endswith(
                f"{m.__name__}]") or str(part) == getattr(m, "__name__", None)]
            node = match[0] if match else None
            continue
        if isinstance(part, str) and node is None and shown and part in ("str", "int"):
            continue  # the plain-scalar member of a union: not a key
        shown.append(str(part))
        node = None
    return shown, node


def _explain(err: ValidationError, model: type[RecipeBase], source: str) -> BbxError:
    errors = err.errors()
    # a mapping given for an untagged union (task: a name or a spec) fails the scalar member
    # too: that error says nothing the member's own errors do not
    deeper = [e for e in errors if not (len(e["loc"]) >= 2 and e["loc"][-1] in ("str", "int"))]
    errors = deeper or errors
    # an unknown key is the likeliest root cause: report it first
    first = next((e for e in errors if e["type"] == "extra_forbidden"), errors[0])
    shown, _ = _walk(model, tuple(first["loc"]))
    loc = ".".join(shown)
    more = f" (and {len(errors) - 1} more problems)" if len(errors) > 1 else ""
    if first["type"] == "extra_forbidden":
        _, parent = _walk(model, tuple(first["loc"][:-1]))
        fields = list(getattr(parent, "model_fields", {}))
        bad = str(first["loc"][-1])
        return BbxError(f"{source}: unknown key '{loc}'{did_you_mean(bad, fields)}{more}")
    msg = first["msg"].removeprefix("Value error, ")
    return BbxError(f"{source}: {loc or 'recipe'}: {msg}{more}")


def parse_recipe(data: dict[str, Any], source: str = "recipe") -> RecipeBase:
    """Validate a recipe mapping into its method's model."""
    model = recipe_model(data.get("method"))
    try:
        return model.model_validate(data)
    except ValidationError as e:
        raise _explain(e, model, source) from None


def load_recipe_data(path: str | Path, overrides: list[str] | None = None) -> dict[str, Any]:
    """Read, merge includes, apply ``--set`` overrides: the mapping, not yet validated."""
    return apply_overrides(_resolve_includes(Path(path)), overrides or [])


def load_recipe(path: str | Path, overrides: list[str] | None = None) -> RecipeBase:
    """Read, merge includes, apply ``--set`` overrides, validate."""
    return parse_recipe(load_recipe_data(path, overrides), source=f"recipe {path}")


def recipe_model(method: Any) -> type[RecipeBase]:
    """The recipe model of ``method`` (each method package exports ``Recipe``).

    The ``method:`` key is the discriminator; dispatching on it here, rather than through one
    big pydantic union, keeps each method's schema in its own folder and its errors short.
    """
    from blackbox.methods import METHODS

    if not isinstance(method, str):
        raise BbxError("recipe needs a 'method:' key (one of: " + ", ".join(METHODS.names()) + ")")
    if method not in METHODS:
        raise BbxError(f"unknown method '{method}'{did_you_mean(method, METHODS.names())}")
    return METHODS.get(method).Recipe
