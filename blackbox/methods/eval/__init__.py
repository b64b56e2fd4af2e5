"""``method: eval`` — accuracy of a template (+ prompt) on a split."""

from blackbox.methods.eval.method import run
from blackbox.methods.eval.plan import plan
from blackbox.methods.eval.recipe import EvalRecipe as Recipe

__all__ = ["Recipe", "plan", "run"]
