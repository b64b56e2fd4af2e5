"""What ``method: eval`` will pay: one label-score query per distinct rendered example."""

from __future__ import annotations

from blackbox.backends.base import Backend
from blackbox.data import load_split
from blackbox.data.datasets import seeded_subset
from blackbox.data.tasks import render
from blackbox.methods.eval.recipe import EvalRecipe
from blackbox.methods.plan import Stage, distinct


def plan(recipe: EvalRecipe, backend: Backend) -> list[Stage]:
    """The stages of an eval run (:mod:`blackbox.methods.plan`): scoring the split."""
    task = recipe.get_task()
    template = recipe.template_text()
    examples = seeded_subset(load_split(task, recipe.split, recipe.shots, recipe.seed),
                             recipe.limit, recipe.test_seed)
    prompts = distinct([render(template, e.text, recipe.prompt, task.max_words)
                        for e in examples])
    return [Stage(f"score {recipe.split}", "label_logprobs", len(prompts), prompts,
                  task.label_words)]
