"""``method: search-prompt`` — ClaPS black-box prompt search (Zhou et al., Findings of EMNLP
2023): cluster the vocabulary, prune it to influential tokens, search a short prompt."""

from blackbox.methods.claps.method import run
from blackbox.methods.claps.plan import plan
from blackbox.methods.claps.recipe import ClapsRecipe as Recipe

__all__ = ["Recipe", "plan", "run"]
