"""``bbx bench``: load an OpenAI-compatible server and report latency, throughput, goodput
and fluidity (the logic is :func:`blackbox.api.bench`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{1000 * value:.1f}"


def _rate(value: float | None, unit: str) -> str:
    return "-" if value is None else f"{value:.2f} {unit}"


def render_bench(summary: dict[str, Any], run_dir: Path | str) -> None:
    """Two rich tables: the run's rates, then latency percentiles in milliseconds."""
    from rich.table import Table

    from blackbox.cli.common import console

    how = {"sync": "sync", "concurrency": f"concurrency {summary.get('concurrency')}",
           "rate": f"Poisson {summary.get('rate')}/s, seed {summary.get('seed')}"}
    top = Table(title=f"bbx bench {summary['workload']} ({how.get(summary['mode'])}) "
                f"on {summary['model']}")
    top.add_column("measure")
    top.add_column("value", overflow="fold")
    top.add_row("requests", f"{summary['ok']} ok, {summary['failed']} failed, in "
                f"{summary['duration_s']:.2f} s")
    top.add_row("requests/s", _rate(summary["requests_per_s"], "req/s"))
    if summary.get("batch", 1) > 1 or summary.get("ttft_s") is None:
        top.add_row("items/s", _rate(summary["items_per_s"], "items/s"))
    if "mixtures_per_s" in summary:
        top.add_row("mixtures/s", _rate(summary["mixtures_per_s"], "mixtures/s"))
    if summary.get("ttft_s") is not None:
        top.add_row("output tokens/s", _rate(summary["output_tokens_per_s"], "tok/s")
                    + f" ({summary['output_tokens']} tokens)")
        flu = summary["fluidity"]
        if flu["mean"] is not None:
            top.add_row("fluidity-index", f"mean {flu['mean']:.3f}, p10 {flu['p10']:.3f} "
                        f"(D_p {_ms(flu['prefill_deadline_s'])} ms, "
                        f"D_d {_ms(flu['decode_deadline_s'])} ms)")
    good = summary["goodput"]
    if good["slo_s"]:
        slo = ", ".join(f"{k}<={_ms(v)}ms" for k, v in good["slo_s"].items())
        top.add_row("goodput", _rate(good["requests_per_s"], "req/s")
                    + f" ({100 * (good['fraction'] or 0):.1f}% meet {slo})")
    if summary["mode"] == "rate" and summary.get("send_lag_s", {}).get("p99") is not None:
        top.add_row("send lag", f"p99 {_ms(summary['send_lag_s']['p99'])} ms behind the "
                    "Poisson schedule")
    for message, n in summary["errors"].items():
        top.add_row(f"[red]error x{n}[/]", message)
    for key, note in (summary.get("notes") or {}).items():
        top.add_row(f"note: {key}", note)
    top.add_row("run_dir", str(run_dir))
    lat = Table(title="latency (ms)")
    for col in ("metric", "p50", "p90", "p99", "mean"):
        lat.add_column(col, justify="left" if col == "metric" else "right")
    for key, name in (("ttft_s", "TTFT"), ("itl_s", "ITL"), ("tpot_s", "TPOT"),
                      ("e2e_s", "end-to-end")):
        if summary.get(key) is not None:
            row = summary[key]
            lat.add_row(name, *(_ms(row[q]) for q in ("p50", "p90", "p99", "mean")))
    out = console()
    out.print(top)
    out.print(lat)


