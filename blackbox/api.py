"""The library's entry points. Each CLI command is a thin wrapper over one function here."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from blackbox.backends import BACKENDS
from blackbox.backends.abilities import check_needs
from blackbox.backends.base import Backend
from blackbox.backends.metered import MISSING_PRICE, Budget, MeteredBackend
from blackbox.backends.pricing import config_pricing
from blackbox.errors import BbxError
from blackbox.methods import METHODS
from blackbox.methods.base import RunContext
from blackbox.paths import responses_dir
from blackbox.recipes import parse_recipe
from blackbox.recipes.loader import load_recipe_data
from blackbox.recipes.schema import PluginBackendConfig, RecipeBase
from blackbox.runs import RunDir, ledger_counts


@dataclass
class RunResult:
    """Where a run went and what it found."""

    run_dir: Path
    summary: dict[str, Any]


def make_backend(config: Any) -> Backend:
    """Instantiate the (unmetered) backend a recipe's ``backend:`` section describes."""
    options = config.model_dump(exclude={"kind", "pricing"})  # pricing is the meter's
    cls = BACKENDS.get(config.kind)
    schema = getattr(cls, "Config", None)  # a plugin backend's own options model
    if isinstance(config, PluginBackendConfig) and isinstance(schema, type) \
            and issubclass(schema, BaseModel):
        try:
            options = schema.model_validate(options).model_dump()
        except ValidationError as e:
            err = e.errors()[0]
            where = ".".join(str(x) for x in err["loc"])
            raise BbxError(f"backend '{config.kind}': {where}: {err['msg']}") from None
    return cls(**options)


def _recipe_name(recipe: RecipeBase) -> str:
    return recipe.name or f"{recipe.method}-{recipe.task_name}-s{recipe.seed}"  # type: ignore[attr-defined]


def run_recipe(
    recipe: RecipeBase | str | Path | dict[str, Any],
    overrides: list[str] | None = None,
    run_dir: str | Path | None = None,
    progress: bool = True,
    backend: Backend | None = None,
    close_backend: bool = True,
) -> RunResult:
    """Run one recipe end to end and return its summary.

    ``recipe`` is a validated recipe, a YAML path or a mapping; a mapping with ``steps:`` is
    a chain (:mod:`blackbox.chains`). ``run_dir`` reopens an existing run directory (resume);
    otherwise a fresh one is made under the recipe's ``output_dir``. ``backend`` replaces the
    recipe's backend (tests, embedding bbx in another program); with ``close_backend=False``
    it is borrowed, and left open at the end.
    """
    from blackbox.chains import is_chain, run_chain

    if isinstance(recipe, (str, Path)):
        data = load_recipe_data(recipe, overrides)
        if is_chain(data):
            return run_chain(data, run_dir=run_dir, progress=progress, source=f"recipe {recipe}",
                             backend=backend)
        recipe = parse_recipe(data, source=f"recipe {recipe}")
    elif isinstance(recipe, dict):
        if is_chain(recipe):
            return run_chain(recipe, run_dir=run_dir, progress=progress, backend=backend)
        recipe = parse_recipe(recipe)
    elif overrides:
        raise BbxError("overrides apply to recipe files; edit the recipe object instead")
    method = recipe.method  # type: ignore[attr-defined]
    run_fn = METHODS.get(method).run
    pricing, price_note = config_pricing(recipe.backend)
    if recipe.budget.max_usd is not None and pricing is None:
        raise BbxError(MISSING_PRICE)  # before any run directory or call
    data = recipe.model_dump(mode="json")
    fresh = run_dir is None
    rd = RunDir.open(data, recipe.output_dir, run_dir, name=_recipe_name(recipe),
                     normalize=lambda saved: parse_recipe(saved).model_dump(mode="json"))
    t0 = time.perf_counter()
    ledger_before = ledger_counts(rd.ledger)["rows"]
    metered: MeteredBackend | None = None
    ctx: RunContext | None = None
    try:
        inner = backend if backend is not None else make_backend(recipe.backend)
        # refuse before anything is paid: a needed ability the backend lacks is one line
        check_needs(method, recipe.abilities_needed(), inner)
        metered = MeteredBackend(
            inner,
            cache_dir=recipe.cache_dir or responses_dir(),
            ledger_path=rd.ledger,
            budget=Budget(recipe.budget.max_queries, recipe.budget.max_tokens,
                          recipe.budget.max_usd),
            pricing=pricing,
        )
        ctx = RunContext(backend=metered, run_dir=rd, seed=recipe.seed, show_progress=progress,
                         allow_overlap=recipe.allow_overlap,
                         drop_overlap=recipe.drop_overlap, label=method)
        ctx.notes.update(task_notes(recipe))
        mode = inner.capabilities.label_logprobs
        if mode in ("topk", "generate") and mode in recipe.score_losses:
            # what this method loses where the API gives no exact label-word log-probs
            ctx.notes["label_scores"] = f"{mode}: {recipe.score_losses[mode]}"
        if price_note:
            ctx.notes["pricing"] = price_note
        rd.write_manifest(method=method, seed=recipe.seed, task=recipe.task_name,
                          backend={"kind": inner.name, "fingerprint": inner.fingerprint,
                                   "capabilities": inner.capabilities.as_dict()})
        summary = run_fn(recipe, ctx)
    except (Exception, KeyboardInterrupt) as e:
        _failed(rd, fresh, e, metered, ctx, time.perf_counter() - t0)
        raise
    finally:
        if metered is not None:
            metered.close(close_inner=close_backend)
    summary = {"method": method, **summary,
               "usage": metered.usage.as_dict(priced=pricing is not None),
               "ledger_rows_this_run": ledger_counts(rd.ledger)["rows"] - ledger_before,
               "run_wall_s": round(time.perf_counter() - t0, 2)}
    if ctx.notes:
        summary["notes"] = ctx.notes
    rd.write_summary(summary)
    return RunResult(rd.path, summary)


