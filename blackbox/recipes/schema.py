"""The recipe schema: pydantic models with ``extra="forbid"``, discriminated on ``method:``.

A recipe is data: no code runs from YAML. Each method adds its own model to
:data:`RECIPE_TYPES`; the common fields (task, backend, budget, seed, where things go) live
in :class:`RecipeBase`.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from blackbox.data.tasks import TASKS, Task
from blackbox.errors import BbxError, did_you_mean


class Strict(BaseModel):
    """Base for every recipe model: unknown keys are errors, not silently ignored."""

    model_config = ConfigDict(extra="forbid")


class TaskSpec(Strict):
    """A user-defined task over their own CSV/TSV/JSONL file (columns ``text``, ``label``)."""

    name: str
    path: str
    labels: list[str]
    label_words: list[str]
    templates: list[str] = Field(default_factory=lambda: ["{prompt}{text}\nLabel:"])
    max_words: int | None = None

    def to_task(self) -> Task:
        return Task(name=self.name, labels=tuple(self.labels), label_words=tuple(self.label_words),
                    templates=tuple(self.templates), source="file", path=self.path,
                    max_words=self.max_words)


class LocalBackendConfig(Strict):
    """The in-process engine over a local model (``default`` = bundled SmolLM2-135M)."""

    kind: Literal["local"] = "local"
    model: str = "default"
    device: str = "auto"
    dtype: str = "auto"
    batch_size: int = Field(32, ge=1)


class FakeBackendConfig(Strict):
    """The deterministic fake backend (tests, dry runs)."""

    kind: Literal["fake"] = "fake"
    seed: int = 0
    bias: dict[str, dict[str, float]] = Field(default_factory=dict)
    adapter_bias: dict[str, dict[str, float]] = Field(default_factory=dict)
    dim: int = 16


BackendConfig = Annotated[LocalBackendConfig | FakeBackendConfig, Field(discriminator="kind")]


class BudgetConfig(Strict):
    """What the run may pay for; cached answers are free."""

    max_queries: int | None = Field(None, ge=0)
    max_tokens: int | None = Field(None, ge=0)


class RecipeBase(Strict):
    """Fields every method shares."""

    name: str | None = None
    seed: int = 42
    task: str | TaskSpec = "sst-2"
    shots: int = Field(16, ge=1)
    backend: BackendConfig = Field(default_factory=LocalBackendConfig)
    budget: BudgetConfig = Field(default_factory=BudgetConfig)
    cache_dir: str | None = None  # default: <BBX_CACHE_DIR or user cache>/responses
    output_dir: str = "results/runs"

    @field_validator("task")
    @classmethod
    def _known_task(cls, v: str | TaskSpec) -> str | TaskSpec:
        if isinstance(v, str) and v not in TASKS:
            raise ValueError(f"unknown task '{v}'{did_you_mean(v, list(TASKS))}")
        return v

    def get_task(self) -> Task:
        """The resolved :class:`Task`."""
        if isinstance(self.task, TaskSpec):
            return self.task.to_task()
        return TASKS[self.task]

    @property
    def task_name(self) -> str:
        return self.task.name if isinstance(self.task, TaskSpec) else self.task


class EvalRecipe(RecipeBase):
    """Accuracy of a template (+ optional prompt) on a split: every method's baseline."""

    method: Literal["eval"] = "eval"
    split: Literal["train", "dev", "test"] = "test"
    template: int | str = 0  # index into the task's templates, or a template string
    prompt: str = ""
    limit: int | None = Field(None, ge=1)  # evaluate a seeded subset of this size
    chunk: int = Field(256, ge=1)  # prompts per metered call (progress + budget granularity)

    def template_text(self) -> str:
        task = self.get_task()
        if isinstance(self.template, int):
            if not 0 <= self.template < len(task.templates):
                raise BbxError(
                    f"template index {self.template} out of range: task '{task.name}' has "
                    f"{len(task.templates)} templates (0..{len(task.templates) - 1})"
                )
            return task.templates[self.template]
        if "{text}" not in self.template:
            raise BbxError("template string needs a {text} placeholder")
        return self.template


# Methods register their recipe models here (discriminated on `method`).
RECIPE_TYPES: dict[str, type[RecipeBase]] = {"eval": EvalRecipe}

Recipe = EvalRecipe


def recipe_model(method: Any) -> type[RecipeBase]:
    """The recipe model for ``method``; unknown methods are a user error."""
    if not isinstance(method, str):
        raise BbxError("recipe needs a 'method:' key (one of: " + ", ".join(RECIPE_TYPES) + ")")
    if method not in RECIPE_TYPES:
        raise BbxError(f"unknown method '{method}'{did_you_mean(method, list(RECIPE_TYPES))}")
    return RECIPE_TYPES[method]
