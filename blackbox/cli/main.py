"""The ``bbx`` command line: parse, call one ``blackbox.api`` function, render. No logic here.

Heavy libraries are imported inside the commands, so ``bbx --help`` stays fast.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from blackbox.cli.common import (
    AdaptersOpt,
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
    emit,
    given,
    render_task_check,
    schema_help,
    show_or_run,
    task_option,
    template_option,
)
from blackbox.errors import BbxError

app = typer.Typer(
    name="bbx",
    help="Adapt language models you can only reach as a service.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.command("run")
def run_cmd(
    recipe: Annotated[Path, typer.Argument(help="A recipe YAML file (see recipes/).")],
    set_: Annotated[list[str] | None, typer.Option("--set", help="Override: key.sub=value")] = None,
    run_dir: Annotated[Path | None, typer.Option(help="Reuse this run directory (resume).")] = None,
    progress: Annotated[bool, typer.Option(help="Show progress bars.")] = True,
    json_out: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
    dry_run: Annotated[bool, typer.Option(
        "--dry-run", help="Print the projected queries, tokens and dollars per stage; pay "
        "nothing.")] = False,
) -> None:
    """Run a recipe (any method, or a chain)."""
    if dry_run:
        from blackbox.cli.money import show_dry_run

        show_dry_run(recipe, list(set_ or []), json_out)
        return
    from blackbox.api import run_recipe

    result = run_recipe(recipe, overrides=list(set_ or []), run_dir=run_dir, progress=progress)
    emit(result.summary, result.run_dir, json_out)


@app.command("eval", cls=SchemaCommand)
def eval_cmd(
    task: TaskOpt = None,
    train: TrainOpt = None,
    dev: DevOpt = None,
    test: TestOpt = None,
    labels: LabelsOpt = None,
    label_words: LabelWordsOpt = None,
    task_spec: TaskSpecOpt = None,
    split: Annotated[str | None, typer.Option(help=schema_help("eval.split"))] = None,
    template: Annotated[str | None, typer.Option(help=schema_help("eval.template"))] = None,
    prompt: Annotated[str | None, typer.Option(help=schema_help("eval.prompt"))] = None,
    limit: Annotated[int | None, typer.Option(help=schema_help("eval.limit"))] = None,
    seed: SeedOpt = None,
    shots: ShotsOpt = None,
    backend: BackendOpt = None,
    model: ModelOpt = None,
    adapters: AdaptersOpt = None,
    base_url: BaseUrlOpt = None,
    api_key_env: ApiKeyEnvOpt = None,
    api: ApiOpt = None,
    tokenizer: TokenizerOpt = None,
    max_queries: MaxQueriesOpt = None,
    output_dir: OutputDirOpt = None,
    progress: ProgressOpt = True,
    json_out: JsonOpt = False,
    dry_run: DryRunOpt = False,
) -> None:
    """Accuracy of a template (+ optional prompt) on a task split, through any backend."""
    from blackbox.api import evaluate, evaluate_recipe

    options = given(
        task=task_option(task, train, dev, test, labels, label_words, task_spec),
        split=split, template=template_option(template), prompt=prompt, limit=limit,
        seed=seed, shots=shots, output_dir=output_dir, max_queries=max_queries,
        backend=backend_config(backend, model, base_url, api_key_env, api, tokenizer, adapters))
    show_or_run(evaluate_recipe, evaluate, options, dry_run, json_out, progress=progress)


task_app = typer.Typer(name="task", help="Your own task: check what bbx reads from its files.",
                       no_args_is_help=True)
app.add_typer(task_app, name="task")


@task_app.command("check", cls=SchemaCommand)
def task_check_cmd(
    files: Annotated[list[Path] | None, typer.Argument(
        help="Data files named train.*, dev.*, test.*, pool.* (or use the options).")] = None,
    task: TaskOpt = None,
    train: TrainOpt = None,
    dev: DevOpt = None,
    test: TestOpt = None,
    labels: LabelsOpt = None,
    label_words: LabelWordsOpt = None,
    task_spec: TaskSpecOpt = None,
    seed: SeedOpt = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print as JSON.")] = False,
) -> None:
    """Print what bbx understood of a task: classes, counts per split, repeated texts, texts
    shared between splits. A registered task name works too."""
    import json

    from blackbox.api import check_task

    named: dict[str, Path] = {}
    for f in files or []:
        split = f.name.split(".")[0].lower()
        if split not in ("train", "dev", "test", "pool"):
            raise BbxError(f"bbx task check: cannot tell which split {f} is: name it train.*, "
                           "dev.*, test.* or pool.*, or pass it with --train/--dev/--test")
        named[split] = f
    spec = task_option(task, train or named.get("train"), dev or named.get("dev"),
                       test or named.get("test"), labels, label_words, task_spec,
                       pool=named.get("pool"))
    info = check_task(spec, seed=seed)
    if json_out:
        typer.echo(json.dumps(info, indent=2))
    else:
        render_task_check(info)


@app.command("report")
def report_cmd(
    run_dir: Annotated[Path, typer.Argument(help="A run directory.")],
    json_out: Annotated[bool, typer.Option("--json", help="Print as JSON.")] = False,
) -> None:
    """Show a finished run as a person reads it: accuracy (before → after) on how many test
    items, what was found, what it paid, where the artefact is (--json: the raw summary)."""
    from blackbox.api import report

    rep = report(run_dir)
    if json_out:
        emit(rep.summary, rep.run_dir, json_out=True)
    else:
        from blackbox.cli.money import paid_line

        console().print(rep.renderable())
        typer.echo(paid_line(rep.summary.get("usage") or {}))  # one line a log can grep


@app.command("plot")
def plot_cmd(
    run_dirs: Annotated[list[Path], typer.Argument(help="One or more run directories.")],
    out: Annotated[Path | None, typer.Option(help="The PNG to write (default: next to the "
                                             "first run, <run_dir>.png).")] = None,
) -> None:
    """Plot runs against the queries they paid: each trial and the best so far (search-prompt,
    merge), the learning curve (distill); several runs on one axis. Prints the PNG's path."""
    from blackbox.api import plot

    typer.echo(str(plot(list(run_dirs), out)))


