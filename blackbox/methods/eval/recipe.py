"""The ``method: eval`` recipe."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from blackbox.errors import BbxError
from blackbox.recipes.schema import RecipeBase


class EvalRecipe(RecipeBase):
    """Accuracy of a template (+ optional prompt) on a split: every method's baseline."""

    method: Literal["eval"] = "eval"
    score_losses: ClassVar[dict[str, str]] = {
        "topk": ("label words outside the server's top-k get a floor where logit_bias cannot "
                 "recover them: a prediction is exact only when the chosen word is in the top-k"),
        "generate": ("predictions are parsed replies (one-hot scores): calibration and "
                     "probabilities carry no information"),
    }
    split: Literal["train", "dev", "test"] = Field("test", description="train | dev | test.")
    template: int | str = Field(0, description="Template index or a template with {text}.")
    prompt: str = Field("", description="A prompt placed before the template.")
    limit: int | None = Field(None, ge=1, description="Evaluate a seeded subset of N (the same "
                              "items every method scores; None: the whole split).")
    chunk: int = Field(256, ge=1, description="Prompts per metered call (progress and budget "
                       "granularity).")

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
