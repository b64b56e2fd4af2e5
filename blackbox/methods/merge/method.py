"""``bbx merge``: Evo-Merging (Chen et al. 2025) and its ablations and baselines.

The user's optimizer proposes per-adapter keep-fractions α and signed scales β; the server
builds the mixture (``A* = Σβᵢ·sparse(Aᵢ,αᵢ)``, ``B* = Σβᵢ·Bᵢ``) and answers label-word
log-probs; the loss is computed here. Two stages, as the official code:

1. denoising — search α ∈ [0, 1] from α = 1 (dense) with β fixed at 1/N;
2. sign-aware scaling — search β ∈ [-1.5, 1.5] from 1/N with α at the stage-1 best.

Each stage is one :func:`~blackbox.optim.loop.run_search` over the optim layer (CMA-ES by
default, any optimizer by name), a whole population scored in one backend call, with its
own ``trials-<stage>.jsonl`` so that a killed run resumes by replay and pays nothing twice.
The best mixture is saved as ``mixture.json`` (an adapter spec any recipe or request can
name) and scored on the held-out test examples.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from blackbox.backends.abilities import has, require
from blackbox.backends.base import Backend
from blackbox.errors import BbxError, BudgetExceeded
from blackbox.methods.base import RunContext
from blackbox.methods.merge.objective import (
    MixtureLoss,
    ce_and_accuracy,
    mixture,
    prompts_of,
    split_user_and_test,
)
from blackbox.methods.merge.recipe import MergeRecipe, StageConfig
from blackbox.methods.scoring import label_scores
from blackbox.optim import BoxSpace, make_optimizer
from blackbox.optim.loop import SearchResult, run_search
from blackbox.stats import correct_string


def available_adapters(backend: Backend) -> list[str]:
    """The adapter names the backend's repository holds (sorted): its ``adapters`` ability."""
    require(backend, "adapters", "use backend: {kind: local, adapters: DIR} or a bbx serve "
                                 "--adapters DIR server")
    return sorted(backend.list_adapters())  # type: ignore[attr-defined]


class _Stage:
    """One search stage: a box over α or β, how a vector becomes a mixture, its budget."""

    def __init__(self, name: str, cfg: StageConfig, space: BoxSpace,
                 to_spec: Callable[[list[float]], dict[str, Any]]) -> None:
        self.name, self.cfg, self.space, self.to_spec = name, cfg, space, to_spec

    def run(self, ctx: RunContext, loss: MixtureLoss) -> SearchResult:
        seed = int(ctx.rng(f"merge-{self.name}").integers(2**31))
        options = dict(self.cfg.options)
        if self.cfg.optimizer == "cma":
            options.setdefault("popsize", self.cfg.popsize)
        opt = make_optimizer(self.cfg.optimizer, self.space, seed=seed,
                             batch_size=self.cfg.popsize, budget=self.cfg.evaluations,
                             **options)

        def objective(values: list[Any]) -> list[tuple[float, dict[str, Any]]]:
            return loss.evaluate([self.to_spec(list(v)) for v in values], values)

        return run_search(objective, opt, max_trials=self.cfg.evaluations,
                          batch_size=self.cfg.popsize,
                          trials_path=ctx.run_dir.path / f"trials-{self.name}.jsonl",
                          progress=ctx.stages, stage=f"{self.name} ({opt.name})",
                          describe=lambda v: "[" + ", ".join(f"{x:.2f}" for x in v) + "]")


def _stage_summary(res: SearchResult) -> dict[str, Any]:
    return {"evaluations": res.n_trials, "replayed": res.n_replayed, "stopped": res.stopped,
            "best_loss": res.best_loss if res.best_value is not None else None,
            "best_value": res.best_value, "best_info": res.best_info,
            "optimizer": res.optimizer.get("name"),
            "chosen": res.optimizer.get("settings", {}).get("chosen")}


