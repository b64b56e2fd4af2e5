"""``bbx search-prompt``: ClaPS prompt search (and its baselines) from the shell."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from blackbox.cli.common import (
    AllowOverlapOpt,
    ApiKeyEnvOpt,
    ApiOpt,
    BaseUrlOpt,
    DevOpt,
    LabelsOpt,
    LabelWordsOpt,
    TaskOpt,
    TaskSpecOpt,
    TestOpt,
    TokenizerOpt,
    TrainOpt,
    backend_config,
    console,
    emit,
    task_option,
)


def render_claps(summary: dict[str, Any], run_dir: Path | str) -> None:
    """The few lines a user wants: best prompt, accuracies, queries, where the run went."""
    from rich.table import Table

    def pct(v: Any) -> str:
        return f"{100 * v:.1f}%" if isinstance(v, (int, float)) else "-"

    q, usage, vocab = summary.get("queries", {}), summary.get("usage", {}), summary.get("vocab")
    test = summary.get("test") or {}
    table = Table(title=f"bbx search-prompt · {summary.get('task')} · {summary.get('searcher')}",
                  show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value", overflow="fold")
    table.add_row("best prompt", repr(summary.get("best_prompt", "")))
    train = summary.get("train") or {}
    table.add_row("accuracy", f"train {pct(train.get('accuracy'))} (n={train.get('n')})  ·  "
                  f"dev {pct((summary.get('dev') or {}).get('accuracy'))}  ·  "
                  f"test {pct(test.get('accuracy'))} (n={test.get('n', '-')})")
    if vocab:
        table.add_row("vocabulary", f"{vocab.get('candidates')} candidates → "
                      f"{vocab.get('clustered')} clustered → {vocab.get('pruned')} pruned")
    table.add_row("train queries", f"{q.get('train_total')} of {q.get('budget')} "
                  f"(pruning {q.get('pruning')}, search {q.get('search')})")
    table.add_row("backend calls", f"{usage.get('queries')} paid, {usage.get('cached')} cached")
    if summary.get("stopped"):
        table.add_row("stopped early", ", ".join(f"{k}: {v}"
                                                 for k, v in summary["stopped"].items()))
    table.add_row("wall time", f"{(summary.get('wall_s') or {}).get('total')} s")
    table.add_row("run_dir", str(run_dir))
    console().print(table)


def register(app: typer.Typer) -> None:
    """Add the ``search-prompt`` command to ``app``."""

    @app.command("search-prompt")
    def search_prompt_cmd(
        task: TaskOpt = "sst-2",
        train: TrainOpt = None,
        dev: DevOpt = None,
        test: TestOpt = None,
        labels: LabelsOpt = None,
        label_words: LabelWordsOpt = None,
        task_spec: TaskSpecOpt = None,
        allow_overlap: AllowOverlapOpt = False,
        shots: Annotated[int, typer.Option(help="Examples per class in train and dev.")] = 16,
        seed: Annotated[int, typer.Option(help="Seed (k-shot split, train batch, search).")]
        = 42,
        search: Annotated[str, typer.Option(
            help="greedy | genetic | pso | random | manual (no prompt) | any optimizer "
                 "(ng:<Name>, bbx ls optimizers).")] = "genetic",
        budget: Annotated[int, typer.Option(
            help="Train queries for pruning + search (one prompt on one example; cached "
                 "or not).")] = 20000,
        clusters: Annotated[int, typer.Option(
            help="k-means clusters over the vocabulary (0: no clustering).")] = 2000,
        percentile: Annotated[float, typer.Option(
            help="Keep tokens whose influence is above this percentile.")] = 90.0,
        length: Annotated[int, typer.Option(help="Prompt length in tokens.")] = 5,
        prune: Annotated[str, typer.Option(
            help="influence (ClaPS) | random (baseline) | none.")] = "influence",
        train_batch: Annotated[int | None, typer.Option(
            help="Train examples each prompt is scored on (default: the whole split).")]
        = None,
        population: Annotated[int | None, typer.Option(
            help="Population of genetic / pso (paper: 128).")] = None,
        template: Annotated[str, typer.Option(
            help="Template index, or a template with {text} (and {prompt}).")] = "0",
        test_limit: Annotated[int | None, typer.Option(
            help="Score the winner on a fixed seeded test subset of N.")] = None,
        backend: Annotated[str, typer.Option(help="Backend kind: local | fake | remote.")]
        = "local",
        model: Annotated[str, typer.Option(help="Local model: 'default' (SmolLM2-135M), an HF "
                                           "folder or a .gguf file; remote: the model name.")]
        = "default",
        base_url: BaseUrlOpt = None,
        api_key_env: ApiKeyEnvOpt = "OPENAI_API_KEY",
        api: ApiOpt = "auto",
        tokenizer: TokenizerOpt = None,
        max_queries: Annotated[int | None, typer.Option(
            help="Hard cap on paid backend calls of any kind.")] = None,
        run_dir: Annotated[Path | None, typer.Option(
            help="Resume this run directory (finished trials are replayed).")] = None,
        output_dir: Annotated[str, typer.Option(help="Where run directories go.")]
        = "results/runs",
        progress: Annotated[bool, typer.Option(help="Show progress bars.")] = True,
        json_out: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")]
        = False,
    ) -> None:
        """ClaPS: cluster the vocabulary, prune it to influential tokens, search a prompt.

        Baselines: --search manual | --clusters 0 --prune none --search random | --prune random

        Prints the best prompt, its train/dev/test accuracy and the queries paid and cached.
        """
        from blackbox.api import search_prompt

        backend_cfg = backend_config(backend, model, base_url, api_key_env, api, tokenizer)
        result = search_prompt(
            task=task_option(task, train, dev, test, labels, label_words, task_spec, template),
            allow_overlap=allow_overlap, shots=shots, seed=seed, search=search, budget=budget,
            clusters=clusters, percentile=percentile, length=length, prune=prune,
            backend=backend_cfg, max_queries=max_queries, run_dir=run_dir, progress=progress,
            train_batch=train_batch, test_limit=test_limit, output_dir=output_dir,
            template=int(template) if template.isdigit() else template, population=population,
        )
        if json_out:
            emit(result.summary, result.run_dir, json_out=True)
        else:
            render_claps(result.summary, result.run_dir)
