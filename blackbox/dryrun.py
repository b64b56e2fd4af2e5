"""``bbx run RECIPE --dry-run``: what a recipe (or a chain) will pay, before it pays.

Each method's ``plan`` (:mod:`blackbox.methods.plan`) lists its stages; they are projected
to queries, tokens and dollars at the backend's price. Nothing is paid: no verb is called,
no run directory is made, the cache is not read (the projection is that of an empty
cache: a warm one pays less).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from blackbox.backends.abilities import check_needs
from blackbox.backends.metered import MISSING_PRICE
from blackbox.backends.pricing import config_pricing
from blackbox.errors import BbxError
from blackbox.methods import METHODS
from blackbox.methods.plan import project, total


def dry_run(recipe: Any, overrides: list[str] | None = None,
            backend: Any = None) -> dict[str, Any]:
    """The projection of a recipe (a path, a mapping or a validated recipe): per step (one
    for a plain recipe) its stages and total, and the grand total. ``backend`` replaces the
    recipe's (tests); it is left open."""
    from blackbox.chains import _outputs, _substitute, is_chain, step_recipes
    from blackbox.recipes import parse_recipe
    from blackbox.recipes.loader import load_recipe_data

    if isinstance(recipe, (str, Path)):
        data = load_recipe_data(recipe, overrides)
    elif isinstance(recipe, dict):
        data = recipe
    else:
        data = recipe.model_dump(mode="json")
    if is_chain(data):
        parsed: list[tuple[str, Any]] = []
        methods: dict[str, str] = {}
        for step in step_recipes(data):
            # an earlier step's output is not known yet: its placeholder stands in
            fill = _substitute(step, lambda r: _outputs(methods[r["from"]])[r["output"]][1])
            one = parse_recipe(fill, source=f"step '{step['name']}'")
            methods[step["name"]] = one.method  # type: ignore[attr-defined]
            parsed.append((step["name"], one))
        budget = dict(data.get("budget") or {})
    else:
        one = parse_recipe(data)
        parsed = [(one.name or one.method, one)]  # type: ignore[attr-defined]
        budget = one.budget.model_dump()
    steps = [_project_step(name, r, backend) for name, r in parsed]
    grand = total([s["total"] for s in steps])
    return {"steps": steps, "total": grand, "budget": {k: v for k, v in budget.items()
                                                      if v is not None}}


def _project_step(name: str, recipe: Any, backend: Any) -> dict[str, Any]:
    from blackbox.api import make_backend

    pricing, note = config_pricing(recipe.backend)
    if recipe.budget.max_usd is not None and pricing is None:
        raise BbxError(MISSING_PRICE)
    inner = backend if backend is not None else _offline(recipe.backend, make_backend)
    refused = None
    try:
        # the run checks the backend's abilities before it pays: say so here too, where the
        # backend can tell without a call (a remote one would ask its server)
        if recipe.backend.kind != "remote":
            try:
                check_needs(recipe.method, recipe.abilities_needed(), inner)
            except BbxError as e:
                refused = f"the run would be refused: {e}"
        try:
            stages = METHODS.get(recipe.method).plan(recipe, inner)
        except (BbxError, OSError) as e:  # e.g. a decoder file an earlier step will write
            return {"step": name, "method": recipe.method, "stages": [],
                    "total": total([]) | {"usd": 0.0 if pricing else None},
                    "note": f"not projected: {e}"}
        rows = project(stages, inner, pricing)
    finally:
        if backend is None:
            inner.close()
    out = {"step": name, "method": recipe.method, "stages": rows, "total": total(rows)}
    if refused:
        out["note"] = refused
    if note:
        out["pricing"] = note
    elif pricing is None:
        out["pricing"] = "no price: give backend.pricing to see dollars"
    return out


def _offline(config: Any, make_backend: Any) -> Any:
    """The recipe's backend for projecting only: a remote one needs no API key here (no
    verb is called; a plan that asks the server what it is copes with a refusal)."""
    import os

    if config.kind == "remote" and not config.base_url and not os.environ.get(
            config.api_key_env) and not os.environ.get("OPENAI_BASE_URL"):
        config = config.model_copy(update={"base_url": "https://api.openai.com/v1"})
    return make_backend(config)
