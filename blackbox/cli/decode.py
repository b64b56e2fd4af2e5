"""``bbx decode fit`` / ``bbx decode predict``: the Multi-Prompting Decoder from the shell."""

from __future__ import annotations

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
    emit,
    given,
    schema_help,
    show_or_run,
    task_option,
)

decode_app = typer.Typer(
    name="decode",
    help="Multi-Prompting Decoder (MPD): a small decoder over P prompts' hidden states and "
         "calibrated label-word scores; DecT as baseline.",
    no_args_is_help=True,
)


@decode_app.command("fit", cls=SchemaCommand)
def fit_cmd(
    task: TaskOpt = None,
    train: TrainOpt = None,
    dev: DevOpt = None,
    test: TestOpt = None,
    labels: LabelsOpt = None,
    label_words: LabelWordsOpt = None,
    task_spec: TaskSpecOpt = None,
    template: Annotated[list[str] | None, typer.Option(
        help=schema_help("task.templates", lead="Own data:", note="Repeat for several "
                         "prompts."))] = None,
    allow_overlap: AllowOverlapOpt = None,
    drop_overlap: DropOverlapOpt = None,
    shots: ShotsOpt = None,
    seed: SeedOpt = None,
    prompts: Annotated[int | None, typer.Option(help=schema_help("decode.prompts"))] = None,
    decoder: Annotated[str | None, typer.Option(help=schema_help("decode.decoder"))] = None,
    neighbours: Annotated[int | None, typer.Option(help=schema_help("decode.neighbours"))]
    = None,
    compare: Annotated[list[str] | None, typer.Option(
        help=schema_help("decode.compare", note="Repeat for several."))] = None,
    test_limit: Annotated[int | None, typer.Option(help=schema_help("decode.test_limit"))]
    = None,
    out: Annotated[Path | None, typer.Option("--out", help=schema_help("decode.decoder_out"))]
    = None,
    logprobs_from_hidden: Annotated[bool | None, typer.Option(
        help=schema_help("decode.logprobs_from_hidden"))] = None,
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
    """Fit a decoder on a k-shot split and save it (a small .safetensors file)."""
    from blackbox.api import decode_fit, decode_fit_recipe

    options = given(
        task=task_option(task, train, dev, test, labels, label_words, task_spec, template),
        allow_overlap=allow_overlap, drop_overlap=drop_overlap,
        shots=shots, seed=seed, prompts=prompts, decoder=decoder,
        neighbours=neighbours, compare=list(compare) if compare else None,
        test_limit=test_limit, decoder_out=out, logprobs_from_hidden=logprobs_from_hidden,
        backend=backend_config(backend, model, base_url, api_key_env, api, tokenizer,
                               adapters),
        max_queries=max_queries, output_dir=output_dir)
    show_or_run(decode_fit_recipe, decode_fit, options, dry_run, json_out, progress=progress)


@decode_app.command("predict", cls=SchemaCommand)
def predict_cmd(
    decoder: Annotated[Path, typer.Option(help=schema_help("decode.decoder_file"))],
    input: Annotated[Path, typer.Option("--input", help=schema_help("decode.input"))],
    output: Annotated[Path | None, typer.Option(help=schema_help("decode.output"))] = None,
    backend: Annotated[str | None, typer.Option(
        help="Backend kind (default: the one the decoder was fit on).")] = None,
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
) -> None:
    """Label the texts of a file with a fitted decoder, through the backend."""
    from blackbox.api import decode_predict, decoder_backend

    # an option without --backend adjusts the backend the decoder was fit on (its kind)
    fit_kind = (decoder_backend(decoder) or {}).get("kind") if backend is None else None
    result = decode_predict(decoder, input, output=str(output) if output else None,
                            backend=backend_config(backend, model, base_url, api_key_env, api,
                                                   tokenizer, adapters, default_kind=fit_kind),
                            progress=progress,
                            **given(output_dir=output_dir,
                                    budget=None if max_queries is None
                                    else {"max_queries": max_queries}))
    emit(result.summary, result.run_dir, json_out)


def register(app: typer.Typer) -> None:
    """Add the ``decode`` command group to the ``bbx`` app."""
    app.add_typer(decode_app, name="decode")