@app.command("ls")
def ls_cmd(
    what: Annotated[str, typer.Argument(
        help="optimizers | backends | tasks | recipes | methods | runs")] = "all",
    runs_dir: Annotated[Path, typer.Option(help="With 'runs': where run directories are.")]
    = Path("results/runs"),
) -> None:
    """List what is available: optimizers, backends, tasks, methods, recipes; or the runs
    under --runs-dir with their status (finished, failed, incomplete)."""
    from blackbox.api import list_available

    if what == "runs":
        from blackbox.runs import iter_runs

        runs = iter_runs(runs_dir)
        if not runs:
            typer.echo(f"no run directories under {runs_dir}")
        for run in runs:
            summary = run["summary"] or {}
            acc = summary.get("accuracy", (summary.get("test") or {}).get("accuracy"))
            detail = (f"accuracy {acc:.4f}" if isinstance(acc, float)
                      else summary.get("error", ""))
            typer.echo(f"{run['status']:<10} {Path(run['path']).name}  {detail}")
        return
    lists = list_available()
    if what != "all" and what not in lists:
        raise BbxError(f"bbx ls: unknown list '{what}': use one of {', '.join(lists)}, runs")
    for name, items in lists.items():
        if what in ("all", name):
            typer.echo(f"{name}:")
            for item in items:
                typer.echo(f"  {item}")


# Each method's commands live in their own module with a `register(app)` function.
COMMAND_MODULES: list[str] = ["blackbox.cli.distill", "blackbox.cli.decode",
                              "blackbox.cli.search_prompt", "blackbox.cli.merge",
                              "blackbox.cli.serve", "blackbox.cli.bench"]


def _register_commands() -> None:
    import importlib

    for name in COMMAND_MODULES:
        importlib.import_module(name).register(app)


_register_commands()


def main() -> None:
    """Console entry point: user errors become one line and exit code 2, never a traceback."""
    try:
        app(standalone_mode=False)
    except BbxError as e:
        typer.echo(f"error: {e}", err=True)
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        typer.echo("interrupted: rerun with --run-dir <run dir> to resume; cached calls are "
                   "not paid again", err=True)
        sys.exit(130)
    except Exception as e:  # click's own usage errors
        import click

        # typer >= 0.20 raises the errors of its vendored click copy, not click's
        kinds = [click.exceptions]
        try:
            from typer._click import exceptions as typer_click

            kinds.append(typer_click)
        except ImportError:
            pass
        for k in kinds:
            if isinstance(e, k.ClickException):
                e.show()
                sys.exit(e.exit_code)
            if isinstance(e, k.Exit):
                sys.exit(e.exit_code)
            if isinstance(e, k.Abort):
                sys.exit(1)
        raise


if __name__ == "__main__":
    main()