def register(app: typer.Typer) -> None:
    """Add the ``bench`` command to ``app``."""

    @app.command("bench")
    def bench_cmd(
        base_url: Annotated[str, typer.Option(
            help="The server's OpenAI base URL, e.g. http://127.0.0.1:8000/v1.")],
        workload: Annotated[str, typer.Option(
            help="chat | completion (streamed generation) | next-token | label-logprobs | "
                 "score | hidden-states | mixture (scoring; the last four are bbx routes).")]
        = "chat",
        mode: Annotated[str, typer.Option(
            help="sync (one at a time) | concurrency (N clients, closed loop) | rate "
                 "(Poisson arrivals, open loop).")] = "sync",
        concurrency: Annotated[int, typer.Option(help="Clients, with --mode concurrency.",
                                                 min=1)] = 1,
        rate: Annotated[float | None, typer.Option(
            help="Requests per second, with --mode rate.")] = None,
        seed: Annotated[int, typer.Option(help="Seed of the arrivals and mixtures.")] = 0,
        requests: Annotated[int, typer.Option(help="At most this many requests.", min=1)]
        = 100,
        duration: Annotated[float, typer.Option(
            help="Stop issuing requests after this many seconds.")] = 300.0,
        max_tokens: Annotated[int, typer.Option(help="Generation: tokens per request.",
                                                min=1)] = 128,
        temperature: Annotated[float, typer.Option(help="Generation: temperature.")] = 0.0,
        task: Annotated[str, typer.Option(help="Where prompts come from (a task name).")]
        = "bbc-news",
        prompt_words: Annotated[int, typer.Option(help="Cut each text to this many words.",
                                                  min=1)] = 200,
        repeat: Annotated[bool, typer.Option(
            help="Send the same prompt every time (prefix / prompt-cache effects).")] = False,
        offset: Annotated[int, typer.Option(
            help="Start at this text of the task (fresh prompts for a server that has "
                 "seen the first ones).", min=0)] = 0,
        batch: Annotated[int, typer.Option(help="Scoring: prompts per request.", min=1)] = 1,
        warmup: Annotated[int, typer.Option(
            help="Untimed requests first, one at a time (not in the results).", min=0)] = 0,
        slo: Annotated[str | None, typer.Option(
            help="Goodput SLOs, e.g. ttft=500ms,tpot=100ms,e2e=2s.")] = None,
        fluidity: Annotated[str | None, typer.Option(
            help="Fluidity-index deadlines prefill=..,decode=.. (default: the SLO's ttft and "
                 "tpot, else 1s and 100ms).")] = None,
        model: Annotated[str | None, typer.Option(
            help="Model id to send (default: the server's first).")] = None,
        adapter: Annotated[str | None, typer.Option(
            help="bbx serve: an adapter name on every request.")] = None,
        adapters: Annotated[str | None, typer.Option(
            help="Workload mixture: adapters to mix, comma-separated (default: all the "
                 "server lists).")] = None,
        api_key_env: Annotated[str, typer.Option(
            help="NAME of the env var holding the server's key.")] = "OPENAI_API_KEY",
        timeout: Annotated[float, typer.Option(help="Per-request timeout, seconds.")] = 120.0,
        output_dir: Annotated[str, typer.Option(help="Where run directories go.")]
        = "results/runs",
        run_dir: Annotated[Path | None, typer.Option(help="Write into this run directory.")]
        = None,
        json_out: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")]
        = False,
    ) -> None:
        """Load an OpenAI-compatible server (bbx serve, llama.cpp, vLLM): TTFT, ITL, TPOT,
        latency percentiles, requests/s, tokens/s, goodput, fluidity-index; items/s of the
        scoring routes. Writes a run directory with summary.json and requests.jsonl."""
        from blackbox.api import bench
        from blackbox.cli.common import emit

        result = bench(
            base_url, workload=workload, run_dir=run_dir, mode=mode, concurrency=concurrency,
            rate=rate, seed=seed, requests=requests, duration=duration, max_tokens=max_tokens,
            temperature=temperature, task=task, prompt_words=prompt_words, repeat=repeat,
            offset=offset,
            batch=batch, warmup=warmup, slo=slo, fluidity=fluidity, model=model,
            adapter=adapter,
            mixture_adapters=[a.strip() for a in adapters.split(",") if a.strip()]
            if adapters else None, api_key_env=api_key_env, timeout=timeout,
            output_dir=output_dir)
        if json_out:
            emit(result.summary, result.run_dir, True)
        else:
            render_bench(result.summary, result.run_dir)
