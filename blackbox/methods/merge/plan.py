"""What ``method: merge`` will pay, stage by stage (see :mod:`.method`).

Each evaluation scores one mixture on every user example (one label-score query each);
the stages' ``evaluations`` are the most the search spends (a mixture scored before is a
cache hit, and stage 2 does not run when stage 1 stops on the budget). ``best-single``
scores each adapter once; ``base``, ``uniform``, ``ties`` and ``dare`` search nothing.
Then the chosen adapter is scored on the test examples.
"""

from __future__ import annotations

from blackbox.backends.base import Backend
from blackbox.methods.merge.method import available_adapters
from blackbox.methods.merge.objective import prompts_of, split_user_and_test
from blackbox.methods.merge.recipe import MergeRecipe
from blackbox.methods.plan import Stage


def plan(recipe: MergeRecipe, backend: Backend) -> list[Stage]:
    """The stages of a merge run (:mod:`blackbox.methods.plan`)."""
    task = recipe.get_task()
    words = task.label_words
    user, test = split_user_and_test(task, recipe.user_examples, recipe.test_limit,
                                     recipe.seed, recipe.test_seed, user_seeds=recipe.user_seeds)
    prompts = prompts_of(task, recipe.template, user)
    v, n = recipe.variant, len(user)
    searched: list[tuple[str, int]] = []
    if v in ("evo", "evo-no-sign", "evo-no-scale"):  # as method._search runs them
        searched.append(("stage 1 (alpha)", recipe.stage1.evaluations))
    if v in ("evo", "evo-no-sign", "evo-no-denoise"):
        searched.append(("stage 2 (beta)", recipe.stage2.evaluations))
    if v == "lorahub":
        searched.append(("lorahub", recipe.lorahub.evaluations))
    elif v == "best-single":
        names = recipe.adapters or available_adapters(backend)
        searched.append(("best single adapter", len(names)))
    stages = [Stage(name, "label_logprobs", evals * n, prompts, words,
                    note="at most: mixtures scored before are cache hits")
              for name, evals in searched]
    stages.append(Stage("test", "label_logprobs", len(test),
                        prompts_of(task, recipe.template, test), words))
    return stages
