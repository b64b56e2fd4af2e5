"""The methods. One folder each, same shape: ``method.py`` exposes ``run(recipe, ctx) -> dict``."""

from blackbox.registry import Registry

METHODS = Registry("method", "bbx.methods")
METHODS.register("eval", "blackbox.methods.eval.method:run")

__all__ = ["METHODS"]
