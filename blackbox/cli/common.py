"""Options and rendering shared by the CLI commands.

The recipe schema is the only home of defaults and help text: an option for a recipe field
defaults to ``None`` ("not given"), only the options the user set are passed on, and its
help is the field's description (:func:`schema_help`), read from the schema when ``--help``
shows it, so that ``bbx --help`` and every command start without importing the methods.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from typer.core import TyperCommand


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


# -- help from the recipe schema ------------------------------------------------------------
#: The models option help is read from, by the first part of a :func:`schema_help` path.
SCHEMAS: dict[str, str] = {
    "recipe": "blackbox.recipes.schema:RecipeBase",
    "task": "blackbox.recipes.schema:TaskSpec",
    "budget": "blackbox.recipes.schema:BudgetConfig",
    "local": "blackbox.recipes.schema:LocalBackendConfig",
    "remote": "blackbox.recipes.schema:RemoteBackendConfig",
    "eval": "blackbox.methods.eval.recipe:EvalRecipe",
    "search-prompt": "blackbox.methods.claps.recipe:ClapsRecipe",
    "distill": "blackbox.methods.lmturk.recipe:LMTurkRecipe",
    "decode": "blackbox.methods.mpd.recipe:DecodeRecipe",
    "merge": "blackbox.methods.merge.recipe:MergeRecipe",
}
_MARK, _SEP = "\x00schema", "\x1f"


def schema_help(*paths: str, lead: str = "", note: str = "") -> str:
    """The help of an option for a recipe field: ``lead``, the description of each field
    ``paths`` names (``"search-prompt.queries"``, ``"merge.stage1.evaluations"``,
    ``"local.model"``; the first part a key of :data:`SCHEMAS`), ``note``, and the first
    field's default as ``[default from recipe: ...]``.

    What this returns is a placeholder that :class:`SchemaCommand` resolves when help is
    shown (:func:`resolve_help`), so that no recipe model is imported to start a command."""
    for path in paths:
        if path.split(".")[0] not in SCHEMAS or "." not in path:
            raise ValueError(f"schema_help: {path!r} is not <schema>.<field>")
    return _SEP.join((_MARK, lead, note, *paths))


def _field(path: str) -> tuple[Any, Any]:
    """The field a path names, and its default: ``(FieldInfo, default)``. A field below
    another (``stage1.evaluations``) is looked up on the parent's default value, so a
    stage's own default (800 for stage 2) is the one shown."""
    import importlib

    key, *names = path.split(".")
    module, _, cls = SCHEMAS[key].partition(":")
    model: Any = getattr(importlib.import_module(module), cls)
    value: Any = None
    info: Any = None
    for name in names:
        if name not in model.model_fields:
            raise KeyError(f"schema_help: {path!r}: {model.__name__} has no field {name!r}")
        info = model.model_fields[name]
        if value is not None:
            value = getattr(value, name)
        else:
            value = info.get_default(call_default_factory=True)
        model = type(value)
    return info, value