def _search(recipe: MergeRecipe, ctx: RunContext, names: list[str],
            loss: MixtureLoss) -> tuple[dict[str, Any], dict[str, Any]]:
    """Run the variant's stages; the best spec and what each stage did."""
    n = len(names)
    uniform, ones = [1.0 / n] * n, [1.0] * n
    bound = recipe.beta_bound
    v = recipe.variant
    stages: dict[str, Any] = {}
    alpha = ones
    if v in ("evo", "evo-no-sign", "evo-no-scale"):
        s1 = _Stage("stage1", recipe.stage1,
                    BoxSpace(n, 0.0, 1.0, init=1.0, sigma=recipe.stage1.sigma0),
                    lambda x: mixture(names, x, uniform))
        res = s1.run(ctx, loss)
        stages["stage1"] = _stage_summary(res)
        if res.best_value is not None:
            alpha = list(res.best_value)
        if v == "evo-no-scale" or res.stopped == "budget":
            return mixture(names, alpha, uniform), stages
    if v == "lorahub":
        cfg, init, lower = recipe.lorahub, 0.0, -bound
    else:
        cfg, init, lower = recipe.stage2, 1.0 / n, (0.0 if v == "evo-no-sign" else -bound)
    fixed_alpha = list(alpha)
    s2 = _Stage("lorahub" if v == "lorahub" else "stage2", cfg,
                BoxSpace(n, lower, bound, init=init, sigma=cfg.sigma0),
                lambda x: mixture(names, fixed_alpha, x))
    res2 = s2.run(ctx, loss)
    stages[s2.name] = _stage_summary(res2)
    beta = list(res2.best_value) if res2.best_value is not None else [init] * n
    if v != "lorahub" and "stage1" in stages and res.best_value is not None:
        # stage 2 is kept only if it fits the user's examples better than stage 1's best
        # (both scored by the data term, cross-entropy: their penalties differ)
        ce1 = res.best_info.get("ce", float("inf"))
        ce2 = res2.best_info.get("ce", float("inf")) if res2.best_value is not None \
            else float("inf")
        stages["stage2"]["kept"] = bool(ce2 < ce1)
        if not ce2 < ce1:
            return mixture(names, alpha, uniform), stages
    return mixture(names, alpha, beta), stages


def _adapter_data(ctx: RunContext, names: list[str]) -> dict[str, Any]:
    """Per adapter, the digests of its training texts, where the repository records them.

    Only a local repository built by ``bbx zoo build`` records them; a remote server's
    adapters are not checked (the run's notes say so). An adapter of a local repository
    with no record is an error unless ``allow_overlap``: nobody can say what it saw.
    """
    from blackbox.data.leak import DigestSet
    from blackbox.methods.merge.zoo import training_digests

    if not has(ctx.backend, "repository"):
        ctx.notes["adapter_leak_check"] = ("not run: this backend does not say what its "
                                           "adapters trained on")
        return {}
    repo = ctx.backend.adapter_repository()
    out: dict[str, Any] = {}
    unknown = []
    for name in names:
        keys = training_digests(repo.path(name))
        if keys is None:
            unknown.append(name)
        else:
            out[f"adapter {name}"] = DigestSet(keys)
    if unknown and not ctx.allow_overlap:
        raise BbxError(f"adapter(s) {', '.join(unknown)} record no digests of their training "
                       "texts, so they cannot be checked for test texts: rebuild them with "
                       "bbx zoo build, or set allow_overlap to run anyway")
    if unknown:
        ctx.notes["adapter_leak_check"] = f"unchecked adapters: {', '.join(unknown)}"
    return out


def _choose(recipe: MergeRecipe, ctx: RunContext, names: list[str],
            loss: MixtureLoss) -> tuple[Any, dict[str, Any]]:
    """The variant's adapter spec (searched, picked or built) and its details."""
    n = len(names)
    v = recipe.variant
    if v == "base":
        return None, {}
    if v == "uniform":
        return mixture(names, [1.0] * n, [1.0 / n] * n), {}
    if v == "best-single":
        with ctx.stages.stage("best single", len(names), unit="adapters") as st:
            results = loss.evaluate(names)  # N adapters, one call
            st.update(len(names))
        ces = [r[1]["ce"] for r in results]
        best = int(np.argmin(ces))
        return names[best], {"candidates": {nm: r[1] for nm, r in zip(names, results,
                                                                       strict=True)}}
    if v in ("ties", "dare"):
        from blackbox.methods.merge.whitebox import peft_merge

        name = peft_merge(ctx.backend, names, v, recipe.density, recipe.seed,
                          ctx.run_dir.path / "merged")
        return name, {"merged_adapter": name, "density": recipe.density}
    spec, stages = _search(recipe, ctx, names, loss)
    return spec, {"stages": stages}


