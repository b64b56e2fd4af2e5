"""``method: distill`` — LMTurk: few-shot LLM workers, active learning, a distilled student.

Zhao et al. 2022, "LMTurk: Few-Shot Learners as Crowdsourcing Workers in a
Language-Model-as-a-Service Framework". See README.md here for what is the paper's and what
is bbx's own.
"""

from blackbox.methods.lmturk.method import run
from blackbox.methods.lmturk.plan import plan
from blackbox.methods.lmturk.recipe import LMTurkRecipe as Recipe

__all__ = ["Recipe", "plan", "run"]
