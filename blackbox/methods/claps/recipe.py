"""The ``method: search-prompt`` recipe (ClaPS and its baselines)."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from blackbox.backends.abilities import Need
from blackbox.errors import BbxError
from blackbox.recipes.schema import RecipeBase

# Searchers ClaPS names; any other registered optimizer (random, ng:<Name>, ...) works too.
SEARCHES: tuple[str, ...] = ("greedy", "genetic", "pso", "random", "manual")


class ClapsRecipe(RecipeBase):
    """Search a short discrete prompt: cluster the vocabulary, prune it, search (ClaPS).

    The baselines are the same command with other settings:

    * ``search: manual`` — the template with no prompt;
    * ``clusters: 0, prune: none, search: random`` — random search over the full candidate
      vocabulary;
    * ``prune: random`` — a random subset of the clustered vocabulary, the size ClaPS keeps;
    * ``clusters: 0`` (with ``prune: influence``) — ClaPS without clustering.

    ``queries`` is the budget of *train-split* queries (one prompt scored on one example is
    one query, cached or not, so results never depend on what the cache held): pruning plus
    search. ``budget.max_queries`` stays the hard cap on *paid* calls of any kind (dev and
    test scoring included).
    """

    method: Literal["search-prompt"] = "search-prompt"
    score_losses: ClassVar[dict[str, str]] = {
        "topk": ("label words outside the server's top-k get a floor where logit_bias cannot "
                 "recover them: the reward (label-word cross-entropy) is coarser for prompts that "
                 "push a word out of the top-k"),
        "generate": ("scores are one-hot replies (or sample frequencies): pruning and the search "
                     "see accuracy steps, not log-prob margins, so many prompts tie"),
    }
    template: int | str = Field(0, description="Template index, or a template with {text} "
                                "(and {prompt}).")
    # -- the candidate vocabulary and clustering
    vocab: str | list[str] | None = Field(None, description="Candidate words: a list or a "
                                          "file (None: the backend's tokenizer, else "
                                          "built-in words).")
    embeddings: Literal["auto", "input", "embed"] = Field(
        "auto", description="What the clusters are computed on: auto | input (the "
        "token-embedding table) | embed (the embeddings route).")
    clusters: int = Field(2000, ge=0, description="k-means clusters over the vocabulary (0: no "
                          "clustering).")
    cluster_seed: int = Field(0, ge=0, description="Seed of the clustering, fixed apart from "
                              "seed so every seed shares one vocabulary.")
    # -- pruning
    prune: Literal["influence", "random", "none"] = Field(
        "influence", description="influence (ClaPS) | random (baseline) | none.")
    prune_score: Literal["reward", "kl"] = Field("reward", description="What influence is "
                                                 "measured by: reward | kl.")
    percentile: float = Field(90.0, ge=0, lt=100, description="Keep tokens whose influence is "
                              "above this percentile.")
    # -- search
    search: str = Field("genetic", description="greedy | genetic | pso | random | manual (no "
                        "prompt) | any optimizer (ng:<Name>, bbx ls optimizers).")
    population: int | None = Field(None, ge=1, description="Population of genetic / pso "
                                   "(None: the paper's 128).")
    search_options: dict[str, Any] = Field(default_factory=dict, description="Other options "
                                           "of the searcher.")
    length: int = Field(5, ge=1, le=64, description="Prompt length in tokens.")
    queries: int = Field(20000, ge=1, description="Train queries for pruning + search (one "
                         "prompt on one example; cached or not).")
    batch_size: int | None = Field(None, ge=1, description="Prompts per objective call (None: "
                                   "the searcher's natural batch).")
    train_batch: int | None = Field(None, ge=1, description="Train examples each prompt is "
                                    "scored on (None: the whole split).")
    # -- selection and evaluation
    select_top: int = Field(5, ge=1, description="Best distinct train prompts re-scored on "
                            "dev.")
    test_limit: int | None = Field(None, ge=1, description="Score the winner on a fixed seeded "
                                   "test subset of N (None: the whole test split).")
    chunk: int = Field(256, ge=1, description="Inputs per metered call when pruning and "
                       "evaluating.")

    @field_validator("search")
    @classmethod
    def _known_search(cls, v: str) -> str:
        from blackbox.errors import did_you_mean
        from blackbox.optim.registry import OPTIMIZERS, optimizer_names

        family = v.partition(":")[0]
        if v == "manual" or family in OPTIMIZERS:
            return v
        names = sorted(set(SEARCHES) | set(optimizer_names()))
        raise ValueError(f"unknown search '{v}'{did_you_mean(v, names)}; see bbx ls "
                         "optimizers")

    @field_validator("vocab")
    @classmethod
    def _vocab_not_empty(cls, v: str | list[str] | None) -> str | list[str] | None:
        if isinstance(v, list) and not v:
            raise ValueError("vocab is an empty list: give candidate words, a file, or leave "
                             "it out to use the backend's tokenizer")
        return v

    @model_validator(mode="after")
    def _check(self) -> ClapsRecipe:
        if isinstance(self.template, int):
            n = len(self.get_task().templates)
            if not 0 <= self.template < n:
                raise ValueError(f"template index {self.template} out of range: task "
                                 f"'{self.task_name}' has {n} templates (0..{n - 1})")
        elif "{text}" not in self.template:
            raise ValueError("template string needs a {text} placeholder")
        try:
            self.check_search()
        except BbxError as e:  # reported like any other invalid recipe field
            raise ValueError(str(e)) from None
        return self

    def abilities_needed(self) -> list[Need]:
        """Input-embedding clusters read the token-embedding table at tokenizer ids."""
        needs = super().abilities_needed()
        if self.embeddings == "input" and self.clusters:
            why = "embeddings: input clusters tokenizer candidates by their embedding rows"
            fallback = "use embeddings: embed (or auto), which asks the embeddings route"
            needs += [Need("vocabulary", f"token ids: {why}", fallback),
                      Need("token_embeddings", why, fallback)]
        return needs

    def template_text(self) -> str:
        """The template string (``{prompt}`` marks where the searched prompt goes)."""
        if isinstance(self.template, int):
            return self.get_task().templates[self.template]
        return self.template

    def searcher_options(self) -> dict[str, Any]:
        """``search_options`` plus ``population`` where the searcher takes one (so one
        recipe serves greedy and genetic alike)."""
        import inspect

        from blackbox.optim import OPTIMIZERS

        options = dict(self.search_options)
        if self.population is not None and self.search != "manual":
            factory = OPTIMIZERS.get(self.search.partition(":")[0])
            if "population" in inspect.signature(factory).parameters:
                options.setdefault("population", self.population)
        return options

    def check_search(self, n_choices: int = 2) -> None:
        """Build the searcher once on a toy space, so that a bad name or option fails at
        validation, before any run directory or query (this loads nevergrad only for an
        ``ng:`` name)."""
        if self.search == "manual":
            return
        from blackbox.optim import DiscreteSpace, make_optimizer

        options = self.searcher_options()
        if self.search == "greedy":
            options.setdefault("blank", n_choices - 1)
        try:
            make_optimizer(self.search, DiscreteSpace(self.length, max(2, n_choices)), seed=0,
                           batch_size=1, **options)
        except TypeError as e:  # a wrong option type reaching the optimizer
            raise BbxError(f"search_options for '{self.search}': {e}") from None
