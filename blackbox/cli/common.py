"""Rendering shared by the CLI commands."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer


def console(stderr: bool = False) -> Any:
    """A rich console on stdout (or stderr, where progress and messages go)."""
    from rich.console import Console

    return Console(stderr=stderr)


def emit(summary: dict[str, Any], run_dir: Path | str | None, json_out: bool) -> None:
    """Print a summary as a table, or as JSON with ``--json``."""
    if json_out:
        import json

        typer.echo(json.dumps({**summary, "run_dir": str(run_dir)}, indent=2, default=str))
    else:
        from blackbox.report import render

        console().print(render(summary, run_dir))


# -- a task from the user's own files, the same options on every method command -------------
TaskOpt = Annotated[str, typer.Option(
    help="Task name (bbx ls tasks); for your own data give --train/--test files instead.")]
TrainOpt = Annotated[Path | None, typer.Option(
    "--train", help="Own data: the train file (CSV, TSV or JSONL; text/sentence + label).")]
DevOpt = Annotated[Path | None, typer.Option(
    "--dev", help="Own data: the dev file (default: a seeded 25% of each train class).")]
TestOpt = Annotated[Path | None, typer.Option(
    "--test", help="Own data: the held-out test file every accuracy is measured on.")]
LabelsOpt = Annotated[str | None, typer.Option(
    help="Own data: class names in index order, comma-separated (default: the names in the "
         "files, sorted).")]
LabelWordsOpt = Annotated[str | None, typer.Option(
    help="Own data: one label word per class, comma-separated (default: the class names).")]
TaskSpecOpt = Annotated[Path | None, typer.Option(
    "--task-spec", help="Own data: a YAML task spec (train, dev, test, labels, label_words, "
                        "templates); the options above override its keys.")]
AllowOverlapOpt = Annotated[bool, typer.Option(
    help="Run even if train/dev texts are also test texts (the summary lists the overlap).")]
BaseUrlOpt = Annotated[list[str] | None, typer.Option(
    help="Remote backend: the server's URL (default $OPENAI_BASE_URL); repeat it, or give "
    "commas, for several endpoints of one model.")]
ApiKeyEnvOpt = Annotated[str, typer.Option(
    help="Remote backend: NAME of the env var holding the key.")]
ApiOpt = Annotated[str, typer.Option(
    help="Remote backend: auto | chat | completions (auto: a model the completions route "
         "refuses is a chat model).")]
TokenizerOpt = Annotated[str | None, typer.Option(
    help="Remote backend: the served model's Hugging Face tokenizer folder, where the server "
         "has no tokenize route (logit_bias ids, ClaPS's vocabulary).")]


def _csv(value: str | None) -> list[str] | None:
    return None if value is None else [v.strip() for v in value.split(",") if v.strip()]


def task_option(task: str, train: Path | None = None, dev: Path | None = None,
                test: Path | None = None, labels: str | None = None,
                label_words: str | None = None, task_spec: Path | None = None,
                template: str | list[str] | None = None, pool: Path | None = None
                ) -> str | dict[str, Any]:
    """The recipe's ``task:`` from the command's options: a name, or a spec of own files.

    ``template`` (a string with ``{text}``, or several) becomes the own task's templates;
    label words
    given on the command line get their leading space (the schema adds it).
    """
    spec: dict[str, Any] = {}
    if task_spec is not None:
        import yaml

        from blackbox.errors import BbxError

        if not task_spec.is_file():
            raise BbxError(f"task spec {task_spec} not found: check the path")
        loaded = yaml.safe_load(task_spec.read_text(encoding="utf-8"))
        if not isinstance(loaded, dict):
            raise BbxError(f"task spec {task_spec}: write a mapping (train:, test:, labels:, ...)")
        spec.update(loaded)
    for key, value in (("train", train), ("dev", dev), ("test", test), ("pool", pool)):
        if value is not None:
            spec[key] = str(value)
    if labels is not None:
        spec["labels"] = _csv(labels)
    if label_words is not None:
        spec["label_words"] = _csv(label_words)
    if not spec:
        return task
    templates = [template] if isinstance(template, str) else list(template or [])
    if templates and not any(t.isdigit() for t in templates):
        spec["templates"] = templates
    return spec


def backend_config(backend: str, model: str = "default",
                   base_url: str | list[str] | None = None,
                   api_key_env: str = "OPENAI_API_KEY", api: str = "auto",
                   tokenizer: str | None = None) -> dict[str, Any]:
    """The recipe's ``backend:`` from the command's options (``api``, ``tokenizer``: remote
    only)."""
    cfg: dict[str, Any] = {"kind": backend}
    if backend == "local":
        cfg["model"] = model
    elif backend == "remote":
        cfg.update(base_url=base_urls(base_url), api_key_env=api_key_env,
                   model=None if model == "default" else model, api=api)
        if tokenizer:
            cfg["tokenizer"] = tokenizer
    return cfg


def base_urls(given: str | list[str] | None) -> str | list[str] | None:
    """``--base-url`` as the recipe's ``base_url``: one URL as a string, several (repeated,
    or with commas) as a list."""
    if not given:
        return None
    from blackbox.backends.endpoints import split_urls

    urls = split_urls(given)
    return urls[0] if len(urls) == 1 else urls or None


def render_task_check(info: dict[str, Any]) -> None:
    """``bbx task check``: one table of splits, then classes, overlaps and notes."""
    from rich.table import Table

    table = Table(title=f"task {info['task']} ({info['source']})")
    table.add_column("split")
    table.add_column("file", overflow="fold")
    table.add_column("n", justify="right")
    for lab in info["labels"]:
        table.add_column(lab, justify="right")
    table.add_column("repeated", justify="right")
    for name, s in info["splits"].items():
        table.add_row(name, str(s["file"]), str(s["n"]),
                      *[str(s["per_class"].get(lab, "-")) for lab in info["labels"]],
                      str(s["duplicates"]))
    out = console()
    out.print(table)
    out.print("label words: " + ", ".join(f"{lab} -> {w!r}" for lab, w in
                                          zip(info["labels"], info["label_words"],
                                              strict=True)))
    out.print(f"template: {info['templates'][0]!r}")
    for o in info["overlap"]:
        out.print(f"[bold red]overlap[/]: {o['count']} of {o['of']} {o['held_out']} texts are "
                  f"also in {o['fit']} (e.g. {o['example']!r})")
    if not info["overlap"]:
        out.print("no text is shared between splits")
    for note in info["notes"].values():
        out.print(f"note: {note}")