def _materialize(ctx: RunContext, recipe: MergeRecipe, spec: dict[str, Any]) -> dict[str, str]:
    """Save the mixture as a PEFT adapter: server-side through a remote bbx server (a new
    adapter in its repository), else from the local repository into the run directory."""
    if has(ctx.backend, "materialize"):
        digest = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:8]
        name = f"{recipe.variant}-{recipe.task_name}-s{recipe.seed}-{digest}"
        try:
            ctx.backend.materialize_adapter(name, spec)
        except BbxError as e:
            if "already exists" not in str(e):  # the name carries the spec's hash: same one
                raise
        return {"server_adapter": name}
    from blackbox.methods.merge.whitebox import materialize

    return {"path": str(materialize(ctx.backend, spec, ctx.run_dir.path / "merged-adapter"))}


def run(recipe: MergeRecipe, ctx: RunContext) -> dict[str, Any]:
    """Search (or build) the variant's mixture, save it, score it on the test examples."""
    t0 = time.perf_counter()
    task = recipe.get_task()
    names = list(recipe.adapters) if recipe.adapters else available_adapters(ctx.backend)
    if not names:
        raise BbxError("the adapter repository is empty: add PEFT LoRA adapters to it (see "
                       "scripts/build_adapter_zoo.py)")
    user, test = split_user_and_test(task, recipe.user_examples, recipe.test_limit,
                                     recipe.seed, recipe.test_seed, notes=ctx.notes,
                                     user_seeds=recipe.user_seeds)
    adapters = _adapter_data(ctx, names)
    ctx.check_leak({"user examples": user, **adapters}, {"test": test})
    ctx.check_leak(adapters, {"user examples": user})
    leak_check = {"user_vs_test": "checked", "adapters_checked": len(adapters),
                  "adapters_unchecked": len(names) - len(adapters),
                  "overlaps": len(ctx.notes.get("overlap", []))}
    words = list(task.label_words)
    loss = MixtureLoss(ctx.backend, prompts_of(task, recipe.template, user),
                       np.array([e.label for e in user]), words, recipe.l1)
    spec, details = _choose(recipe, ctx, names, loss)
    t_search = time.perf_counter() - t0
    ctx.run_dir.write_json("mixture.json", {"adapter": spec, "adapters": names,
                                            "variant": recipe.variant})
    out: dict[str, Any] = {"task": task.name, "variant": recipe.variant, "adapters": names,
                           "adapter": spec, "leak_check": leak_check, **details}
    try:  # a searched spec was scored during the search: this is a cache hit
        info = loss.evaluate([spec])[0][1]
        out["user"] = {"n": len(user), "loss": info["ce"], "accuracy": info["accuracy"]}
    except BudgetExceeded as e:
        out["user"] = None
        ctx.notes["user"] = f"not scored: {e}"
    if recipe.materialize and isinstance(spec, dict):
        out["materialized"] = _materialize(ctx, recipe, spec)
    try:
        with ctx.progress() as bar:
            scores = label_scores(ctx.backend, prompts_of(task, recipe.template, test), words,
                                  adapter=spec, chunk=recipe.chunk, progress=bar,
                                  description="test")
        gold = np.array([e.label for e in test])
        ce, acc = ce_and_accuracy(scores, gold)
        out["test"] = {"n": len(test), "loss": ce, "accuracy": acc,
                       "correct": correct_string(np.asarray(scores).argmax(axis=1), gold)}
    except BudgetExceeded as e:
        out["test"] = None
        ctx.notes["test"] = f"not scored: {e}"
    out["wall_s"] = {"search": round(t_search, 2), "total": round(time.perf_counter() - t0, 2)}
    json.dumps(out)  # fail here, not in write_summary, if something is not JSON
    return out
