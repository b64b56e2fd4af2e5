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
    workers: int = Field(3, ge=1, le=32, description="Few-shot LLM workers.")
    demos_per_class: int = Field(2, ge=1, description="Demonstrations per class in each "
                                 "worker's prompt.")
    demo_words: int = Field(30, ge=1, description="Each demonstration's text is cut to this "
                            "many words.")
    query_words: int | None = Field(None, ge=1, description="The item to label is cut to this "
                                    "many words (None: the task's max_words).")
    worker_templates: list[int] | None = Field(None, description="Worker j uses template entry "
                                               "j mod len (None: all the task's).")
    calibrate: bool = Field(True, description="Contextual calibration of each worker (3 "
                            "queries per worker).")
    gold_calibration: bool = Field(False, description="Also fit each worker's per-class bias "
                                   "on the gold examples outside its demonstrations (one query "
                                   "per worker and example, paid from the budget).")
    aggregation: Aggregation = Field("mean", description="How the workers' labels are "
                                     "combined: majority | mean | dawid-skene.")
    # active learning
    acquisition: Acquisition = Field("entropy", description="entropy | least-confidence | "
                                     "margin | kmeans | random.")
    batch: int = Field(32, ge=1, description="Items the workers label per round.")
    queries: int = Field(2000, ge=0, description="Annotation budget in LLM queries (workers x "
                         "items).")
    pool_file: str | None = Field(None, description="Unlabelled texts (.txt, .csv, .tsv, "
                                  ".jsonl; None: the task's pool).")
    pool_limit: int | None = Field(None, ge=1, description="Seeded subset of the pool.")
    eval_limit: int | None = Field(None, ge=1, description="Seeded subset of the evaluation "
                                   "set.")
    # student
    features: Literal["auto", "minilm", "backend"] = Field(
        "auto", description="The student's text features: auto | minilm | backend (its "
        "embeddings).")
    student_c: float = Field(1.0, gt=0, description="Inverse L2 strength of the student "
                             "(chosen on the k-shot dev splits).")
    label_mode: Literal["soft", "hard"] = Field("soft", description="The student learns the "
                                                "workers' soft or hard labels.")
    student: Literal["linear", "finetune"] = Field(
        "linear", description="finetune: also fine-tune the MiniLM encoder end to end on gold + "
        "the workers' labels (and on gold alone, for comparison), saved as "
        "student-finetuned/ in the run directory.")
    finetune_epochs: int = Field(4, ge=1, description="Epochs of that fine-tuning.")
    finetune_lr: float = Field(5e-5, gt=0, description="Its learning rate.")
    gold_weight: float = Field(1.0, gt=0, description="Sample weight of a gold example (an LLM "
                               "label's: 1).")
    # reporting
    eval_workers: bool = Field(True, description="Also score the workers on the evaluation set "
                               "(costs queries).")
    worker_eval_limit: int | None = Field(None, ge=1, description="... on a seeded subset of "
                                          "this size (None: the student's items).")
    whole_pool: bool = Field(False, description="Also let the workers label the whole pool "
                             "(outside queries, metered as ever) and train the student on it: "
                             "the reference active learning is measured against.")
    noise_top: int = Field(50, ge=0, description="Rows of label_noise.md.")
    chunk: int = Field(64, ge=1, description="Prompts per metered call (progress and budget "
                       "granularity).")

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
