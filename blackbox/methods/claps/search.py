"""The search phase: token sequences over the pruned vocabulary, through the one loop.

A candidate is ``length`` indices into the (pruned) vocabulary; its prompt is the pieces
joined. Greedy gets one extra index, the *blank* (no token), so that it starts from the empty
prompt and appends the best token at each step, exactly as ClaPS's greedy; every other
searcher (genetic, pso, random, ``ng:<Name>``) searches fixed-length sequences as in the
paper. Each batch of candidates is scored in ONE metered call (batch x train examples
items); :func:`blackbox.optim.run_search` owns the trial budget, the progress line,
``trials.jsonl`` and resuming.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from blackbox.methods.claps.reward import PromptScorer
from blackbox.methods.claps.vocab import Vocabulary, prompt_text
from blackbox.optim import DiscreteSpace, SearchResult, make_optimizer, run_search
from blackbox.optim.trials import read_trials

if TYPE_CHECKING:
    from blackbox.methods.base import RunContext
    from blackbox.methods.claps.recipe import ClapsRecipe

DEFAULT_BATCH = 32  # prompts per call for searchers without a natural batch (random, ng:...)


@dataclass
class PromptSpace:
    """The discrete space a searcher sees, and how its values spell prompts."""

    vocab: Vocabulary
    length: int
    blank: int | None  # the "no token" index (greedy only)

    @property
    def space(self) -> DiscreteSpace:
        n = len(self.vocab) + (1 if self.blank is not None else 0)
        return DiscreteSpace(self.length, n)

    def tokens(self, value: list[int]) -> list[str]:
        """The pieces a value picks (blanks dropped)."""
        return [self.vocab.texts[i] for i in value if i != self.blank]

    def prompt(self, value: list[int]) -> str:
        """The prompt text a value spells."""
        return prompt_text(self.tokens(value))


def make_searcher(recipe: ClapsRecipe, pspace: PromptSpace, seed: int,
                  trial_budget: int) -> tuple[Any, int, int]:
    """Build the searcher; returns ``(optimizer, batch_size, max_trials)``.

    The batch defaults to the searcher's natural unit — a greedy sweep, a GA generation, a
    PSO epoch — so each generation is one call; ``max_trials`` is the trial budget, cut to
    the searcher's own planned length (greedy's one pass, the GA's generations) if shorter.
    """
    options = recipe.searcher_options()
    if pspace.blank is not None:
        options["blank"] = pspace.blank
    probe = make_optimizer(recipe.search, pspace.space, seed=seed, batch_size=1,
                           budget=max(1, trial_budget), **options)
    natural = getattr(probe, "sweep_size", None) or getattr(probe, "population", None)
    batch = recipe.batch_size or natural or DEFAULT_BATCH
    opt = make_optimizer(recipe.search, pspace.space, seed=seed, batch_size=batch,
                         budget=max(1, trial_budget), **options)
    planned = getattr(opt, "total_trials", None)
    max_trials = min(trial_budget, planned) if planned else trial_budget
    return opt, batch, max_trials


def search_prompts(recipe: ClapsRecipe, ctx: RunContext, pspace: PromptSpace,
                   scorer: PromptScorer, trial_budget: int) -> tuple[SearchResult, Any]:
    """Run the searcher for at most ``trial_budget`` prompts; returns the loop's result and
    the optimizer. Stops early (``stopped="budget"``) if ``budget.max_queries`` runs out."""
    seed = int(ctx.rng("search").integers(2**31 - 1))
    opt, batch, max_trials = make_searcher(recipe, pspace, seed, trial_budget)

    def objective(values: list[Any]) -> list[tuple[float, dict[str, Any]]]:
        scores = scorer.score([pspace.prompt(v) for v in values])  # one batched call
        return [(-float(r), {"acc": float(a)})
                for r, a in zip(scores.reward, scores.accuracy, strict=True)]

    result = run_search(objective, opt, max_trials=max_trials, batch_size=batch,
                        trials_path=ctx.run_dir.trials, progress=ctx.stages,
                        describe=lambda v: repr(pspace.prompt([int(x) for x in v])))
    return result, opt


def top_prompts(ctx: RunContext, pspace: PromptSpace, n_trials: int, k: int
                ) -> list[dict[str, Any]]:
    """The ``k`` best distinct prompts of this search's trials (lowest train loss first),
    each ``{"prompt", "tokens", "train_loss", "train_acc", "trial"}``.

    Read back from ``trials.jsonl`` so replayed trials of a resumed run count too; rows past
    ``n_trials`` (left by an earlier, longer run) do not.
    """
    rows = read_trials(ctx.run_dir.trials)[:n_trials]
    rows = sorted((r for r in rows if r["loss"] == r["loss"]), key=lambda r: (r["loss"],
                                                                             r["index"]))
    out: list[dict[str, Any]] = []
    seen: set[str] = set()
    for r in rows:
        text = pspace.prompt(r["value"])
        if text in seen:
            continue
        seen.add(text)
        out.append({"prompt": text, "tokens": pspace.tokens(r["value"]),
                    "train_loss": float(r["loss"]),
                    "train_acc": float((r.get("info") or {}).get("acc", float("nan"))),
                    "trial": int(r["index"])})
        if len(out) == k:
            break
    return out
