"""``bbx search-prompt``: ClaPS prompt search (and its baselines) from the shell."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from blackbox.cli.common import (
    AdaptersOpt,
    AllowOverlapOpt,
    ApiKeyEnvOpt,
    ApiOpt,
    BackendOpt,
    BaseUrlOpt,
    DevOpt,
    DropOverlapOpt,
    DryRunOpt,
    JsonOpt,
    LabelsOpt,
    LabelWordsOpt,
    MaxQueriesOpt,
    ModelOpt,
    OutputDirOpt,
    ProgressOpt,
    RunDirOpt,
    SchemaCommand,
    SeedOpt,
    ShotsOpt,
    TaskOpt,
    TaskSpecOpt,
    TestOpt,
    TokenizerOpt,
    TrainOpt,
    backend_config,
    console,
    given,
    schema_help,
    show_or_run,
    task_option,
    template_option,
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

    @app.command("search-prompt", cls=SchemaCommand)
    def search_prompt_cmd(
        task: TaskOpt = None,
        train: TrainOpt = None,
        dev: DevOpt = None,
        test: TestOpt = None,
        labels: LabelsOpt = None,
        label_words: LabelWordsOpt = None,
        task_spec: TaskSpecOpt = None,
        allow_overlap: AllowOverlapOpt = None,
        drop_overlap: DropOverlapOpt = None,
        shots: ShotsOpt = None,
        seed: SeedOpt = None,
        search: Annotated[str | None, typer.Option(
            help=schema_help("search-prompt.search"))] = None,
        budget: Annotated[int | None, typer.Option(
            help=schema_help("search-prompt.queries"))] = None,
        clusters: Annotated[int | None, typer.Option(
            help=schema_help("search-prompt.clusters"))] = None,
        percentile: Annotated[float | None, typer.Option(
            help=schema_help("search-prompt.percentile"))] = None,
        length: Annotated[int | None, typer.Option(
            help=schema_help("search-prompt.length"))] = None,
        prune: Annotated[str | None, typer.Option(
            help=schema_help("search-prompt.prune"))] = None,
        train_batch: Annotated[int | None, typer.Option(
            help=schema_help("search-prompt.train_batch"))] = None,
        population: Annotated[int | None, typer.Option(
            help=schema_help("search-prompt.population"))] = None,
        template: Annotated[str | None, typer.Option(
            help=schema_help("search-prompt.template"))] = None,
        test_limit: Annotated[int | None, typer.Option(
            help=schema_help("search-prompt.test_limit"))] = None,
        backend: BackendOpt = None,
        model: ModelOpt = None,
        adapters: AdaptersOpt = None,
        base_url: BaseUrlOpt = None,
        api_key_env: ApiKeyEnvOpt = None,
        api: ApiOpt = None,
        tokenizer: TokenizerOpt = None,
        max_queries: MaxQueriesOpt = None,
        run_dir: RunDirOpt = None,
        output_dir: OutputDirOpt = None,
        progress: ProgressOpt = True,
        json_out: JsonOpt = False,
        dry_run: DryRunOpt = False,
    ) -> None:
        """ClaPS: cluster the vocabulary, prune it to influential tokens, search a prompt.

        Baselines: --search manual | --clusters 0 --prune none --search random | --prune random

        Prints the best prompt, its train/dev/test accuracy and the queries paid and cached.
        """
        from blackbox.api import search_prompt, search_prompt_recipe

        options = given(
            task=task_option(task, train, dev, test, labels, label_words, task_spec, template),
            allow_overlap=allow_overlap, drop_overlap=drop_overlap,
            shots=shots, seed=seed, search=search, budget=budget,
            clusters=clusters, percentile=percentile, length=length, prune=prune,
            backend=backend_config(backend, model, base_url, api_key_env, api, tokenizer,
                                   adapters),
            max_queries=max_queries, train_batch=train_batch, test_limit=test_limit,
            output_dir=output_dir, template=template_option(template), population=population)
        show_or_run(search_prompt_recipe, search_prompt, options, dry_run, json_out,
                    render_claps, run_dir=run_dir, progress=progress)
