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

    name: str = Field("own-task", description="The task's name in run names and reports.")
    train: str | None = Field(None, description="The train file (CSV, TSV or JSONL; text or "
                              "sentence + label).")
    dev: str | None = Field(None, description="The dev file (default: a seeded share of each "
                            "train class, dev_fraction).")
    test: str | None = Field(None, description="The held-out test file every accuracy is "
                             "measured on.")
    pool: str | None = Field(None, description="Unlabelled texts (bbx distill).")
    path: str | None = Field(None, description="One file holding everything (a fixed 20% of "
                             "each class is the test set).")
    labels: list[str] | None = Field(None, description="Class names in index order (default: "
                                     "the names in the files, sorted).")
    label_words: list[str] | None = Field(None, description="One label word per class "
                                          "(default: the class names).")
    templates: list[str] = Field(default_factory=lambda: ["{prompt}{text}\nLabel:"],
                                 description="Templates with {text} (and {prompt}).")
    max_words: int | None = Field(None, ge=1, description="Cut each text to this many words "
                                  "(None: whole texts).")
    dev_fraction: float = Field(0.25, gt=0, lt=1, description="Without a dev file: the share "
                                "of each train class that is the dev set.")

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

    input_per_mtok: float = Field(ge=0, description="US dollars per million prompt tokens.")
    output_per_mtok: float = Field(ge=0, description="US dollars per million completion "
                                   "tokens.")


class LocalBackendConfig(Strict):
    """The in-process engine over a local model (``default`` = bundled SmolLM2-135M)."""

    kind: Literal["local"] = "local"
    model: str = Field("default", description="Local model: 'default' (SmolLM2-135M), an HF "
                       "folder or a .gguf file.")
    device: str = Field("auto", description="auto (CUDA when present, else CPU) | cpu | cuda "
                        "| cuda:N.")
    dtype: str = Field("auto", description="auto | bf16 | fp16 | fp32 (auto: bf16 on a GPU or "
                       "CPU that runs it natively, else fp32).")
    batch_size: int = Field(32, ge=1, description="Prompts per forward pass.")
    adapters: str | None = Field(None, description="Local backend: a folder of PEFT LoRA "
                                 "adapters, or 'zoo' (the one bbx zoo build made for the "
                                 "model; a merge recipe's default).")
    pricing: PricingConfig | None = Field(None, description="What its tokens cost, if "
                                          "anything.")


class FakeBackendConfig(Strict):
    """The deterministic fake backend (tests, dry runs)."""

    kind: Literal["fake"] = "fake"
    seed: int = Field(0, description="Seed of its deterministic answers.")
    bias: dict[str, dict[str, float]] = Field(
        default_factory=dict, description="Per keyword in a prompt, label-word logit boosts.")
    adapter_bias: dict[str, dict[str, float]] = Field(
        default_factory=dict, description="Per adapter name, label-word boosts (enables "
        "adapters).")
    dim: int = Field(16, description="Size of its hidden states and embeddings.")
    pricing: PricingConfig | None = Field(None, description="Pretend prices (dry runs, budget "
                                          "tests).")


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
    base_url: str | list[str] | None = Field(
        None, description="Remote backend: the server's URL (default $OPENAI_BASE_URL, else "
        "OpenAI's); several (a list, or commas) are endpoints of one model.")
    api_key_env: str = Field("OPENAI_API_KEY", description="Remote backend: NAME of the env "
                             "var holding the key.")
    model: str | None = Field(None, description="Remote backend: the model name (default: the "
                              "server's first).")
    max_concurrency: int = Field(8, ge=1, le=256, description="Requests in flight per "
                                 "endpoint (halved on 429s).")
    timeout: float = Field(60.0, gt=0, description="Seconds per request.")
    max_retries: int = Field(3, ge=0, le=20, description="The SDK's retries per request.")
    api: Literal["auto", "chat", "completions"] = Field(
        "auto", description="Remote backend: auto | chat | completions (auto: a model the "
        "completions route refuses is a chat model).")
    system: str | None = Field(None, description="Chat only: a system message before every "
                               "prompt.")
    label_logprobs: Literal["auto", "extension", "echo", "topk", "generate"] = Field(
        "auto", description="How label-word scores are read: auto | extension | echo | topk "
        "| generate.")
    top_logprobs: int = Field(20, ge=1, le=20, description="Next-token log-probs asked for "
                              "(topk).")
    logit_bias: bool = Field(True, description="Boost the label words with logit_bias so they "
                             "reach the top-k.")
    batch_size: int = Field(32, ge=1, description="Prompts per request.")
    generate_max_tokens: int = Field(8, ge=1, le=256, description="Reply tokens read "
                                     "(generate).")
    samples: int = Field(1, ge=1, le=128, description="Replies per prompt (generate; > 1: "
                         "label frequencies of n samples).")
    sample_temperature: float = Field(1.0, gt=0, le=2, description="Temperature of those "
                                      "samples.")
    pricing: PricingConfig | None = Field(None, description="What its tokens cost (default: "
                                          "the example table, by model id).")
    tokenizer: str | None = Field(
        None, description="Remote backend: the served model's Hugging Face tokenizer folder, "
        "where the server has no tokenize route (logit_bias ids, ClaPS's vocabulary).")

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
    kind: str = Field(description="The backend's registered name.")
    pricing: PricingConfig | None = Field(None, description="What its tokens cost (the "
                                          "meter's, as on the built-in backends).")

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

    max_queries: int | None = Field(None, ge=0, description="Hard cap on paid backend calls "
                                    "of any kind (cached answers are free).")
    max_tokens: int | None = Field(None, ge=0, description="Hard cap on paid prompt tokens.")
    max_usd: float | None = Field(None, ge=0, description="Hard cap on dollars, at "
                                  "backend.pricing.")


class RecipeBase(Strict):
    """Fields every method shares."""

    name: str | None = Field(None, description="The run's name (default: "
                             "<method>-<task>-s<seed>).")
    seed: int = Field(42, description="Seed of the k-shot splits and the method's random "
                      "draws.")
    task: str | TaskSpec = Field("sst-2", description="Task name (bbx ls tasks); for your own "
                                 "data give --train/--test files instead.")
    shots: int = Field(16, ge=1, description="Labelled examples per class in train (and dev).")
    backend: BackendConfig = Field(
        default_factory=LocalBackendConfig, description="Where the queries go: a backend kind "
        "(local | fake | remote, or a plugin's: bbx ls backends) and its options.")
    budget: BudgetConfig = Field(default_factory=BudgetConfig,
                                 description="What the run may pay for.")
    cache_dir: str | None = Field(None, description="The response cache (default: <BBX_CACHE_DIR "
                                  "or user cache>/responses).")
    output_dir: str = Field("results/runs", description="Where run directories go.")
    test_seed: int = Field(0, ge=0, description="Seed of every test subset, fixed apart from "
                           "seed: the same limit picks the same test items for every method "
                           "and seed.")
    allow_overlap: bool = Field(False, description="Run even if train/dev texts are also test "
                                "texts (the summary lists the overlap).")
    drop_overlap: bool = Field(False, description="Leave out of train/dev/pool the texts that "
                               "are also evaluation texts (the summary's notes count them), "
                               "instead of refusing the run.")
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

