"""The ``method: distill`` recipe (LMTurk)."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, model_validator

from blackbox.recipes.schema import RecipeBase

Acquisition = Literal["entropy", "least-confidence", "margin", "kmeans", "random"]
Aggregation = Literal["majority", "mean", "dawid-skene"]
ACQUISITIONS: tuple[str, ...] = ("entropy", "least-confidence", "margin", "kmeans", "random")
AGGREGATIONS: tuple[str, ...] = ("majority", "mean", "dawid-skene")


class LMTurkRecipe(RecipeBase):
    """Few-shot LLM workers label what active learning picks; a small student learns from them.

    ``shots`` gold examples per class seed everything: they are the workers' demonstrations
    and the student's first training set. ``queries`` is the annotation budget in LLM queries
    (one worker labelling one item is one query, cached or not), so learning curves do not
    depend on what the response cache already held; ``budget.max_queries`` stays the hard
    cap on *paid* calls of any kind.
    """

    method: Literal["distill"] = "distill"
    score_losses: ClassVar[dict[str, str]] = {
        "topk": ("label words outside the server's top-k get a floor where logit_bias cannot "
                 "recover them: the workers' soft labels are less graded"),
        "generate": ("the workers' labels are one-hot replies (or sample frequencies): soft-label "
                     "distillation is hard-label distillation"),
    }
    # workers
    workers: int = Field(3, ge=1, le=32)
    demos_per_class: int = Field(2, ge=1)  # demonstrations per class in each worker's prompt
    demo_words: int = Field(30, ge=1)  # each demonstration's text is cut to this many words
    query_words: int | None = Field(None, ge=1)  # the item to label (None: the task's max_words)
    worker_templates: list[int] | None = None  # worker j uses entry j mod len (None: all)
    calibrate: bool = True  # contextual calibration of each worker (3 queries per worker)
    aggregation: Aggregation = "mean"
    # active learning
    acquisition: Acquisition = "entropy"
    batch: int = Field(32, ge=1)  # items picked per round
    queries: int = Field(2000, ge=0)  # annotation budget in LLM queries (workers x items)
    pool_file: str | None = None  # unlabelled texts (.txt lines, or csv/tsv/jsonl with `text`)
    pool_limit: int | None = Field(None, ge=1)  # seeded subset of the pool
    eval_limit: int | None = Field(None, ge=1)  # seeded subset of the evaluation set
    # student
    features: Literal["auto", "minilm", "backend"] = "auto"
    student_c: float = Field(1.0, gt=0)  # inverse L2 strength (chosen on the k-shot dev splits)
    label_mode: Literal["soft", "hard"] = "soft"
    # "finetune": also fine-tune the MiniLM encoder end to end on gold + the workers' labels
    # (and on gold alone, for comparison); saved as student-finetuned/ in the run directory
    student: Literal["linear", "finetune"] = "linear"
    finetune_epochs: int = Field(4, ge=1)
    finetune_lr: float = Field(5e-5, gt=0)
    gold_weight: float = Field(1.0, gt=0)  # sample weight of a gold example (LLM labels: 1)
    # reporting
    eval_workers: bool = True  # also score the workers on the evaluation set (costs queries)
    # ... on a seeded subset of this size (None: the whole evaluation set, the student's items)
    worker_eval_limit: int | None = Field(None, ge=1)
    # also let the workers label the whole pool (outside `queries`, metered as ever) and train
    # the student on that: the reference active learning is measured against
    whole_pool: bool = False
    noise_top: int = Field(50, ge=0)  # rows of label_noise.md
    chunk: int = Field(64, ge=1)  # prompts per metered call (progress + budget granularity)

    @model_validator(mode="after")
    def _check_templates(self) -> LMTurkRecipe:
        if self.worker_templates is not None:
            n = len(self.get_task().templates)
            bad = [t for t in self.worker_templates if not 0 <= t < n]
            if bad or not self.worker_templates:
                raise ValueError(
                    f"worker_templates {self.worker_templates}: give indices in 0..{n - 1} "
                    f"(task '{self.task_name}' has {n} templates)"
                )
        return self
