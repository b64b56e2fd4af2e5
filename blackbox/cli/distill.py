"""``bbx distill`` (LMTurk) and ``bbx predict`` (a distilled student, no LLM)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

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
    SchemaCommand,
    SeedOpt,
    ShotsOpt,
    TaskOpt,
    TaskSpecOpt,
    TestOpt,
    TokenizerOpt,
    TrainOpt,
    backend_config,
    given,
    schema_help,
    show_or_run,
    task_option,
)


def register(app: typer.Typer) -> None:
    """Add the ``distill`` and ``predict`` commands to ``app``."""

    @app.command("distill", cls=SchemaCommand)
    def distill_cmd(
        task: TaskOpt = None,
        train: TrainOpt = None,
        dev: DevOpt = None,
        test: TestOpt = None,
        labels: LabelsOpt = None,
        label_words: LabelWordsOpt = None,
        task_spec: TaskSpecOpt = None,
        template: Annotated[str | None, typer.Option(
            help=schema_help("task.templates", lead="Own data: the template."))] = None,
        allow_overlap: AllowOverlapOpt = None,
        drop_overlap: DropOverlapOpt = None,
        shots: ShotsOpt = None,
        workers: Annotated[int | None, typer.Option(help=schema_help("distill.workers"))]
        = None,
        acquisition: Annotated[str | None, typer.Option(
            help=schema_help("distill.acquisition"))] = None,
        aggregation: Annotated[str | None, typer.Option(
            help=schema_help("distill.aggregation"))] = None,
        batch: Annotated[int | None, typer.Option(help=schema_help("distill.batch"))] = None,
        budget: Annotated[int | None, typer.Option(help=schema_help("distill.queries"))]
        = None,
        demos_per_class: Annotated[int | None, typer.Option(
            help=schema_help("distill.demos_per_class"))] = None,
        pool: Annotated[Path | None, typer.Option(help=schema_help("distill.pool_file"))]
        = None,
        pool_limit: Annotated[int | None, typer.Option(help=schema_help("distill.pool_limit"))]
        = None,
        eval_limit: Annotated[int | None, typer.Option(help=schema_help("distill.eval_limit"))]
        = None,
        eval_workers: Annotated[bool | None, typer.Option(
            help=schema_help("distill.eval_workers"))] = None,
        seed: SeedOpt = None,
        backend: BackendOpt = None,
        model: ModelOpt = None,
        adapters: AdaptersOpt = None,
        base_url: BaseUrlOpt = None,
        api_key_env: ApiKeyEnvOpt = None,
        api: ApiOpt = None,
        tokenizer: TokenizerOpt = None,
        max_queries: MaxQueriesOpt = None,
        output_dir: OutputDirOpt = None,
        progress: Annotated[bool, typer.Option(help="Show progress and per-round lines.")]
        = True,
        json_out: JsonOpt = False,
        dry_run: DryRunOpt = False,
    ) -> None:
        """LMTurk: LLM workers label what active learning picks; a student learns from them.

        The student is saved as student.json in the run directory: use it with bbx predict.
        """
        from blackbox.api import distill, distill_recipe

        options = given(
            task=task_option(task, train, dev, test, labels, label_words, task_spec, template),
            allow_overlap=allow_overlap, drop_overlap=drop_overlap,
            shots=shots, workers=workers, acquisition=acquisition,
            aggregation=aggregation, batch=batch, budget=budget, demos_per_class=demos_per_class,
            pool_file=None if pool is None else str(pool), pool_limit=pool_limit,
            eval_limit=eval_limit, eval_workers=eval_workers, seed=seed,
            backend=backend_config(backend, model, base_url, api_key_env, api, tokenizer,
                                   adapters),
            max_queries=max_queries, output_dir=output_dir)
        show_or_run(distill_recipe, distill, options, dry_run, json_out, progress=progress)

    @app.command("predict")
    def predict_cmd(
        student: Annotated[Path, typer.Option(help="A student.json from a distill run.")],
        input: Annotated[Path, typer.Option(  # noqa: A002 - the option is --input
            help="Texts to label: .txt (one per line), .csv, .tsv or .jsonl (a text column).")],
        output: Annotated[Path | None, typer.Option(
            help="Write JSONL here (default: standard output).")] = None,
    ) -> None:
        """Label texts with a distilled student: no LLM, only its feature model."""
        import json

        from blackbox.api import predict

        rows = predict(student, input=input)
        lines = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
        if output is None:
            sys.stdout.write(lines)
        else:
            output.parent.mkdir(parents=True, exist_ok=True)
            output.write_text(lines, encoding="utf-8")
        scored = [r for r in rows if "gold" in r]
        msg = f"labelled {len(rows)} texts" + (f" -> {output}" if output else "")
        if scored:
            acc = sum(r["label"] == r["gold"] for r in scored) / len(scored)
            msg += f"; accuracy {acc:.4f} on the {len(scored)} with a gold label"
        typer.echo(msg, err=True)
