"""Each default lives in the recipe schema; the CLI commands and the api functions that
take the same option must agree with it (a default written twice drifts): an option either
defaults to "not given" (``None``: the schema's default applies) or to the schema's value."""

from __future__ import annotations

import inspect
from typing import Any

import pytest
import typer.main

from blackbox import api
from blackbox.cli.main import app
from blackbox.methods.claps.recipe import ClapsRecipe
from blackbox.methods.eval.recipe import EvalRecipe
from blackbox.methods.lmturk.recipe import LMTurkRecipe
from blackbox.methods.merge.recipe import MergeRecipe
from blackbox.methods.mpd.recipe import DecodeRecipe

COMMANDS = [("eval", EvalRecipe, api.evaluate_recipe),
            ("search-prompt", ClapsRecipe, api.search_prompt_recipe),
            ("distill", LMTurkRecipe, api.distill_recipe), ("merge", MergeRecipe, api.merge_recipe),
            ("decode fit", DecodeRecipe, api.decode_fit_recipe)]
FIELD = {"budget": "queries"}  # the commands' --budget is the recipe's train-side queries


def recipe_default(recipe: Any, option: str) -> Any:
    """The schema's default for ``option`` (a stage's evaluations, a backend's kind)."""
    field = recipe.model_fields[FIELD.get(option, option)]
    value = field.default if field.default_factory is None else field.default_factory()
    if hasattr(value, "evaluations"):
        return value.evaluations  # --stage1 / --stage2 set the stage's evaluations
    if hasattr(value, "kind"):
        return value.kind  # --backend names the backend's kind
    return value


def _command(name: str) -> Any:
    group = typer.main.get_command(app)
    for part in name.split():
        group = group.commands[part]  # type: ignore[attr-defined]
    return group


@pytest.mark.parametrize("name,recipe,fn", COMMANDS, ids=[c[0] for c in COMMANDS])
def test_cli_and_api_defaults_are_the_recipes(name: str, recipe: Any, fn: Any) -> None:
    shared = 0
    for p in _command(name).params:
        if FIELD.get(p.name, p.name) not in recipe.model_fields:
            continue  # not a recipe field
        shared += 1
        if p.default not in (None, ()):  # "not given": the recipe's default applies
            assert str(p.default) == str(recipe_default(recipe, p.name)), (name, p.name)
    for n, p in inspect.signature(fn).parameters.items():
        if FIELD.get(n, n) not in recipe.model_fields:
            continue
        shared += 1
        if p.default not in (None, inspect._empty):
            assert str(p.default) == str(recipe_default(recipe, n)), (fn.__name__, n)
    assert shared >= 6  # the comparison found the shared options
