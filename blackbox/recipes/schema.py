"""The recipe schema: pydantic models with ``extra="forbid"``, discriminated on ``method:``.

A recipe is data: no code runs from YAML. Each method package defines its own model (its
``Recipe``); the common fields (task, backend, budget, seed, where things go) live in
:class:`RecipeBase`.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    PrivateAttr,
    Tag,
    field_validator,
    model_validator,
)

from blackbox.backends.abilities import LABEL_SCORES, Need
from blackbox.data.tasks import TASKS, Task
from blackbox.errors import did_you_mean


class Strict(BaseModel):
    """Base for every recipe model: unknown keys are errors, not silently ignored."""

    model_config = ConfigDict(extra="forbid")


class TaskSpec(Strict):
    """Your own task, from files (CSV, TSV, JSONL: a ``text`` or ``sentence`` column and a
    ``label`` column; see :mod:`blackbox.data.files`).

    Give ``train`` and ``test`` (and ``dev``: without it, a seeded ``dev_fraction`` of each
    train class is the dev set, and the run's notes say so), or one all-data file as ``path``
    (a fixed 20% of each class is then the test set, and train/dev are ``shots``-per-class
    draws from the rest). ``labels`` default to the class names found in the files (sorted);
    ``label_words`` to a space and the class name. A label word without a leading space gets
    one: it is read as the next word after the template.
    """

    name: str = "own-task"
    train: str | None = None
    dev: str | None = None
    test: str | None = None
    pool: str | None = None  # unlabelled texts (bbx distill)
    path: str | None = None  # one file holding everything
    labels: list[str] | None = None
    label_words: list[str] | None = None
    templates: list[str] = Field(default_factory=lambda: ["{prompt}{text}\nLabel:"])
    max_words: int | None = Field(None, ge=1)
    dev_fraction: float = Field(0.25, gt=0, lt=1)

    @model_validator(mode="after")
    def _files_given(self) -> TaskSpec:
        split_files = [self.train, self.dev, self.test, self.pool]
        if self.path is not None and any(f is not None for f in split_files):
            raise ValueError("give either path (one file) or train/dev/test files, not both")
        if self.path is None and self.train is None and self.test is None:
            raise ValueError("give the task's data: train and test files (dev optional), or "
                             "one all-data file as path")
        if self.dev is not None and self.train is None:
            raise ValueError("a dev file needs a train file beside it")
        return self

    def files(self) -> dict[str, str]:
        """Split name -> file for the files given."""
        return {k: v for k, v in (("train", self.train), ("dev", self.dev),
                                  ("test", self.test), ("pool", self.pool)) if v is not None}

    def to_task(self) -> Task:
        """The :class:`Task` (class names read from the files when ``labels`` is not given)."""
        from blackbox.data.files import infer_labels, read_table

        labels = self.labels
        if labels is None:
            paths = [self.path] if self.path else [self.files()[k] for k in ("train", "dev",
                                                                            "test")
                                                   if k in self.files()]
            labels = list(infer_labels([read_table(p, need_labels=False) for p in paths]))
        words = self.label_words or [lab for lab in labels]
        words = [w if w[:1].isspace() else f" {w}" for w in words]
        return Task(name=self.name, labels=tuple(labels), label_words=tuple(words),
                    templates=tuple(self.templates), source="file" if self.path else "files",
                    path=self.path, max_words=self.max_words, files=self.files(),
                    dev_fraction=self.dev_fraction,
                    description=f"own data ({', '.join(self.files()) or 'one file'})")


class PricingConfig(Strict):
    """The backend's price in US dollars per million tokens: prompt (input) and completion
    (output). Without it a remote model in bbx's example table is priced from there
    (:data:`blackbox.backends.pricing.EXAMPLE_PRICES`, dated); ``budget.max_usd`` needs one.
    """

    input_per_mtok: float = Field(ge=0)
    output_per_mtok: float = Field(ge=0)


class LocalBackendConfig(Strict):
    """The in-process engine over a local model (``default`` = bundled SmolLM2-135M)."""

    kind: Literal["local"] = "local"
    model: str = "default"
    device: str = "auto"
    dtype: str = "auto"
    batch_size: int = Field(32, ge=1)
    adapters: str | None = None  # a folder of PEFT LoRA adapters (enables adapter= mixtures);
    # "zoo": the one `bbx zoo build` made for this model
    pricing: PricingConfig | None = None  # what its tokens cost, if anything


class FakeBackendConfig(Strict):
    """The deterministic fake backend (tests, dry runs)."""

    kind: Literal["fake"] = "fake"
    seed: int = 0
    bias: dict[str, dict[str, float]] = Field(default_factory=dict)
    adapter_bias: dict[str, dict[str, float]] = Field(default_factory=dict)
    dim: int = 16
    pricing: PricingConfig | None = None  # pretend prices (dry runs, budget tests)


class RemoteBackendConfig(Strict):
    """Any OpenAI-compatible server through the openai SDK (bbx serve, vLLM, llama.cpp, OpenAI).

    ``api_key_env`` is the NAME of the environment variable that holds the key, never the key.
    ``api``: ``completions`` (the prompt is text the model continues), ``chat`` (the prompt
    is the user message, after ``system`` when given, and label words start the reply:
    compared stripped and case-folded) or ``auto`` (decided once per server and model: a
    model the completions route refuses is a chat model). ``label_logprobs``: ``auto``
    uses the bbx extension when the server has it (completions), else next-token
    ``top_logprobs`` (at most 20 on chat); ``generate`` reads generated answers
    (``generate_max_tokens``; ``samples`` > 1 asks for that many at
    ``sample_temperature``) for servers without log-probs (see
    :mod:`blackbox.backends.remote`).
    """

    kind: Literal["remote"] = "remote"
    # default: $OPENAI_BASE_URL, else OpenAI's; a list (or commas): endpoints of one model
    base_url: str | list[str] | None = None
    api_key_env: str = "OPENAI_API_KEY"
    model: str | None = None  # default: the server's first model
    max_concurrency: int = Field(8, ge=1, le=256)  # per endpoint (halved on 429s)
    timeout: float = Field(60.0, gt=0)
    max_retries: int = Field(3, ge=0, le=20)
    api: Literal["auto", "chat", "completions"] = "auto"
    system: str | None = None  # chat only: a system message before every prompt
    label_logprobs: Literal["auto", "extension", "echo", "topk", "generate"] = "auto"
    top_logprobs: int = Field(20, ge=1, le=20)
    logit_bias: bool = True
    batch_size: int = Field(32, ge=1)
    generate_max_tokens: int = Field(8, ge=1, le=256)
    samples: int = Field(1, ge=1, le=128)  # > 1: label frequencies of n samples
    sample_temperature: float = Field(1.0, gt=0, le=2)
    pricing: PricingConfig | None = None  # default: the example table, by model id
    # the served model's Hugging Face tokenizer folder, where the server has no tokenize
    # route: token ids for logit_bias and ClaPS's vocabulary (blackbox.backends.tokenizer)
    tokenizer: str | None = None

    @field_validator("base_url")
    @classmethod
    def _endpoints(cls, v: str | list[str] | None) -> str | list[str] | None:
        """One URL stays a string (recipes saved before lists existed resume unchanged);
        several, as a list or with commas, become a list."""
        if v is None:
            return None
        from blackbox.backends.endpoints import split_urls

        urls = split_urls(v)
        if not urls:
            return None
        return urls[0] if len(urls) == 1 else urls

    @field_validator("api_key_env")
    @classmethod
    def _a_name_not_a_key(cls, v: str) -> str:
        import re

        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", v) or v.startswith("sk-"):
            raise ValueError("api_key_env names the environment variable that holds the key "
                             "(e.g. OPENAI_API_KEY), never the key itself")
        return v


BUILTIN_BACKENDS = ("local", "fake", "remote")


class PluginBackendConfig(BaseModel):
    """A backend a plugin registers (entry point group ``bbx.backends``): ``kind`` names it,
    and its other keys are validated by the backend class's own ``Config`` model (a pydantic
    model, when it has one) as the backend is made (:func:`blackbox.api.make_backend`)."""

    model_config = ConfigDict(extra="allow")
    kind: str
    pricing: PricingConfig | None = None  # the meter's, as on the built-in backends

    @model_validator(mode="after")
    def _registered(self) -> PluginBackendConfig:
        from blackbox.backends import BACKENDS

        BACKENDS.target(self.kind)  # an unknown name: one line with the choices
        return self


def _backend_kind(value: Any) -> str:
    kind = value.get("kind", "local") if isinstance(value, dict) else getattr(value, "kind",
                                                                                "local")
    return kind if kind in BUILTIN_BACKENDS else "plugin"


# the built-in backends' configs are checked here, key by key; any other kind is a plugin's
BackendConfig = Annotated[
    Annotated[LocalBackendConfig, Tag("local")] | Annotated[FakeBackendConfig, Tag("fake")]
    | Annotated[RemoteBackendConfig, Tag("remote")]
    | Annotated[PluginBackendConfig, Tag("plugin")],
    Discriminator(_backend_kind)]


class BudgetConfig(Strict):
    """What the run may pay for; cached answers are free."""

    max_queries: int | None = Field(None, ge=0)
    max_tokens: int | None = Field(None, ge=0)  # prompt tokens
    max_usd: float | None = Field(None, ge=0)  # dollars, at backend.pricing


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
    test_seed: int = Field(0, ge=0)  # the seed of every test subset: fixed apart from `seed`,
    # so the same limit picks the same test items for every method and every seed
    allow_overlap: bool = False  # run even if fit texts overlap test texts (the report says so)
    _task: tuple[str, Task] | None = PrivateAttr(None)

    @field_validator("task")
    @classmethod
    def _known_task(cls, v: str | TaskSpec) -> str | TaskSpec:
        if isinstance(v, str) and v not in TASKS:
            raise ValueError(f"unknown task '{v}'{did_you_mean(v, list(TASKS))}; for your own "
                             "data give files instead (--train FILE --test FILE on the command "
                             "line, task: {train: FILE, test: FILE} in a recipe)")
        return v

    def get_task(self) -> Task:
        """The resolved :class:`Task` (read once per recipe: files are inspected for labels)."""
        key = repr(self.task)  # a copy with another task must not reuse this one's
        if self._task is None or self._task[0] != key:
            task = self.task.to_task() if isinstance(self.task, TaskSpec) else TASKS[self.task]
            self._task = (key, task)
        return self._task[1]

    @property
    def task_name(self) -> str:
        return self.task.name if isinstance(self.task, TaskSpec) else self.task

    #: The backend abilities every recipe of this method needs: by default label-word
    #: scores (every method reads them); see :mod:`blackbox.backends.abilities`.
    needs: ClassVar[tuple[Need, ...]] = (LABEL_SCORES,)

    #: What the method loses when label-word scores are not exact log-probs, by the
    #: backend's ``label_logprobs`` mode (``topk``, ``generate``): the run's notes say it.
    score_losses: ClassVar[dict[str, str]] = {}

    def abilities_needed(self) -> list[Need]:
        """What this recipe needs of its backend: the class's ``needs`` plus those its
        options add (a method overrides this). ``api.run_recipe`` checks them against the
        backend before anything is paid, and refuses naming the ability and the fallback."""
        return list(self.needs)