@dataclass
class RunReport:
    """A finished run as ``bbx report`` shows it: the summary (with the ledger's counts)."""

    run_dir: Path
    summary: dict[str, Any]

    def renderable(self) -> Any:
        """The rich renderable a person reads (:mod:`blackbox.report`)."""
        from blackbox.report import render

        return render(self.summary, self.run_dir)


def report(run_dir: str | Path) -> RunReport:
    """A finished run's report (``bbx report``): its summary plus the ledger's row counts;
    an unfinished run (no ``summary.json``) is a user error naming how to resume it."""
    from blackbox.runs import read_run

    run = read_run(run_dir)
    if run["summary"] is None:
        raise BbxError(f"run {run_dir} has not finished (no summary.json): resume it with "
                       f"bbx run RECIPE --run-dir {run_dir}")
    summary = {**run["summary"], "ledger": ledger_counts(Path(run_dir) / "ledger.jsonl")}
    recipe = run["recipe"] if isinstance(run["recipe"], dict) else {}
    if "method" not in summary and recipe.get("method"):
        # a failed run's summary does not say its method; its recipe does (its renderer then
        # shows the failure with whatever the run got to)
        summary["method"] = recipe["method"]
    return RunReport(Path(run_dir), summary)


def plot(run_dirs: list[str | Path], out: str | Path | None = None) -> Path:
    """``bbx plot`` as a function: the curves of one or more run directories on one axis
    (:func:`blackbox.plots.plot_runs`); returns the PNG's path."""
    from blackbox.plots import plot_runs

    return plot_runs(run_dirs, out)


def task_notes(recipe: RecipeBase) -> dict[str, str]:
    """What a run's notes say about where its splits came from, for a user's own files."""
    task = recipe.get_task()
    if task.source == "files" and "dev" not in task.files and "train" in task.files:
        return {"dev_split": f"no dev file: a seeded {task.dev_fraction:.0%} of each train "
                             "class is the dev set (seed: the recipe seed), the rest is train"}
    if task.source == "file":
        return {"test_split": f"one data file: a fixed {task.test_fraction:.0%} of each class "
                              "is the test set; train and dev are drawn from the rest"}
    return {}


def _failed(rd: RunDir, fresh: bool, error: BaseException, metered: MeteredBackend | None,
            ctx: RunContext | None, wall: float) -> None:
    """A run that failed: gone if it paid for nothing, else a ``status: failed`` summary
    (the ledger and cache keep what was paid for; resuming the run directory reuses it)."""
    import shutil

    paid = ledger_counts(rd.ledger)["paid"]
    if fresh and paid == 0:
        shutil.rmtree(rd.path, ignore_errors=True)
        return
    message = str(error) or type(error).__name__
    rd.write_summary({"status": "failed", "error": message,
                      "usage": metered.usage.as_dict(priced=metered.pricing is not None)
                      if metered is not None else {},
                      "paid_rows": paid, "run_wall_s": round(wall, 2),
                      **({"notes": ctx.notes} if ctx is not None and ctx.notes else {})})


