"""``bbx merge`` (Evo-Merging and its baselines) and ``bbx zoo build`` from the shell."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from blackbox.cli.common import (
    AllowOverlapOpt,
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
    base_urls,
    console,
    emit,
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

    @app.command("merge")
    def merge_cmd(
        task: TaskOpt = "sst-2",
        train: TrainOpt = None,
        dev: DevOpt = None,
        test: TestOpt = None,
        labels: LabelsOpt = None,
        label_words: LabelWordsOpt = None,
        task_spec: TaskSpecOpt = None,
        template: Annotated[str | None, typer.Option(
            help="Own data: the template, with {text} (and {prompt}).")] = None,
        allow_overlap: AllowOverlapOpt = False,
        variant: Annotated[str, typer.Option(
            help="evo | evo-no-sign | evo-no-denoise | evo-no-scale | lorahub | uniform | "
                 "best-single | base | ties | dare")] = "evo",
        seed: Annotated[int, typer.Option(help="Seed (user examples, optimizers).")] = 42,
        adapter: Annotated[list[str] | None, typer.Option(
            help="An adapter to merge (repeat; default: all the repository holds).")] = None,
        user_examples: Annotated[int, typer.Option(
            help="The user's labelled examples (stratified, from train + dev).")] = 64,
        test_limit: Annotated[int | None, typer.Option(
            help="Score a seeded test subset of N (default: the whole test split).")] = None,
        stage1: Annotated[int, typer.Option(help="Stage-1 (α) evaluations.")] = 400,
        stage2: Annotated[int, typer.Option(help="Stage-2 (β) evaluations.")] = 800,
        popsize: Annotated[int, typer.Option(help="Mixtures per batched call.")] = 20,
        optimizer: Annotated[str, typer.Option(help="Stage optimizer (bbx ls optimizers).")]
        = "cma",
        materialize: Annotated[bool, typer.Option(
            help="Also save the mixture as a PEFT adapter (local backend).")] = False,
        backend: Annotated[str, typer.Option(help="Backend kind: local | remote | fake.")]
        = "local",
        model: Annotated[str, typer.Option(help="Local model: 'default' or an HF folder.")]
        = "default",
        adapters_dir: Annotated[Path | None, typer.Option(
            "--adapters", help="Local backend: the adapter folder (default: the built zoo).")]
        = None,
        base_url: BaseUrlOpt = None,
        api_key_env: Annotated[str, typer.Option(
            help="Remote backend: NAME of the env var holding the key.")] = "OPENAI_API_KEY",
        api: ApiOpt = "auto",
        tokenizer: TokenizerOpt = None,
        max_queries: Annotated[int | None, typer.Option(help="Hard cap on paid calls.")]
        = None,
        run_dir: Annotated[Path | None, typer.Option(help="Resume this run directory.")]
        = None,
        output_dir: Annotated[str, typer.Option(help="Where run directories go.")]
        = "results/runs",
        progress: Annotated[bool, typer.Option(help="Show progress bars.")] = True,
        json_out: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")]
        = False,
    ) -> None:
        """Evo-Merging: search per-adapter sparsity α and signed scale β over the server's
        LoRA adapters, using only its answers; score the mixture on held-out test data."""
        from blackbox.api import merge

        cfg: dict[str, Any] = {"kind": backend}
        if backend == "local":
            cfg.update(model=model, adapters=str(adapters_dir) if adapters_dir else "zoo")
        elif backend == "remote":
            cfg.update(base_url=base_urls(base_url), api_key_env=api_key_env, api=api)
            if tokenizer:
                cfg["tokenizer"] = tokenizer
        stage = {"optimizer": optimizer, "popsize": popsize}
        result = merge(task=task_option(task, train, dev, test, labels, label_words, task_spec,
                                        template),
                       allow_overlap=allow_overlap, variant=variant, seed=seed,
                       adapters=list(adapter) if adapter else None,
                       user_examples=user_examples, test_limit=test_limit, backend=cfg,
                       max_queries=max_queries, run_dir=run_dir, progress=progress,
                       stage1={**stage, "evaluations": stage1},
                       stage2={**stage, "evaluations": stage2},
                       materialize=materialize, output_dir=output_dir)
        if json_out:
            emit(result.summary, result.run_dir, json_out=True)
        else:
            render_merge(result.summary, result.run_dir)
