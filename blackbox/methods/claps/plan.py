"""What ``method: search-prompt`` will pay, stage by stage (see :mod:`.method`).

Counts are those of the recipe on an empty cache: clustering embeds the candidates where
the backend has no embedding table to read; pruning scores every clustered token (and the
empty prompt) on the train batch; the search spends what ``queries`` leaves after pruning
(an upper bound: a proposal the search already scored is a cache hit, and a space of
``m`` kept tokens spells at most ``m ** length`` prompts); selection scores
``select_top`` prompts on dev; the test scores the winner. The search's prompts are not
known before it runs: ``length`` tokens drawn from the candidates stand for them.
"""

from __future__ import annotations

import numpy as np

from blackbox.backends.abilities import has
from blackbox.backends.base import Backend
from blackbox.data import load_split
from blackbox.data.datasets import seeded_subset
from blackbox.data.tasks import render
from blackbox.errors import BbxError
from blackbox.methods.claps.prune import n_kept
from blackbox.methods.claps.recipe import ClapsRecipe
from blackbox.methods.claps.reward import balanced_subset
from blackbox.methods.claps.vocab import candidate_vocabulary, prompt_text
from blackbox.methods.claps.words import WORDS
from blackbox.methods.plan import Stage
from blackbox.runs import child_rng

SAMPLED_PROMPTS = 64  # stand-in prompts for the search stage


def plan(recipe: ClapsRecipe, backend: Backend) -> list[Stage]:
    """The stages of a search-prompt run (:mod:`blackbox.methods.plan`)."""
    task = recipe.get_task()
    template, words = recipe.template_text(), task.label_words
    train = balanced_subset(load_split(task, "train", recipe.shots, recipe.seed),
                            recipe.train_batch, child_rng(recipe.seed, "train-batch"),
                            task.n_classes)
    dev = load_split(task, "dev", recipe.shots, recipe.seed)
    test = seeded_subset(load_split(task, "test", recipe.shots, recipe.seed),
                         recipe.test_limit, recipe.test_seed)
    n = len(train)

    def rendered(prompts: list[str], examples: list) -> list[str]:
        return [render(template, e.text, p, task.max_words) for p in prompts for e in examples]

    def stage(name: str, queries: int, texts: list[str], note: str = "") -> Stage:
        return Stage(name, "label_logprobs", queries, texts, words, note=note)

    tail = [stage("test", len(test), rendered([""], test))]
    if recipe.search == "manual":
        return [stage("train", n, rendered([""], train)),
                stage("dev", len(dev), rendered([""], dev)), *tail]
    try:
        vocab = candidate_vocabulary(recipe.vocab, backend)
    except BbxError:  # a server that cannot say (unreachable): the built-in words
        vocab = candidate_vocabulary(list(WORDS), backend)
    stages: list[Stage] = []
    clustered = list(vocab.texts)
    if recipe.clusters and recipe.clusters < len(vocab):
        # the backend's own embedding table (its token_embeddings ability) costs no query
        reads_table = (vocab.ids is not None and has(backend, "token_embeddings")
                       and recipe.embeddings != "embed")
        if not reads_table:
            stages.append(Stage("clustering", "embed", len(vocab),
                                [t.strip() for t in vocab.texts]))
        pick = child_rng(recipe.cluster_seed, "plan-clusters").choice(
            len(vocab), recipe.clusters, replace=False)
        clustered = [vocab.texts[i] for i in np.sort(pick)]  # the size k-means keeps
    pruning = 0
    if recipe.prune == "influence":
        pruning = (len(clustered) + 1) * n
        tokens = [""] + [t.strip() for t in clustered]
        if pruning > recipe.queries:  # what the run checks before paying anything
            raise BbxError(f"pruning {len(clustered)} tokens on {n} train examples needs "
                           f"{pruning} queries but queries={recipe.queries}: raise queries, "
                           "or lower clusters or train_batch")
        stages.append(stage("pruning", pruning, rendered(tokens[:SAMPLED_PROMPTS], train)))
    trials = max(0, (recipe.queries - pruning) // n)
    # a space of m choices per position spells at most m ** length distinct prompts
    kept = len(clustered) if recipe.prune == "none" else max(1, n_kept(len(clustered),
                                                                        recipe.percentile))
    choices = kept + (recipe.search == "greedy")  # greedy's "no token"
    if choices ** min(recipe.length, 12) < trials:
        trials = choices ** recipe.length
    rng = child_rng(recipe.seed, "plan-prompts")
    sample = [prompt_text([clustered[i] for i in rng.integers(len(clustered),
                                                              size=recipe.length)])
              for _ in range(SAMPLED_PROMPTS)]
    stages.append(stage("search", trials * n, rendered(sample, train),
                        "at most: proposals scored before are cache hits"))
    stages.append(stage("dev", recipe.select_top * len(dev),
                        rendered(sample[:recipe.select_top], dev)))
    return [*stages, *tail]
