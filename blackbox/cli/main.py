"""The ``bbx`` command line: parse, call one ``blackbox.api`` function, render. No logic here.

Heavy libraries are imported inside the commands, so ``bbx --help`` stays fast.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from blackbox.cli.common import emit
from blackbox.errors import BbxError

app = typer.Typer(
    name="bbx",
    help="Adapt language models you can only reach as a service.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


BackendOpt = Annotated[str, typer.Option(help="Backend kind: local | fake | remote.")]
ModelOpt = Annotated[str, typer.Option(help="Local model: 'default' (SmolLM2-135M), an HF folder "
                                       "or a .gguf file.")]


@app.command("run")
def run_cmd(
    recipe: Annotated[Path, typer.Argument(help="A recipe YAML file (see recipes/).")],
    set_: Annotated[list[str] | None, typer.Option("--set", help="Override: key.sub=value")] = None,
    run_dir: Annotated[Path | None, typer.Option(help="Reuse this run directory (resume).")] = None,
    progress: Annotated[bool, typer.Option(help="Show progress bars.")] = True,
    json_out: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
) -> None:
    """Run a recipe (any method, or a chain)."""
    from blackbox.api import run_recipe

    result = run_recipe(recipe, overrides=list(set_ or []), run_dir=run_dir, progress=progress)
    emit(result.summary, result.run_dir, json_out)


@app.command("eval")
def eval_cmd(
    task: Annotated[str, typer.Option(help="Task name (bbx ls tasks).")] = "sst-2",
    split: Annotated[str, typer.Option(help="train | dev | test")] = "test",
    template: Annotated[str, typer.Option(help="Template index or a template with {text}.")] = "0",
    prompt: Annotated[str, typer.Option(help="A prompt placed before the template.")] = "",
    limit: Annotated[int | None, typer.Option(help="Evaluate a seeded subset of N.")] = None,
    seed: Annotated[int, typer.Option(help="Seed (subset, k-shot splits).")] = 42,
    shots: Annotated[int, typer.Option(help="Shots per class for train/dev splits.")] = 16,
    backend: BackendOpt = "local",
    model: ModelOpt = "default",
    max_queries: Annotated[int | None, typer.Option(help="Query budget (uncached).")] = None,
    output_dir: Annotated[str, typer.Option(help="Where run directories go.")] = "results/runs",
    progress: Annotated[bool, typer.Option(help="Show progress bars.")] = True,
    json_out: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
    base_url: Annotated[str | None, typer.Option(
        help="Remote backend: the server's URL (default $OPENAI_BASE_URL).")] = None,
    api_key_env: Annotated[str, typer.Option(
        help="Remote backend: NAME of the env var holding the key.")] = "OPENAI_API_KEY",
) -> None:
    """Accuracy of a template (+ optional prompt) on a task split, through any backend."""
    from blackbox.api import run_recipe
    from blackbox.recipes import parse_recipe

    backend_cfg: dict[str, Any] = {"kind": backend}
    if backend == "local":
        backend_cfg["model"] = model
    elif backend == "remote":
        backend_cfg.update(base_url=base_url, api_key_env=api_key_env,
                           model=None if model == "default" else model)
    recipe = parse_recipe({
        "method": "eval", "task": task, "split": split, "prompt": prompt, "limit": limit,
        "seed": seed, "shots": shots, "backend": backend_cfg, "output_dir": output_dir,
        "template": int(template) if template.isdigit() else template,
        "budget": {"max_queries": max_queries},
    }, source="bbx eval")
    result = run_recipe(recipe, progress=progress)
    emit(result.summary, result.run_dir, json_out)


@app.command("report")
def report_cmd(
    run_dir: Annotated[Path, typer.Argument(help="A run directory.")],
    json_out: Annotated[bool, typer.Option("--json", help="Print as JSON.")] = False,
) -> None:
    """Show a finished run's summary, usage and ledger counts."""
    from blackbox.runs import ledger_counts, read_run

    run = read_run(run_dir)
    if run["summary"] is None:
        raise BbxError(f"run {run_dir} has not finished (no summary.json): resume it with "
                       f"bbx run RECIPE --run-dir {run_dir}")
    summary = {**run["summary"], "ledger": ledger_counts(Path(run_dir) / "ledger.jsonl")}
    emit(summary, run_dir, json_out)


@app.command("ls")
def ls_cmd(
    what: Annotated[str, typer.Argument(help="optimizers | backends | tasks | recipes | methods")]
    = "all",
) -> None:
    """List what is available: optimizers, backends, tasks, methods, recipes."""
    from blackbox.api import list_available

    lists = list_available()
    if what != "all" and what not in lists:
        raise BbxError(f"bbx ls: unknown list '{what}': use one of {', '.join(lists)}")
    for name, items in lists.items():
        if what in ("all", name):
            typer.echo(f"{name}:")
            for item in items:
                typer.echo(f"  {item}")


# Each method's commands live in their own module with a `register(app)` function.
COMMAND_MODULES: list[str] = ["blackbox.cli.distill", "blackbox.cli.decode",
                              "blackbox.cli.search_prompt", "blackbox.cli.merge",
                              "blackbox.cli.serve"]


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
