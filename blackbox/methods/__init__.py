"""The methods. One folder each, same shape.

A method package exposes ``Recipe`` (its pydantic recipe model, a subclass of
:class:`blackbox.recipes.schema.RecipeBase` with ``method: Literal[<name>]``) and
``run(recipe, ctx) -> dict`` (the summary) and ``plan(recipe, backend) -> list[Stage]``
(what a run will pay, stage by stage, before it pays: :mod:`blackbox.methods.plan`).
Registering a method is one line below.
"""

from blackbox.registry import Registry

METHODS = Registry("method", "bbx.methods")
METHODS.register("eval", "blackbox.methods.eval")
METHODS.register("decode", "blackbox.methods.mpd")
METHODS.register("distill", "blackbox.methods.lmturk")
METHODS.register("merge", "blackbox.methods.merge")
METHODS.register("search-prompt", "blackbox.methods.claps")

__all__ = ["METHODS"]
