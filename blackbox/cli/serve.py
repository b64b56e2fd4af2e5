"""``bbx serve``: the bundled OpenAI-compatible server over a local model + adapter folder."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def register(app: typer.Typer) -> None:
    """Add the ``serve`` command to ``app``."""

    @app.command("serve")
    def serve_cmd(
        model: Annotated[str, typer.Option(help="'default' (SmolLM2-135M), an HF folder or a "
                                           ".gguf file.")] = "default",
        adapters: Annotated[Path | None, typer.Option(
            help="A folder of PEFT LoRA adapters (one sub-folder each).")] = None,
        host: Annotated[str, typer.Option(help="Interface to bind (loopback by default).")]
        = "127.0.0.1",
        port: Annotated[int, typer.Option(help="TCP port.", min=1, max=65535)] = 8000,
        api_key: Annotated[str | None, typer.Option(
            help="Require 'Authorization: Bearer KEY' (default: $BBX_SERVER_API_KEY).",
            envvar="BBX_SERVER_API_KEY", show_envvar=True)] = None,
        model_name: Annotated[str | None, typer.Option(
            help="The model id clients send (default: the model's name).")] = None,
        device: Annotated[str, typer.Option(help="auto | cpu | cuda")] = "auto",
        dtype: Annotated[str, typer.Option(help="auto | float32 | bfloat16 | float16")] = "auto",
        batch_size: Annotated[int, typer.Option(help="Rows per forward pass.", min=1)] = 32,
        max_batch: Annotated[int, typer.Option(
            help="Most prompts gathered from concurrent requests into one call.", min=1)] = 64,
        max_wait_ms: Annotated[float, typer.Option(
            help="Longest wait for more requests before a call.", min=0)] = 4.0,
        max_queue: Annotated[int, typer.Option(
            help="Most generation sequences waiting for a place in the decode batch; "
            "past it requests get a 503 with Retry-After.", min=0)] = 256,
        embed_model: Annotated[str, typer.Option(help="minilm | mean")] = "minilm",
        allow_adapter_paths: Annotated[bool, typer.Option(
            help="Let POST /v1/adapters load adapters from any server path.")] = False,
        threads: Annotated[int | None, typer.Option(
            help="torch threads (default: torch's choice, one per core).", min=1)] = None,
        log_level: Annotated[str, typer.Option(help="uvicorn log level.")] = "info",
    ) -> None:
        """Serve a local model over the OpenAI API (+ bbx extensions) until interrupted."""
        from blackbox.api import serve

        serve(model=model, adapters=str(adapters) if adapters else None, host=host, port=port,
              api_key=api_key, model_name=model_name, device=device, dtype=dtype,
              batch_size=batch_size, max_batch=max_batch, max_wait_ms=max_wait_ms,
              max_queue=max_queue,
              embed_model=embed_model, allow_adapter_paths=allow_adapter_paths,
              threads=threads, log_level=log_level)
