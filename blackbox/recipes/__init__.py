"""Recipes: the YAML description of a run (pydantic schema + loader)."""

from blackbox.recipes.loader import load_recipe, parse_recipe
from blackbox.recipes.schema import RecipeBase

__all__ = ["RecipeBase", "load_recipe", "parse_recipe"]