def _build(method: str, source: str, options: dict[str, Any], fields: dict[str, Any],
           backend: dict[str, Any] | None = None,
           max_queries: int | None = None) -> RecipeBase:
    """Validate one method's recipe from what was given: an option left ``None`` is not
    given, and the recipe schema's default applies (the schema is the only home of
    defaults)."""
    data: dict[str, Any] = {"method": method,
                            **{k: v for k, v in {**options, **fields}.items() if v is not None}}
    if backend is not None:
        data["backend"] = backend
    if max_queries is not None:
        data["budget"] = {**(data.get("budget") or {}), "max_queries": max_queries}
    return parse_recipe(data, source=source)


def dry_run(recipe: RecipeBase | str | Path | dict[str, Any],
            overrides: list[str] | None = None) -> dict[str, Any]:
    """What a recipe (or a chain) will pay, before it pays (``--dry-run``): per step its
    stages' projected queries, tokens and dollars, and the total. Nothing is paid: no verb
    is called, no run directory is made (:mod:`blackbox.dryrun`)."""
    from blackbox.dryrun import dry_run as project

    return project(recipe, overrides=overrides)


def evaluate_recipe(
    task: str | dict[str, Any] | None = None,
    split: str | None = None,
    template: int | str | None = None,
    prompt: str | None = None,
    limit: int | None = None,
    seed: int | None = None,
    backend: dict[str, Any] | None = None,
    max_queries: int | None = None,
    **fields: Any,
) -> RecipeBase:
    """The ``method: eval`` recipe of :func:`evaluate` (validated, not run): plan it with
    :func:`dry_run` or run it with :func:`run_recipe`. Options left ``None`` take the
    recipe's defaults (:class:`blackbox.methods.eval.recipe.EvalRecipe`)."""
    return _build("eval", "eval", {"task": task, "split": split, "template": template,
                                   "prompt": prompt, "limit": limit, "seed": seed},
                  fields, backend, max_queries)


def evaluate(task: str | dict[str, Any] | None = None, run_dir: str | Path | None = None,
             progress: bool = True, **options: Any) -> RunResult:
    """Accuracy of a template (+ prompt) on a task split: ``bbx eval`` as a function.
    ``options`` are :func:`evaluate_recipe`'s (``split``, ``template``, ``prompt``, ``limit``,
    ``seed``, ``backend``, ``max_queries``, any other recipe key)."""
    return run_recipe(evaluate_recipe(task, **options), run_dir=run_dir, progress=progress)


def list_available() -> dict[str, list[str]]:
    """Names of the optimizers, backends, methods, tasks and shipped recipes."""
    from blackbox.data.tasks import TASKS
    from blackbox.optim import optimizer_names
    from blackbox.paths import repo_root

    root = repo_root()
    recipes = sorted(str(p.relative_to(root)) for p in (root / "recipes").glob("*.yaml")) \
        if root is not None else []
    return {
        "optimizers": optimizer_names() + ["ng:<any nevergrad optimizer>"],
        "backends": BACKENDS.names(),
        "methods": METHODS.names(),
        "tasks": [f"{n}  ({t.description})" for n, t in TASKS.items()],
        "recipes": recipes,
    }


def distill_recipe(
    task: str | dict[str, Any] | None = None,
    shots: int | None = None,
    workers: int | None = None,
    acquisition: str | None = None,
    batch: int | None = None,
    budget: int | None = None,
    seed: int | None = None,
    backend: dict[str, Any] | None = None,
    max_queries: int | None = None,
    **fields: Any,
) -> RecipeBase:
    """The ``method: distill`` recipe of :func:`distill` (validated, not run). ``budget`` is
    the annotation budget in LLM queries (workers x items; the recipe's ``queries``),
    ``max_queries`` the hard cap on paid backend calls of any kind; ``fields`` are any other
    recipe keys. Options left ``None`` take the recipe's defaults
    (:class:`blackbox.methods.lmturk.recipe.LMTurkRecipe`)."""
    return _build("distill", "distill",
                  {"task": task, "shots": shots, "workers": workers,
                   "acquisition": acquisition, "batch": batch, "queries": budget,
                   "seed": seed}, fields, backend, max_queries)


