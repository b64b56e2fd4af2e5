"""``method: merge`` — Evo-Merging (Chen et al. 2025): black-box merging over a server-side
repository of LoRA adapters, with LoraHub, TIES/DARE and the paper's ablations.

Library use: :func:`blackbox.api.merge`, or the pieces here:
:class:`~blackbox.methods.merge.objective.MixtureLoss` (a population in one call),
:func:`~blackbox.methods.merge.zoo.build_zoo` (the adapter repository),
:func:`~blackbox.methods.merge.whitebox.materialize` (a mixture as a PEFT adapter).
"""

from blackbox.methods.merge.method import run
from blackbox.methods.merge.plan import plan
from blackbox.methods.merge.recipe import MergeRecipe as Recipe

__all__ = ["Recipe", "plan", "run"]
