"""The recipe schema: pydantic models with ``extra="forbid"``, discriminated on ``method:``.

A recipe is data: no code runs from YAML. Each method package defines its own model (its
``Recipe``); the common fields (task, backend, budget, seed, where things go) live in
:class:`RecipeBase`.
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
    adapters: str | None = None  # a folder of PEFT LoRA adapters (enables adapter= mixtures);
    # "zoo": the one `bbx zoo build` made for this model


class FakeBackendConfig(Strict):
    """The deterministic fake backend (tests, dry runs)."""

    kind: Literal["fake"] = "fake"
    seed: int = 0
    bias: dict[str, dict[str, float]] = Field(default_factory=dict)
    adapter_bias: dict[str, dict[str, float]] = Field(default_factory=dict)
    dim: int = 16


class RemoteBackendConfig(Strict):
    """Any OpenAI-compatible server through the openai SDK (bbx serve, vLLM, llama.cpp, OpenAI).

    ``api_key_env`` is the NAME of the environment variable that holds the key, never the key.
    ``label_logprobs``: ``auto`` uses the bbx extension when the server has it, else
    next-token ``top_logprobs`` (see :mod:`blackbox.backends.remote`).
    """

    kind: Literal["remote"] = "remote"
    base_url: str | None = None  # default: $OPENAI_BASE_URL, else OpenAI's
    api_key_env: str = "OPENAI_API_KEY"
    model: str | None = None  # default: the server's first model
    max_concurrency: int = Field(8, ge=1, le=256)
    timeout: float = Field(60.0, gt=0)
    max_retries: int = Field(3, ge=0, le=20)
    label_logprobs: Literal["auto", "extension", "echo", "topk"] = "auto"
    top_logprobs: int = Field(20, ge=1, le=20)
    logit_bias: bool = True
    batch_size: int = Field(32, ge=1)

    @field_validator("api_key_env")
    @classmethod
    def _a_name_not_a_key(cls, v: str) -> str:
        import re

        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", v) or v.startswith("sk-"):
            raise ValueError("api_key_env names the environment variable that holds the key "
                             "(e.g. OPENAI_API_KEY), never the key itself")
        return v


BackendConfig = Annotated[LocalBackendConfig | FakeBackendConfig | RemoteBackendConfig,
                          Field(discriminator="kind")]


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


def recipe_model(method: Any) -> type[RecipeBase]:
    """The recipe model of ``method`` (each method package exports ``Recipe``).

    The ``method:`` key is the discriminator; dispatching on it here, rather than through one
    big pydantic union, keeps each method's schema in its own folder and its errors short.
    """
    from blackbox.methods import METHODS

    if not isinstance(method, str):
        raise BbxError("recipe needs a 'method:' key (one of: " + ", ".join(METHODS.names()) + ")")
    if method not in METHODS:
        raise BbxError(f"unknown method '{method}'{did_you_mean(method, METHODS.names())}")
    return METHODS.get(method).Recipe
