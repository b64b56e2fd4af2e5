"""Recipes: the YAML description of a run (pydantic schema + loader)."""

from blackbox.recipes.loader import load_recipe, parse_recipe
from blackbox.recipes.schema import Recipe

__all__ = ["Recipe", "load_recipe", "parse_recipe"]
