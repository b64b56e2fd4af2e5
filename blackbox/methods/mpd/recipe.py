"""The ``method: decode`` recipe: fit a Multi-Prompting Decoder (or DecT), or predict with one."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, model_validator

from blackbox.backends.abilities import Need
from blackbox.errors import BbxError
from blackbox.recipes.schema import RecipeBase

#: The decoders ``compare:`` can name. Each is trained on the same cached features as the
#: main decoder, so a comparison costs training time only, never queries. ``zero-shot`` is
#: the first prompt's raw label word; ``zero-shot-cal`` MPD's calibrated class scores over
#: every prompt and label word with no trained decoder (what the decoder itself adds).
VariantName = Literal["zero-shot", "zero-shot-cal", "dect", "mpd", "mpd-mean", "mpd-nocal",
                      "mpd-1word"]


class DecodeRecipe(RecipeBase):
    """Fit a decoder on P prompts' hidden states + calibrated label-word scores, or predict.

    ``action: fit`` trains on the k-shot ``train`` split, picks β (MPD) on ``dev``, reports
    accuracy on ``eval_split`` and saves the decoder file. ``action: predict`` loads
    ``decoder_file`` and labels the texts of ``input`` (JSONL with a ``text`` field).
    """

    method: Literal["decode"] = "decode"
    score_losses: ClassVar[dict[str, str]] = {
        "topk": ("label words outside the server's top-k get a floor where logit_bias cannot "
                 "recover them: the label-word scores MPD adds to the decoder are coarser"),
        "generate": ("the label-word scores are one-hot replies: MPD's calibrated scores add only "
                     "the reply to the decoder"),
    }
    action: Literal["fit", "predict"] = Field("fit", description="fit a decoder, or predict "
                                              "with one.")

    # -- what is queried -------------------------------------------------------------
    prompts: int | None = Field(None, ge=1, description="Number of the task's templates to "
                                "query (P; None: up to 3).")
    templates: list[str] | None = Field(None, description="Explicit templates (each with "
                                        "{text}) instead.")
    neighbours: int = Field(10, ge=1, description="Label words per class (own word + "
                            "nearest).")
    logprobs_from_hidden: bool = Field(
        False, description="Local backend: read label-word log-probs off the hidden states "
        "(one forward pass per example and prompt instead of two; same numbers).")

    # -- the decoder ---------------------------------------------------------------------
    decoder: Literal["mpd", "dect"] = Field("mpd", description="mpd | dect.")
    pooling: Literal["ot", "mean"] = Field("ot", description="ot | mean (average the P "
                                           "features, no transport).")
    calibrate: bool = Field(True, description="Add β · calibrated label-word score (MPD) / λ · "
                            "(DecT).")
    proj_dim: int = Field(128, ge=1, description="Size of the projected features.")
    prototypes: int = Field(3, ge=1, description="Prototypes per class (Q).")
    epsilon: float = Field(0.1, gt=0, description="Sinkhorn entropic regularization.")
    sinkhorn_iters: int = Field(100, ge=1, description="Sinkhorn iterations.")
    scale: float = Field(10.0, gt=0, description="OT score (a cosine) times this is the "
                         "logit.")
    betas: list[float] = Field(
        default_factory=lambda: [0.0, 0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0],
        description="The grid β is chosen from on dev.")
    feature_norm: Literal["none", "center", "standardize"] = Field(
        "standardize", description="none | center | standardize the features.")
    lr: float = Field(1e-2, gt=0, description="Learning rate.")
    epochs: int = Field(30, ge=1, description="Training epochs.")

    # -- fit: evaluation and output ------------------------------------------------------
    eval_split: Literal["dev", "test"] = Field("test", description="Where accuracy is "
                                               "reported: dev | test.")
    test_limit: int | None = Field(None, ge=1, description="Evaluate on a fixed seeded test "
                                   "subset of N (the same for every seed).")
    compare: list[VariantName] = Field(
        default_factory=list, description="Also train and report: zero-shot, zero-shot-cal, "
        "dect, mpd, mpd-mean, mpd-nocal, mpd-1word.")
    decoder_out: str | None = Field(None, description="Decoder file to write (default: <run "
                                    "dir>/decoder.safetensors).")
    chunk: int = Field(64, ge=1, description="Examples per metered request (progress, budget "
                       "stops).")

    # -- predict -------------------------------------------------------------------------
    decoder_file: str | None = Field(None, description="The decoder file bbx decode fit "
                                     "saved.")
    input: str | None = Field(None, description="Texts to label (CSV, TSV, JSONL: a text "
                              "column, a label column adds accuracy; or .txt, one per line).")
    output: str | None = Field(None, description="Also write predictions.jsonl here "
                               "(default: the run directory only).")

    @model_validator(mode="after")
    def _check(self) -> DecodeRecipe:
        if self.action == "predict":
            if not self.decoder_file:
                raise ValueError("action predict needs decoder_file: the file bbx decode fit "
                                 "saved")
            if not self.input:
                raise ValueError("action predict needs input: a JSONL file with a 'text' field "
                                 "per line")
        if self.templates is not None:
            if not self.templates:
                raise ValueError("templates is empty: give at least one template with {text}")
            for t in self.templates:
                if "{text}" not in t:
                    raise ValueError(f"template {t!r} has no {{text}} placeholder")
        if not self.betas or any(b < 0 for b in self.betas):
            raise ValueError("betas must be a non-empty list of numbers >= 0")
        return self

    def abilities_needed(self) -> list[Need]:
        """Class scores are label-word log-probs; ``logprobs_from_hidden`` reads them off
        hidden states through the output-embedding table at the words' token ids."""
        needs = super().abilities_needed()
        if self.logprobs_from_hidden:
            why = "logprobs_from_hidden reads label words' output-embedding rows"
            fallback = "set logprobs_from_hidden: false"
            needs += [Need("vocabulary", f"token ids: {why}", fallback),
                      Need("token_embeddings", why, fallback)]
        return needs

    def prompt_templates(self) -> list[str]:
        """The P templates to query: ``templates`` if given, else the task's first P."""
        if self.templates is not None:
            return list(self.templates)
        task = self.get_task()
        if self.prompts is None:
            return list(task.templates[:3])
        if self.prompts > len(task.templates):
            raise BbxError(
                f"prompts={self.prompts} but task '{task.name}' has {len(task.templates)} "
                f"templates: lower prompts or give templates: [...] in the recipe"
            )
        return list(task.templates[: self.prompts])
