"""``bbx search-prompt``: ClaPS — cluster the vocabulary, prune it, search a short prompt.

Phases, each through the metered backend:

1. **vocabulary** — word-initial alphabetic tokens of the backend's tokenizer (no query);
2. **clustering** — k-means over their input embeddings, one token per cluster (no query on
   the local backend; cached on disk);
3. **pruning** — every clustered token scored alone on the train batch, the top ones kept
   (|V| x n queries, the costly part, kept by the response cache);
4. **search** — greedy / genetic / pso / any optimizer through :func:`run_search`;
5. **selection** — the best distinct train prompts re-scored on the dev split, the best dev
   accuracy wins; **test** — the winner on the test split (or a fixed seeded subset).

``queries`` bounds the train-side work (pruning + search) in *logical* queries, cached or
not; ``budget.max_queries`` is the hard cap on paid calls: when it runs out the run stops
with the best prompt so far and skips what it can no longer pay for.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from blackbox.data import load_split
from blackbox.data.datasets import seeded_subset
from blackbox.errors import BbxError, BudgetExceeded
from blackbox.methods.base import RunContext
from blackbox.methods.claps.cluster import cached_clusters
from blackbox.methods.claps.prune import influence_scores, keep_above_percentile, random_prune
from blackbox.methods.claps.recipe import ClapsRecipe
from blackbox.methods.claps.reward import PromptScorer, balanced_subset
from blackbox.methods.claps.search import PromptSpace, search_prompts, top_prompts
from blackbox.methods.claps.vocab import Vocabulary, candidate_vectors, candidate_vocabulary
from blackbox.paths import responses_dir
from blackbox.stats import correct_string


class _Run:
    """Shared state of one search-prompt run (phases add to ``summary``)."""

    def __init__(self, recipe: ClapsRecipe, ctx: RunContext) -> None:
        self.recipe, self.ctx = recipe, ctx
        self.task = recipe.get_task()
        self.template = recipe.template_text()
        train = load_split(self.task, "train", recipe.shots, recipe.seed)
        self.dev = load_split(self.task, "dev", recipe.shots, recipe.seed)
        self.test_set = seeded_subset(load_split(self.task, "test", recipe.shots, recipe.seed),
                                    recipe.test_limit, recipe.test_seed)
        train = ctx.fit_only("train", train, self.test_set)
        self.dev = ctx.fit_only("dev", self.dev, self.test_set)
        # refuse before paying for anything: the search must not see a test text
        ctx.check_leak({"train": train, "dev": self.dev}, {"test": self.test_set})
        self.train = balanced_subset(train, recipe.train_batch, ctx.rng("train-batch"),
                                     self.task.n_classes)
        self.scorer = PromptScorer(ctx.backend, self.task, self.template, self.train)
        self.walls: dict[str, float] = {}
        self.queries: dict[str, int] = {"budget": recipe.queries, "pruning": 0, "search": 0}
        self.stopped: dict[str, str] = {}  # phase -> why it stopped early
        self.summary: dict[str, Any] = {}

    def timed(self, phase: str, t0: float) -> None:
        self.walls[phase] = round(self.walls.get(phase, 0.0) + time.perf_counter() - t0, 2)

    # -- phases 1-3: the search space ------------------------------------------------------
    def vocabulary(self) -> tuple[Vocabulary, Vocabulary]:
        """The candidate vocabulary and its clustered subset."""
        recipe, ctx = self.recipe, self.ctx
        t0 = time.perf_counter()
        vocab = candidate_vocabulary(recipe.vocab, ctx.backend)
        if vocab.source == "builtin":
            ctx.notes["vocabulary"] = ("the backend exposes no tokenizer: candidates are the "
                                       "built-in word list (set vocab: to use your own)")
        self.timed("vocabulary", t0)
        info: dict[str, Any] = {"source": vocab.source, "candidates": len(vocab)}
        clustered = vocab
        if recipe.clusters and recipe.clusters < len(vocab):
            t0 = time.perf_counter()
            # one stage (no finer steps): embedding the candidates, then k-means
            with ctx.stages.stage("clustering", len(vocab), unit="candidates") as st:
                vectors, how = candidate_vectors(vocab, ctx.backend, recipe.embeddings,
                                                 chunk=recipe.chunk)
                cache = recipe.cache_dir or responses_dir()
                index, hit = cached_clusters(vectors, recipe.clusters, recipe.cluster_seed,
                                             cache)
                st.update(len(vocab), info=f"{recipe.clusters} clusters")
            clustered = vocab.subset(index)
            info.update(embeddings=how, clusters=recipe.clusters, clusters_cached=hit)
            self.timed("clustering", t0)
        info["clustered"] = len(clustered)
        self.summary["vocab"] = info
        return vocab, clustered

    def prune(self, clustered: Vocabulary) -> tuple[Vocabulary, list[dict[str, Any]]]:
        """The pruned vocabulary, plus the scored single tokens (as fallback candidates)."""
        recipe, ctx = self.recipe, self.ctx
        info = self.summary["vocab"]
        if recipe.prune == "none":
            info["pruned"] = len(clustered)
            return clustered, []
        if recipe.prune == "random":
            keep = random_prune(len(clustered), recipe.percentile, ctx.rng("random-prune"))
            pruned = clustered.subset(keep)
            info["pruned"] = len(pruned)
            ctx.run_dir.write_json("pruning.json", {"kind": "random", "kept": pruned.texts})
            return pruned, []
        t0 = time.perf_counter()
        n = self.scorer.n
        prompts = [""] + [t.strip() for t in clustered.texts]
        with ctx.progress() as bar:
            scores = self.scorer.score(prompts, chunk=recipe.chunk, progress=bar,
                                       description="pruning")
        self.queries["pruning"] = len(prompts) * n
        influence = influence_scores(_rows(scores, 1, None), _rows(scores, 0, 1),
                                     recipe.prune_score)
        keep = keep_above_percentile(influence, recipe.percentile)
        pruned = clustered.subset(keep)
        info["pruned"] = len(pruned)
        order = np.argsort(-influence, kind="stable")
        ctx.run_dir.write_json("pruning.json", {
            "kind": recipe.prune_score, "percentile": recipe.percentile,
            "threshold": float(np.percentile(influence, recipe.percentile)),
            "empty_prompt": {"reward": float(scores.reward[0]),
                             "acc": float(scores.accuracy[0])},
            "kept": list(pruned.texts),
            "scores": [{"token": clustered.texts[i], "score": float(influence[i]),
                        "reward": float(scores.reward[i + 1]),
                        "acc": float(scores.accuracy[i + 1])} for i in order],
        })
        singles = [{"prompt": clustered.texts[i].strip(), "tokens": [clustered.texts[i]],
                    "train_loss": -float(scores.reward[i + 1]),
                    "train_acc": float(scores.accuracy[i + 1]), "trial": None}
                   for i in order]
        self.timed("pruning", t0)
        return pruned, singles

    # -- phase 4: search ------------------------------------------------------------------
    def search(self, pruned: Vocabulary) -> list[dict[str, Any]]:
        recipe, ctx = self.recipe, self.ctx
        n = self.scorer.n
        trial_budget = (recipe.queries - self.queries["pruning"]) // n
        if trial_budget < 1:
            raise BbxError(f"queries={recipe.queries} leaves nothing for the search after "
                           f"pruning ({self.queries['pruning']} queries): raise queries")
        if len(pruned) < 2:
            raise BbxError(f"pruning kept {len(pruned)} token(s), too few to search: lower "
                           "percentile or raise clusters (pruning.json in the run directory "
                           "has every token's score)")
        blank = len(pruned) if recipe.search == "greedy" else None
        pspace = PromptSpace(pruned, recipe.length, blank)
        t0 = time.perf_counter()
        result, opt = search_prompts(recipe, ctx, pspace, self.scorer, trial_budget)
        self.timed("search", t0)
        self.queries["search"] = result.n_trials * n
        if result.stopped == "budget":
            self.stopped["search"] = "budget.max_queries reached"
        self.summary["search"] = {
            "searcher": recipe.search, "trials": result.n_trials,
            "replayed": result.n_replayed, "trial_budget": trial_budget,
            "stopped": result.stopped, "best_trial": result.best_index,
            "optimizer": opt.state_dict(),
        }
        ctx.notes.setdefault("optimizer", opt.name)
        return top_prompts(ctx, pspace, result.n_trials, recipe.select_top)

    # -- phase 5: selection and test ------------------------------------------------------
    def select(self, cands: list[dict[str, Any]]) -> dict[str, Any]:
        """Re-score ``cands`` on dev; the best dev accuracy (then dev reward) wins."""
        recipe, ctx = self.recipe, self.ctx
        dev = self.dev
        t0 = time.perf_counter()
        try:
            with ctx.progress() as bar:
                scores = PromptScorer(ctx.backend, self.task, self.template, dev).score(
                    [c["prompt"] for c in cands], chunk=recipe.chunk, progress=bar,
                    description="dev")
        except BudgetExceeded:
            self.stopped["dev"] = "budget.max_queries reached"
            self.timed("dev", t0)
            return cands[0]  # best on train
        for c, acc, r in zip(cands, scores.accuracy, scores.reward, strict=True):
            c["dev_acc"], c["dev_reward"] = float(acc), float(r)
        self.timed("dev", t0)
        best = max(range(len(cands)), key=lambda i: (cands[i]["dev_acc"],
                                                     cands[i]["dev_reward"], -i))
        return cands[best]

    def test(self, prompt: str) -> dict[str, Any] | None:
        recipe, ctx = self.recipe, self.ctx
        test = self.test_set
        t0 = time.perf_counter()
        try:
            with ctx.progress() as bar:
                s = PromptScorer(ctx.backend, self.task, self.template, test).score(
                    [prompt], chunk=recipe.chunk, progress=bar,
                    description="test")
        except BudgetExceeded:
            self.stopped["test"] = "budget.max_queries reached"
            return None
        finally:
            self.timed("test", t0)
        return {"accuracy": float(s.accuracy[0]), "macro_f1": float(s.macro_f1()[0]),
                "reward": float(s.reward[0]), "n": len(test),
                "correct": correct_string(s.logp[0].argmax(axis=-1), s.gold)}


def _rows(scores: Any, start: int, stop: int | None) -> Any:
    """A slice of a :class:`PromptScores` along the prompt axis."""
    return type(scores)(scores.logp[start:stop], scores.gold)


def run(recipe: ClapsRecipe, ctx: RunContext) -> dict[str, Any]:
    """Run ClaPS (or a baseline) as the recipe says; return the summary."""
    t_start = time.perf_counter()
    r = _Run(recipe, ctx)
    cands: list[dict[str, Any]] = []
    singles: list[dict[str, Any]] = []
    phase = "train"
    try:
        if recipe.search == "manual":
            s = r.scorer.score([""], chunk=recipe.chunk)
            r.queries["search"] = r.scorer.n
            r.summary["search"] = {"searcher": "manual", "trials": 1}
            cands = [{"prompt": "", "tokens": [], "train_loss": -float(s.reward[0]),
                      "train_acc": float(s.accuracy[0]), "trial": None}]
        else:
            phase = "clustering"
            _, clustered = r.vocabulary()
            if recipe.prune == "influence":
                cost = (len(clustered) + 1) * r.scorer.n
                if cost > recipe.queries:
                    raise BbxError(
                        f"pruning {len(clustered)} tokens on {r.scorer.n} train examples needs "
                        f"{cost} queries but queries={recipe.queries}: raise queries, or lower "
                        "clusters or train_batch")
            phase = "pruning"
            pruned, singles = r.prune(clustered)
            phase = "search"
            cands = r.search(pruned)
    except BudgetExceeded:  # the search loop handles its own; this is pruning or manual
        r.stopped.setdefault(phase, "budget.max_queries reached")
    if not cands:  # stopped before the search finished a batch: best single tokens, or none
        cands = singles[: recipe.select_top] or [
            {"prompt": "", "tokens": [], "train_loss": None, "train_acc": None, "trial": None}]
    best = r.select(cands)
    test = r.test(best["prompt"])
    train_total = r.queries["pruning"] + r.queries["search"]
    return {
        "task": r.task.name,
        "searcher": recipe.search,
        "best_prompt": best["prompt"],
        "best_tokens": best["tokens"],
        "train": {"n": r.scorer.n, "loss": best["train_loss"], "accuracy": best["train_acc"]},
        "dev": {"accuracy": best.get("dev_acc"), "reward": best.get("dev_reward")},
        "test": test,
        "test_accuracy": test["accuracy"] if test else None,
        "queries": {**r.queries, "train_total": train_total},
        **r.summary,
        "candidates": cands,
        "stopped": r.stopped or None,
        "template": r.template,
        "wall_s": {**r.walls, "total": round(time.perf_counter() - t_start, 2)},
    }