def distill(task: str | dict[str, Any] | None = None, run_dir: str | Path | None = None,
            progress: bool = True, **options: Any) -> RunResult:
    """LMTurk as a function (``bbx distill``): few-shot LLM workers label what active learning
    picks, within ``budget`` LLM queries (workers x items); the run directory holds the
    distilled ``student.json``. ``options`` are :func:`distill_recipe`'s."""
    return run_recipe(distill_recipe(task, **options), run_dir=run_dir, progress=progress)


def predict(
    student: str | Path,
    texts: list[str] | None = None,
    input: str | Path | None = None,  # noqa: A002 - mirrors the CLI's --input
) -> list[dict[str, Any]]:
    """Label ``texts`` (or the texts of the ``input`` file) with a distilled student, no LLM.

    Each row: ``text``, ``label``, ``confidence``, ``probs``; plus ``gold`` where the input file
    has a label column naming the student's classes.
    """
    from blackbox.methods.lmturk.student import predict_rows

    return predict_rows(student, texts=texts, input=input)


def decode_fit_recipe(
    task: str | dict[str, Any] | None = None,
    shots: int | None = None,
    seed: int | None = None,
    prompts: int | None = None,
    decoder: str | None = None,
    backend: dict[str, Any] | None = None,
    decoder_out: str | Path | None = None,
    max_queries: int | None = None,
    **fields: Any,
) -> RecipeBase:
    """The ``method: decode``, ``action: fit`` recipe of :func:`decode_fit` (validated, not
    run). ``fields`` are any other recipe keys (``compare``, ``test_limit``, ``neighbours``,
    ...). Options left ``None`` take the recipe's defaults
    (:class:`blackbox.methods.mpd.recipe.DecodeRecipe`)."""
    return _build("decode", "decode fit",
                  {"action": "fit", "task": task, "shots": shots, "seed": seed,
                   "prompts": prompts, "decoder": decoder,
                   "decoder_out": None if decoder_out is None else str(decoder_out)},
                  fields, backend, max_queries)


def decode_fit(task: str | dict[str, Any] | None = None, run_dir: str | Path | None = None,
               progress: bool = True, **options: Any) -> RunResult:
    """Fit a Multi-Prompting Decoder (``decoder="mpd"``) or DecT on a k-shot split:
    ``bbx decode fit`` as a function. The decoder file goes to ``decoder_out`` (default
    ``<run dir>/decoder.safetensors``; the summary's ``decoder_file``). ``options`` are
    :func:`decode_fit_recipe`'s."""
    return run_recipe(decode_fit_recipe(task, **options), run_dir=run_dir, progress=progress)


def decoder_backend(decoder: str | Path) -> dict[str, Any] | None:
    """The ``backend:`` section a decoder file was fit on (``None``: the file records none)."""
    from blackbox.methods.mpd.bundle import load_decoder

    return load_decoder(decoder).backend or None


def decode_predict(
    decoder: str | Path,
    input: str | Path,  # noqa: A002 - mirrors the CLI's --input
    output: str | Path | None = None,
    backend: dict[str, Any] | None = None,
    progress: bool = True,
    **fields: Any,
) -> RunResult:
    """Label the texts of a JSONL file (``input``) with a fitted decoder: ``bbx decode
    predict`` as a function. ``backend`` defaults to the one the decoder was fit on (it is
    recorded in the file); a ``backend`` of that same kind only overrides the options it
    names (a new ``base_url`` keeps the recorded model). Predictions go to
    ``<run dir>/predictions.jsonl`` and ``output``."""
    recorded = decoder_backend(decoder)
    if backend is None:
        backend = recorded
    elif recorded and backend.get("kind") == recorded.get("kind"):
        backend = {**recorded, **backend}
    data: dict[str, Any] = {"method": "decode", "action": "predict", "name": "decode-predict",
                            "decoder_file": str(decoder), "input": str(input), **fields}
    if output is not None:
        data["output"] = str(output)
    if backend is not None:
        data["backend"] = backend
    return run_recipe(parse_recipe(data, source="decode predict"), progress=progress)


