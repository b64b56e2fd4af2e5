"""``bbx decode fit`` / ``bbx decode predict``: the Multi-Prompting Decoder from the shell."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

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

decode_app = typer.Typer(
    name="decode",
    help="Multi-Prompting Decoder (MPD): a small decoder over P prompts' hidden states and "
         "calibrated label-word scores; DecT as baseline.",
    no_args_is_help=True,
)


def _backend_cfg(backend: str | None, model: str) -> dict[str, Any] | None:
    if backend is None:
        return None
    cfg: dict[str, Any] = {"kind": backend}
    if backend == "local":
        cfg["model"] = model
    return cfg


@decode_app.command("fit")
def fit_cmd(
    task: TaskOpt = "sst-2",
    train: TrainOpt = None,
    dev: DevOpt = None,
    test: TestOpt = None,
    labels: LabelsOpt = None,
    label_words: LabelWordsOpt = None,
    task_spec: TaskSpecOpt = None,
    template: Annotated[list[str] | None, typer.Option(
        help="Own data: a template, with {text}; repeat for several prompts.")] = None,
    allow_overlap: AllowOverlapOpt = False,
    shots: Annotated[int, typer.Option(help="Labelled examples per class (train; dev same).")]
    = 16,
    seed: Annotated[int, typer.Option(help="Seed (k-shot split, decoder init).")] = 42,
    prompts: Annotated[int | None, typer.Option(
        help="Number of the task's templates to query (P; default: up to 3).")] = None,
    decoder: Annotated[str, typer.Option(help="mpd | dect")] = "mpd",
    neighbours: Annotated[int, typer.Option(help="Label words per class (own word + nearest).")]
    = 10,
    compare: Annotated[list[str] | None, typer.Option(
        help="Also train and report: zero-shot, dect, mpd, mpd-mean, mpd-nocal, mpd-1word.")]
    = None,
    test_limit: Annotated[int | None, typer.Option(help="Evaluate on a fixed test subset.")]
    = None,
    out: Annotated[Path | None, typer.Option("--out", help="Decoder file to write (default: "
                                             "<run dir>/decoder.safetensors).")] = None,
    logprobs_from_hidden: Annotated[bool, typer.Option(
        help="Local backend: read label-word log-probs off the hidden states (one forward "
             "pass per example and prompt instead of two; same numbers).")] = False,
    backend: Annotated[str, typer.Option(help="Backend kind: local | fake | remote.")]
    = "local",
    model: Annotated[str, typer.Option(help="Local model: 'default', an HF folder or .gguf; "
                                       "remote: the model name.")] = "default",
    base_url: BaseUrlOpt = None,
    api_key_env: ApiKeyEnvOpt = "OPENAI_API_KEY",
    api: ApiOpt = "auto",
    tokenizer: TokenizerOpt = None,
    max_queries: Annotated[int | None, typer.Option(help="Query budget (uncached).")] = None,
    output_dir: Annotated[str, typer.Option(help="Where run directories go.")] = "results/runs",
    progress: Annotated[bool, typer.Option(help="Show progress bars.")] = True,
    json_out: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
) -> None:
    """Fit a decoder on a k-shot split and save it (a small .safetensors file)."""
    from blackbox.api import decode_fit

    result = decode_fit(task=task_option(task, train, dev, test, labels, label_words, task_spec,
                                         template),
                        allow_overlap=allow_overlap, shots=shots, seed=seed, prompts=prompts,
                        decoder=decoder,
                        neighbours=neighbours, compare=list(compare or []),
                        test_limit=test_limit, decoder_out=str(out) if out else None,
                        logprobs_from_hidden=logprobs_from_hidden,
                        backend=backend_config(backend, model, base_url, api_key_env, api,
                                               tokenizer),
                        output_dir=output_dir, budget={"max_queries": max_queries},
                        progress=progress)
    emit(result.summary, result.run_dir, json_out)


@decode_app.command("predict")
def predict_cmd(
    decoder: Annotated[Path, typer.Option(help="The decoder file bbx decode fit saved.")],
    input: Annotated[Path, typer.Option("--input", help="Texts to label: CSV, TSV, JSONL "
                                        "(a text column; a label column adds accuracy) or "
                                        ".txt (one per line).")],
    output: Annotated[Path | None, typer.Option(help="Also write predictions.jsonl here.")]
    = None,
    backend: Annotated[str | None, typer.Option(
        help="Backend kind (default: the one the decoder was fit on).")] = None,
    model: Annotated[str, typer.Option(help="Local model, with --backend local.")] = "default",
    max_queries: Annotated[int | None, typer.Option(help="Query budget (uncached).")] = None,
    output_dir: Annotated[str, typer.Option(help="Where run directories go.")] = "results/runs",
    progress: Annotated[bool, typer.Option(help="Show progress bars.")] = True,
    json_out: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
) -> None:
    """Label the texts of a JSONL file with a fitted decoder, through the backend."""
    from blackbox.api import decode_predict

    result = decode_predict(decoder, input, output=str(output) if output else None,
                            backend=_backend_cfg(backend, model), output_dir=output_dir,
                            budget={"max_queries": max_queries}, progress=progress)
    emit(result.summary, result.run_dir, json_out)


def register(app: typer.Typer) -> None:
    """Add the ``decode`` command group to the ``bbx`` app."""
    app.add_typer(decode_app, name="decode")