def _shown(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return ", ".join(str(v) for v in value) or "none"
    if hasattr(value, "kind"):
        return str(value.kind)  # a backend config: its kind
    return str(value)


def resolve_help(text: str | None) -> str | None:
    """The help :func:`schema_help` stands for (any other text as it is)."""
    if not text or not text.startswith(_MARK + _SEP):
        return text
    _, lead, note, *paths = text.split(_SEP)
    infos = [_field(p) for p in paths]
    descriptions = [info.description or "" for info, _ in infos]
    if lead and descriptions[0][:1].isupper() and descriptions[0][1:2].islower():
        descriptions[0] = descriptions[0][0].lower() + descriptions[0][1:]  # "Own data: the"
    parts = [lead, *descriptions, note]
    default = infos[0][1]
    if default is not None:
        parts.append(f"[default from recipe: {_shown(default)}]")
    return " ".join(p for p in parts if p)


class SchemaCommand(TyperCommand):
    """A command whose options' help may come from the recipe schema (:func:`schema_help`):
    resolved when the help is shown."""

    def format_help(self, ctx: Any, formatter: Any) -> None:
        """Resolve the schema help of every option, then show the help as usual."""
        for param in self.params:
            text = getattr(param, "help", None)
            resolved = resolve_help(text)
            if resolved is not text and resolved is not None:
                if self.rich_markup_mode == "rich":
                    from rich.markup import escape

                    resolved = escape(resolved)  # "[default from recipe: ...]" is no style
                param.help = resolved  # type: ignore[attr-defined]
        super().format_help(ctx, formatter)


# -- options every method command takes ------------------------------------------------------
# a task: a registered name, or the user's own files
TaskOpt = Annotated[str | None, typer.Option(help=schema_help("recipe.task"))]
TrainOpt = Annotated[Path | None, typer.Option(
    "--train", help=schema_help("task.train", lead="Own data:"))]
DevOpt = Annotated[Path | None, typer.Option(
    "--dev", help=schema_help("task.dev", lead="Own data:"))]
TestOpt = Annotated[Path | None, typer.Option(
    "--test", help=schema_help("task.test", lead="Own data:"))]
LabelsOpt = Annotated[str | None, typer.Option(
    help=schema_help("task.labels", lead="Own data, comma-separated:"))]
LabelWordsOpt = Annotated[str | None, typer.Option(
    help=schema_help("task.label_words", lead="Own data, comma-separated:"))]
TaskSpecOpt = Annotated[Path | None, typer.Option(
    "--task-spec", help="Own data: a YAML task spec (train, dev, test, labels, label_words, "
                        "templates); the options above override its keys.")]
AllowOverlapOpt = Annotated[bool | None, typer.Option(help=schema_help("recipe.allow_overlap"))]
DropOverlapOpt = Annotated[bool | None, typer.Option(help=schema_help("recipe.drop_overlap"))]
SeedOpt = Annotated[int | None, typer.Option(help=schema_help("recipe.seed"))]
ShotsOpt = Annotated[int | None, typer.Option(help=schema_help("recipe.shots"))]
# the backend
BackendOpt = Annotated[str | None, typer.Option(help=schema_help("recipe.backend"))]
ModelOpt = Annotated[str | None, typer.Option(help=schema_help("local.model", "remote.model"))]
AdaptersOpt = Annotated[str | None, typer.Option(help=schema_help("local.adapters"))]
BaseUrlOpt = Annotated[list[str] | None, typer.Option(
    help=schema_help("remote.base_url", note="Repeat it, or give commas."))]
ApiKeyEnvOpt = Annotated[str | None, typer.Option(help=schema_help("remote.api_key_env"))]
ApiOpt = Annotated[str | None, typer.Option(help=schema_help("remote.api"))]
TokenizerOpt = Annotated[str | None, typer.Option(help=schema_help("remote.tokenizer"))]
MaxQueriesOpt = Annotated[int | None, typer.Option(help=schema_help("budget.max_queries"))]
# where the run goes and what it prints
OutputDirOpt = Annotated[str | None, typer.Option(help=schema_help("recipe.output_dir"))]
RunDirOpt = Annotated[Path | None, typer.Option(
    help="Resume this run directory (what it paid for is not paid again).")]
ProgressOpt = Annotated[bool, typer.Option(help="Show progress bars.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")]
DryRunOpt = Annotated[bool, typer.Option(
    "--dry-run", help="Print the projected queries, tokens and dollars per stage; pay "
    "nothing.")]

#: The backend options, by parameter name: every method command takes all of them.
BACKEND_OPTIONS = ("backend", "model", "adapters", "base_url", "api_key_env", "api",
                   "tokenizer")


def given(**options: Any) -> dict[str, Any]:
    """The options the user set (``None``: not given, the recipe's default applies)."""
    return {k: v for k, v in options.items() if v is not None}


def template_option(template: str | None) -> int | str | None:
    """``--template``: an index (digits) or a template string."""
    if template is None:
        return None
    return int(template) if template.isdigit() else template


def _csv(value: str | None) -> list[str] | None:
    return None if value is None else [v.strip() for v in value.split(",") if v.strip()]


def task_option(task: str | None, train: Path | None = None, dev: Path | None = None,
                test: Path | None = None, labels: str | None = None,
                label_words: str | None = None, task_spec: Path | None = None,
                template: str | list[str] | None = None, pool: Path | None = None
                ) -> str | dict[str, Any] | None:
    """The recipe's ``task:`` from the command's options: a name, a spec of own files, or
    ``None`` (nothing given: the recipe's default task).

    ``template`` (a string with ``{text}``, or several) becomes the own task's templates;
    label words given on the command line get their leading space (the schema adds it).
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


def backend_config(backend: str | None, model: str | None = None,
                   base_url: str | list[str] | None = None, api_key_env: str | None = None,
                   api: str | None = None, tokenizer: str | None = None,
                   adapters: str | Path | None = None,
                   default_kind: str | None = None) -> dict[str, Any] | None:
    """The recipe's ``backend:`` from the command's backend options (:data:`BACKEND_OPTIONS`):
    only what was given, or ``None`` when nothing was (the recipe's default backend).

    Without ``--backend`` the kind is ``default_kind``, else the recipe's default (local).
    An option of another kind (``--base-url`` with a local backend) is a one-line error, not
    silently dropped."""
    from blackbox.errors import BbxError
    from blackbox.recipes.schema import (
        FakeBackendConfig,
        LocalBackendConfig,
        RecipeBase,
        RemoteBackendConfig,
    )

    options = given(model=model, base_url=base_urls(base_url), api_key_env=api_key_env,
                    api=api, tokenizer=tokenizer,
                    adapters=None if adapters is None else str(adapters))
    if backend is None and not options:
        return None
    default = RecipeBase.model_fields["backend"].get_default(call_default_factory=True)
    kind = backend or default_kind or default.kind
    kinds: dict[str, Any] = {"local": LocalBackendConfig, "fake": FakeBackendConfig,
                             "remote": RemoteBackendConfig}
    if kind in kinds:  # a plugin's backend validates its own options
        for name in options:
            if name not in kinds[kind].model_fields:
                owners = [k for k, m in kinds.items() if name in m.model_fields]
                raise BbxError(f"--{name.replace('_', '-')} is an option of --backend "
                               f"{' / '.join(owners)}, not of '{kind}'")
    return {"kind": kind, **options}


def base_urls(given: str | list[str] | None) -> str | list[str] | None:
    """``--base-url`` as the recipe's ``base_url``: one URL as a string, several (repeated,
    or with commas) as a list."""
    if not given:
        return None
    from blackbox.backends.endpoints import split_urls

    urls = split_urls(given)
    return urls[0] if len(urls) == 1 else urls or None


def show_or_run(build: Any, run: Any, options: dict[str, Any], dry_run: bool,
                json_out: bool, render: Any = None, **run_args: Any) -> None:
    """What every method command does once its options are parsed: ``--dry-run`` projects
    the recipe ``build(**options)`` makes (nothing paid); otherwise ``run(**options)`` runs
    it, and the summary is rendered (``render(summary, run_dir)``, or :func:`emit`)."""
    if dry_run:
        from blackbox.cli.money import show_dry_run

        show_dry_run(build(**options), None, json_out)
        return
    result = run(**options, **run_args)
    if json_out or render is None:
        emit(result.summary, result.run_dir, json_out)
    else:
        render(result.summary, result.run_dir)


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