def search_prompt_recipe(
    task: str | dict[str, Any] | None = None,
    shots: int | None = None,
    seed: int | None = None,
    search: str | None = None,
    budget: int | None = None,
    clusters: int | None = None,
    percentile: float | None = None,
    length: int | None = None,
    prune: str | None = None,
    backend: dict[str, Any] | None = None,
    max_queries: int | None = None,
    **fields: Any,
) -> RecipeBase:
    """The ``method: search-prompt`` recipe of :func:`search_prompt` (validated, not run):
    cluster the candidate vocabulary into ``clusters`` (0: none), prune it to the tokens above
    the ``percentile`` (``prune``: influence | random | none), then ``search`` (greedy |
    genetic | pso | random | manual | any optimizer) for a ``length``-token prompt within
    ``budget`` train queries (pruning + search, cached or not; the recipe's ``queries``).
    ``max_queries`` is the hard cap on paid calls; ``fields`` are any other recipe keys
    (``train_batch``, ``test_limit``, ``search_options``, ...). Options left ``None`` take the
    recipe's defaults (:class:`blackbox.methods.claps.recipe.ClapsRecipe`)."""
    return _build("search-prompt", "search-prompt",
                  {"task": task, "shots": shots, "seed": seed, "search": search,
                   "queries": budget, "clusters": clusters, "percentile": percentile,
                   "length": length, "prune": prune}, fields, backend, max_queries)


def search_prompt(task: str | dict[str, Any] | None = None,
                  run_dir: str | Path | None = None, progress: bool = True,
                  **options: Any) -> RunResult:
    """ClaPS prompt search as a function (``bbx search-prompt``); ``run_dir`` resumes a run.
    ``options`` are :func:`search_prompt_recipe`'s."""
    return run_recipe(search_prompt_recipe(task, **options), run_dir=run_dir,
                      progress=progress)


def merge_recipe(
    task: str | dict[str, Any] | None = None,
    variant: str | None = None,
    seed: int | None = None,
    adapters: list[str] | None = None,
    user_examples: int | None = None,
    test_limit: int | None = None,
    backend: dict[str, Any] | None = None,
    max_queries: int | None = None,
    **fields: Any,
) -> RecipeBase:
    """The ``method: merge`` recipe of :func:`merge` (validated, not run): search
    per-adapter keep-fractions α and signed scales β over the backend's adapter repository
    (``adapters``: default all), on ``user_examples`` examples of ``task``, then score the
    best mixture on ``test_limit`` held-out test examples. ``variant`` picks the full
    method, an ablation or a baseline (evo, evo-no-sign, evo-no-denoise, evo-no-scale,
    lorahub, uniform, best-single, base, ties, dare); ``fields`` are any other recipe keys
    (``stage1``, ``stage2``, ``l1``, ...; a stage given in part keeps its other defaults).
    Options left ``None`` take the recipe's defaults
    (:class:`blackbox.methods.merge.recipe.MergeRecipe`)."""
    return _build("merge", "merge",
                  {"task": task, "variant": variant, "seed": seed, "adapters": adapters,
                   "user_examples": user_examples, "test_limit": test_limit},
                  fields, backend, max_queries)


def merge(task: str | dict[str, Any] | None = None, run_dir: str | Path | None = None,
          progress: bool = True, **options: Any) -> RunResult:
    """Evo-Merging as a function (``bbx merge``); the run directory's ``mixture.json`` holds
    the adapter spec found. ``options`` are :func:`merge_recipe`'s."""
    return run_recipe(merge_recipe(task, **options), run_dir=run_dir, progress=progress)


def serve(
    model: str = "default",
    adapters: str | None = None,
    host: str = "127.0.0.1",
    port: int = 8000,
    api_key: str | None = None,
    model_name: str | None = None,
    device: str = "auto",
    dtype: str = "auto",
    batch_size: int = 32,
    max_batch: int = 64,
    max_wait_ms: float = 4.0,
    embed_model: str = "minilm",
    allow_adapter_paths: bool = False,
    threads: int | None = None,
    log_level: str = "info",
    max_queue: int = 256,
) -> None:
    """``bbx serve`` as a function: an OpenAI-compatible server (plus bbx extensions) over a
    local model and an optional folder of PEFT LoRA adapters; blocks until interrupted.
    With ``api_key`` every route but ``/health`` needs ``Authorization: Bearer <key>``;
    ``max_queue`` bounds the generation sequences waiting to decode (then 503s)."""
    import logging
    import os
    import sys

    from blackbox.backends.local import LocalBackend
    from blackbox.serve.app import create_app
    from blackbox.serve.app import serve as run_app

    if "torch" not in sys.modules:
        # Idle OpenMP threads sleep instead of spinning. On a CPU shared with other work
        # (the server's own HTTP threads included) spinning threads fight for the cores:
        # measured on 2 busy cores, a one-prompt forward took 1.37 s spinning, 0.33 s passive.
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    if threads:
        import torch

        torch.set_num_threads(threads)
    if host not in ("127.0.0.1", "localhost", "::1") and not api_key:
        logging.getLogger("blackbox.serve").warning(
            "serving on %s without an API key: anyone who can reach it can use it", host)
    backend = LocalBackend(model=model, device=device, dtype=dtype, batch_size=batch_size,
                           embed_model=embed_model, adapters=adapters)
    app = create_app(backend, api_key=api_key, model_name=model_name, max_batch=max_batch,
                     max_wait_ms=max_wait_ms, allow_adapter_paths=allow_adapter_paths,
                     max_queue=max_queue)
    run_app(app, host=host, port=port, log_level=log_level)


