"""``bbx merge`` (Evo-Merging and its baselines) and ``bbx zoo build`` from the shell."""

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
)

zoo_app = typer.Typer(name="zoo", help="The adapter repository bbx merge searches over.",
                      no_args_is_help=True)


def render_merge(summary: dict[str, Any], run_dir: Path | str) -> None:
    """The mixture found, its user/test accuracy and loss, what it cost."""
    from rich.table import Table

    def res(d: Any) -> str:
        if not d:
            return "-"
        return f"accuracy {100 * d['accuracy']:.1f}%  loss {d['loss']:.4f}  (n={d['n']})"

    table = Table(title=f"bbx merge · {summary.get('task')} · {summary.get('variant')}",
                  show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value", overflow="fold")
    spec = summary.get("adapter")
    if isinstance(spec, dict):
        for n, a, b in zip(spec["adapters"], spec["alpha"], spec["beta"], strict=True):
            table.add_row(n, f"α {a:.3f}  β {b:+.3f}")
    else:
        table.add_row("adapter", str(spec))
    table.add_row("user data", res(summary.get("user")))
    table.add_row("test", res(summary.get("test")))
    for name, st in (summary.get("stages") or {}).items():
        table.add_row(name, f"{st['evaluations']} evaluations ({st['optimizer']}), "
                            f"stopped: {st['stopped']}")
    usage = summary.get("usage", {})
    table.add_row("backend calls", f"{usage.get('queries')} paid, {usage.get('cached')} cached")
    table.add_row("wall time", f"{(summary.get('wall_s') or {}).get('total')} s")
    table.add_row("run_dir", str(run_dir))
    console().print(table)


@zoo_app.command("build")
def zoo_build_cmd(
    out: Annotated[Path | None, typer.Option(help="Zoo folder (default: <cache>/zoo/<model>).")]
    = None,
    model: Annotated[str, typer.Option(help="Base model: 'default' or an HF folder.")]
    = "default",
    steps: Annotated[int, typer.Option(help="Training steps per adapter.")] = 100,
    seed: Annotated[int, typer.Option(help="Zoo seed.")] = 0,
    only: Annotated[list[str] | None, typer.Option(help="Build only these adapters.")] = None,
) -> None:
    """Fine-tune the default LoRA zoo (r=8 on all projections) on the source tasks; skips
    adapters already built. Minutes per adapter on a CPU."""
    from blackbox.methods.merge.zoo import TrainConfig, build_zoo

    info = build_zoo(out, model=model, cfg=TrainConfig(steps=steps, seed=seed),
                     only=list(only) if only else None)
    typer.echo(f"zoo: {info['folder']}  ({len(info['adapters'])} adapters)")


@zoo_app.command("path")
def zoo_path_cmd(
    model: Annotated[str, typer.Option(help="Base model: 'default' or an HF folder.")]
    = "default",
) -> None:
    """Print the zoo folder of a model (for bbx serve --adapters "$(bbx zoo path)")."""
    from blackbox.methods.merge.zoo import default_zoo_dir

    typer.echo(str(default_zoo_dir(model)))


def register(app: typer.Typer) -> None:
    """Add ``merge`` and the ``zoo`` group to ``app``."""
    app.add_typer(zoo_app, name="zoo")

    @app.command("merge", cls=SchemaCommand)
    def merge_cmd(
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
        variant: Annotated[str | None, typer.Option(help=schema_help("merge.variant"))] = None,
        seed: SeedOpt = None,
        adapter: Annotated[list[str] | None, typer.Option(
            help=schema_help("merge.adapters", note="Repeat for several."))] = None,
        user_examples: Annotated[int | None, typer.Option(
            help=schema_help("merge.user_examples"))] = None,
        test_limit: Annotated[int | None, typer.Option(help=schema_help("merge.test_limit"))]
        = None,
        stage1: Annotated[int | None, typer.Option(
            help=schema_help("merge.stage1.evaluations", lead="Stage-1 (α) evaluations:"))]
        = None,
        stage2: Annotated[int | None, typer.Option(
            help=schema_help("merge.stage2.evaluations", lead="Stage-2 (β) evaluations:"))]
        = None,
        popsize: Annotated[int | None, typer.Option(
            help=schema_help("merge.stage1.popsize", lead="Both stages:"))] = None,
        optimizer: Annotated[str | None, typer.Option(
            help=schema_help("merge.stage1.optimizer", lead="Both stages:"))] = None,
        materialize: Annotated[bool | None, typer.Option(
            help=schema_help("merge.materialize"))] = None,
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
        """Evo-Merging: search per-adapter sparsity α and signed scale β over the server's
        LoRA adapters, using only its answers; score the mixture on held-out test data."""
        from blackbox.api import merge, merge_recipe

        stage = given(optimizer=optimizer, popsize=popsize)  # a stage in part: the rest stays
        options = given(
            task=task_option(task, train, dev, test, labels, label_words, task_spec, template),
            allow_overlap=allow_overlap, variant=variant, seed=seed,
            adapters=list(adapter) if adapter else None, user_examples=user_examples,
            test_limit=test_limit,
            backend=backend_config(backend, model, base_url, api_key_env, api, tokenizer,
                                   adapters),
            max_queries=max_queries,
            stage1={**stage, **given(evaluations=stage1)} or None,
            stage2={**stage, **given(evaluations=stage2)} or None,
            materialize=materialize, output_dir=output_dir)
        show_or_run(merge_recipe, merge, options, dry_run, json_out, render_merge,
                    run_dir=run_dir, progress=progress)
