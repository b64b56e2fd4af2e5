"""The ``method: merge`` recipe: Evo-Merging over a server-side adapter repository, its
ablations and its baselines, one ``variant`` per run."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field, model_validator

from blackbox.backends.abilities import Need
from blackbox.recipes.schema import LocalBackendConfig, RecipeBase, Strict

#: What a run does. ``evo`` is the full method (stage 1 on α, stage 2 on β); the ablations
#: drop a piece of it; the rest are baselines (``ties``/``dare`` are white-box references:
#: they read the adapters' weights, so they need a backend holding the repository).
Variant = Literal["evo", "evo-no-sign", "evo-no-denoise", "evo-no-scale", "lorahub",
                  "uniform", "best-single", "base", "ties", "dare"]
VARIANTS: tuple[str, ...] = Variant.__args__  # type: ignore[attr-defined]


class StageConfig(Strict):
    """One search stage: the optimizer (any of ``bbx ls optimizers``) and its budget.

    ``evaluations`` counts mixtures scored (each on every user example); ``popsize`` mixtures
    are scored per backend call. ``options`` go to the optimizer (e.g. cma_options).
    """

    optimizer: str = Field("cma", description="Stage optimizer (bbx ls optimizers).")
    evaluations: int = Field(400, ge=1, description="Mixtures scored (each on every user "
                             "example).")
    popsize: int = Field(20, ge=1, description="Mixtures per batched call.")
    sigma0: float = Field(0.05, gt=0, description="The optimizer's initial step size.")
    options: dict[str, Any] = Field(default_factory=dict, description="Other options of the "
                                    "optimizer (e.g. cma_options).")


def _stage1() -> StageConfig:
    return StageConfig(evaluations=400)


def _stage2() -> StageConfig:
    return StageConfig(evaluations=800)


def _lorahub() -> StageConfig:
    # LoraHub (Huang et al. 2023): nevergrad NGOpt, 40 sequential steps, weights from 0
    return StageConfig(optimizer="ng:NGOpt", evaluations=40, popsize=1)


class MergeRecipe(RecipeBase):
    """Find per-adapter keep-fractions α and signed scales β over the server's adapters.

    The user's data is ``user_examples`` examples drawn (with the recipe seed, stratified:
    spread evenly over the classes) from the target task's train and dev splits; the test
    split (or its ``test_limit`` subset, the same for every seed) is scored. Stage 2 is kept
    only if its best mixture fits the user's examples better than stage 1's. The loss is
    the mean cross-entropy of the gold label word (log-probs normalized over the task's
    label words) plus ``l1`` · mean|x| of the searched vector. The official defaults
    (paper: 300 examples, 400 + 800 evaluations) are the stage defaults here; the results
    scripts scale them down for a CPU.
    """

    method: Literal["merge"] = "merge"
    score_losses: ClassVar[dict[str, str]] = {
        "topk": ("label words outside the server's top-k get a floor where logit_bias cannot "
                 "recover them: the user-example loss CMA-ES ranks mixtures by is coarser"),
        "generate": ("the user-example loss is computed from one-hot replies: mixtures are ranked "
                     "by accuracy on the examples only"),
    }
    variant: Variant = Field("evo", description="evo | evo-no-sign | evo-no-denoise | "
                             "evo-no-scale | lorahub | uniform | best-single | base | ties | "
                             "dare.")
    adapters: list[str] | None = Field(None, description="The adapters to merge (None: every "
                                       "adapter the backend's repository holds).")
    template: int = Field(0, ge=0, description="Which of the task's templates the user's "
                          "prompts use.")
    user_examples: int = Field(64, ge=1, description="The user's labelled examples "
                               "(stratified, from train + dev).")
    user_seeds: list[int] | None = Field(None, description="Draw the user examples from "
                                         "the k-shot train/dev files of these seeds (None: "
                                         "the recipe seed's), for more examples than one "
                                         "seed's files hold.")
    test_limit: int | None = Field(None, ge=1, description="Score a seeded test subset of N "
                                   "(None: the whole test split).")
    l1: float = Field(0.05, ge=0, description="Weight of the mean |x| penalty on the searched "
                      "vector.")
    stage1: StageConfig = Field(default_factory=_stage1, description="Stage 1 searches α, β "
                                "fixed at 1/N.")
    stage2: StageConfig = Field(default_factory=_stage2, description="Stage 2 searches β, α "
                                "at the stage-1 best.")
    lorahub: StageConfig = Field(default_factory=_lorahub, description="The lorahub "
                                 "variant's search.")
    beta_bound: float = Field(1.5, gt=0, description="β in [-bound, bound] ([0, bound] "
                              "without sign).")
    density: float = Field(0.5, gt=0, le=1, description="ties / dare: the fraction of weights "
                           "kept.")
    materialize: bool = Field(False, description="Also save the best mixture as a PEFT adapter "
                              "(in the run directory).")
    chunk: int = Field(256, ge=1, description="Test examples per metered request.")

    @model_validator(mode="before")
    @classmethod
    def _partial_stages(cls, data: Any) -> Any:
        """A stage given in part keeps that stage's defaults for the rest (``stage2:
        {popsize: 10}`` still runs 800 evaluations, ``lorahub: {evaluations: 20}`` still uses
        NGOpt), not the generic :class:`StageConfig`'s."""
        if not isinstance(data, dict):
            return data
        out = dict(data)
        for name in ("stage1", "stage2", "lorahub"):
            given = out.get(name)
            factory = cls.model_fields[name].default_factory
            if isinstance(given, dict) and factory is not None:
                out[name] = {**factory().model_dump(), **given}  # type: ignore[call-arg]
        return out

    @model_validator(mode="after")
    def _zoo_by_default(self) -> MergeRecipe:
        """On the local backend a merge without an adapter folder merges the zoo ``bbx zoo
        build`` made for its model."""
        if isinstance(self.backend, LocalBackendConfig) and self.backend.adapters is None:
            self.backend = self.backend.model_copy(update={"adapters": "zoo"})
        return self

    @model_validator(mode="after")
    def _check(self) -> MergeRecipe:
        if self.adapters is not None:
            if not self.adapters:
                raise ValueError("adapters is empty: name at least one, or leave it unset to "
                                 "use every adapter the server holds")
            if len(set(self.adapters)) != len(self.adapters):
                raise ValueError("adapters lists a name twice")
        for name in ("stage1", "stage2"):
            st: StageConfig = getattr(self, name)
            if st.optimizer == "cma" and st.popsize < 2:
                raise ValueError(f"{name}.popsize must be >= 2 for cma")
        return self

    def abilities_needed(self) -> list[Need]:
        """Mixtures need the adapter ability; TIES/DARE and saving a mixture need more."""
        needs = super().abilities_needed()
        served = "use backend: {kind: local, adapters: DIR} or a bbx serve --adapters DIR server"
        if self.variant != "base" or not self.adapters:  # base with named adapters lists none
            needs.append(Need("adapters", "the adapters it merges", served))
        if self.variant in ("ties", "dare"):
            local = ("run it with backend: {kind: local, adapters: DIR}; through a remote "
                     "backend only black-box variants work")
            needs += [Need("repository", f"{self.variant} reads the adapters' weights, "
                           "white-box", local),
                      Need("engine", f"{self.variant} loads the base model's files", local)]
        if self.materialize and self.variant not in ("base", "best-single", "ties", "dare"):
            needs.append(Need(("materialize", "repository"), "materialize: true saves the "
                              "mixture as a PEFT adapter", "set materialize: false (mixture.json "
                              "still names the mixture)"))
        return needs
