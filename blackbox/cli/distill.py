"""``bbx distill`` (LMTurk) and ``bbx predict`` (a distilled student, no LLM)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

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
    emit,
    task_option,
)


def register(app: typer.Typer) -> None:
    """Add the ``distill`` and ``predict`` commands to ``app``."""

    @app.command("distill")
    def distill_cmd(
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
        shots: Annotated[int, typer.Option(help="Gold examples per class (the seed).")] = 16,
        workers: Annotated[int, typer.Option(help="Few-shot LLM workers.")] = 3,
        acquisition: Annotated[str, typer.Option(
            help="entropy | least-confidence | margin | kmeans | random")] = "entropy",
        aggregation: Annotated[str | None, typer.Option(
            help="majority | mean | dawid-skene  [default: the recipe's, mean]")] = None,
        batch: Annotated[int, typer.Option(help="Items the workers label per round.")] = 32,
        budget: Annotated[int, typer.Option(
            help="Annotation budget in LLM queries (workers x items).")] = 2000,
        demos_per_class: Annotated[int | None, typer.Option(
            help="Demonstrations per class in each worker's prompt  [default: the recipe's, 2]")]
        = None,
        pool: Annotated[Path | None, typer.Option(
            help="Unlabelled texts (.txt, .csv, .tsv, .jsonl); default: the task's pool.")] = None,
        pool_limit: Annotated[int | None, typer.Option(help="Seeded subset of the pool.")] = None,
        eval_limit: Annotated[int | None, typer.Option(
            help="Seeded subset of the evaluation set.")] = None,
        eval_workers: Annotated[bool, typer.Option(
            help="Also score the workers on the evaluation set (costs queries).")] = True,
        seed: Annotated[int, typer.Option(help="Seed (k-shot split, workers, pool split).")] = 42,
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
        output_dir: Annotated[str, typer.Option(help="Where run directories go.")] = "results/runs",
        progress: Annotated[bool, typer.Option(help="Show progress and per-round lines.")] = True,
        json_out: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")]
        = False,
    ) -> None:
        """LMTurk: LLM workers label what active learning picks; a student learns from them.

        The student is saved as student.json in the run directory: use it with bbx predict.
        """
        from blackbox.api import distill

        backend_cfg = backend_config(backend, model, base_url, api_key_env, api, tokenizer)
        optional = {"aggregation": aggregation, "demos_per_class": demos_per_class,
                    "pool_file": None if pool is None else str(pool)}
        result = distill(
            task=task_option(task, train, dev, test, labels, label_words, task_spec, template),
            allow_overlap=allow_overlap, shots=shots, workers=workers, acquisition=acquisition,
            batch=batch,
            budget=budget, seed=seed, backend=backend_cfg, progress=progress,
            pool_limit=pool_limit, eval_limit=eval_limit, eval_workers=eval_workers,
            output_dir=output_dir, max_queries=max_queries,
            **{k: v for k, v in optional.items() if v is not None},
        )
        emit(result.summary, result.run_dir, json_out)

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