def bench(base_url: str, workload: str = "chat", run_dir: str | Path | None = None,
          **options: Any) -> RunResult:
    """``bbx bench`` as a function: load an OpenAI-compatible server (bbx serve, llama.cpp,
    vLLM) and measure it; the run directory holds ``summary.json`` and ``requests.jsonl``.

    ``workload``: ``chat`` | ``completion`` (streamed generation: TTFT, ITL, TPOT, e2e,
    output tokens/s, fluidity-index) or ``next-token`` (``/v1/completions`` with
    ``max_tokens=1, logprobs=5``) | ``label-logprobs`` | ``score`` | ``hidden-states`` |
    ``mixture`` (bbx routes; items/s and latency; ``mixture``: label log-probs under a new
    random adapter mixture per request, mixtures/s). ``options`` (see
    :class:`blackbox.bench.BenchConfig`): ``mode`` (``sync`` | ``concurrency`` with
    ``concurrency`` | ``rate`` with a Poisson ``rate`` and ``seed``), the bounds ``requests``
    and ``duration`` (s), ``max_tokens``, ``temperature``, ``task``, ``prompt_words``,
    ``repeat``, ``offset`` (the first text to send), ``batch`` (prompts per scoring
    request), ``warmup`` (untimed requests first), ``slo``
    (``"ttft=500ms,tpot=100ms,e2e=2s"``), ``fluidity`` (``"prefill=1s,decode=100ms"``;
    default: the SLO's ttft and tpot), ``model`` (default: the server's first),
    ``adapter``, ``mixture_adapters``, ``api_key_env``, ``timeout``, ``output_dir``."""
    from blackbox.bench import BenchConfig
    from blackbox.bench.runner import run_bench

    path, summary = run_bench(BenchConfig(base_url=base_url, workload=workload, **options),
                              run_dir=run_dir)
    return RunResult(path, summary)


def check_task(task: str | dict[str, Any] | None = None, seed: int | None = None,
               shots: int | None = None) -> dict[str, Any]:
    """What bbx understands of a task (``bbx task check``): classes and label words, per split
    the file, size and count per class, texts repeated within a split, and texts shared
    between splits (the leak guard refuses a run whose fit texts are test texts). Options
    left ``None`` take the recipe's defaults."""
    from collections import Counter

    from blackbox.data import load_split
    from blackbox.data.leak import normalize, overlaps

    recipe = _build("eval", "task", {"task": task, "seed": seed, "shots": shots}, {})
    t = recipe.get_task()
    seed, shots = recipe.seed, recipe.shots
    splits: dict[str, Any] = {}
    names = [s for s in ("train", "dev", "test", "pool")
             if t.source != "files" or s in t.files or (s == "dev" and "train" in t.files)]
    for name in names:
        try:
            examples = load_split(t, name, shots, seed)
        except BbxError:
            if name == "pool":  # most tasks have none; a missing pool is not a problem here
                continue
            raise
        counts = Counter(e.label for e in examples)
        keys = Counter(normalize(e.text) for e in examples)
        splits[name] = {
            "file": t.files.get(name) or t.path or f"({t.source})",
            "n": len(examples),
            "per_class": {lab: counts.get(c, 0) for c, lab in enumerate(t.labels)
                          if name != "pool" or counts},
            "duplicates": sum(n - 1 for n in keys.values() if n > 1),
        }
        splits[name]["_examples"] = examples
    pairs = [(a, b) for i, a in enumerate(splits) for b in list(splits)[i + 1:]]
    shared = [o for a, b in pairs
              for o in overlaps({a: splits[a]["_examples"]}, {b: splits[b]["_examples"]})]
    for info in splits.values():
        del info["_examples"]
    return {"task": t.name, "source": t.source, "labels": list(t.labels),
            "label_words": list(t.label_words), "templates": list(t.templates),
            "splits": splits, "overlap": shared, "notes": task_notes(recipe)}
