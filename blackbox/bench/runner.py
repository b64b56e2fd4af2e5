"""One benchmark run: ask the server what it is, send the workload as the schedule says,
and leave a run directory like every other command's::

    <run_dir>/recipe.yaml      the options (method: bench)
    <run_dir>/manifest.json    versions, host, the server (its /v1/bbx answer on a bbx server)
    <run_dir>/requests.jsonl   one row per request: times, tokens, error, its own metrics
    <run_dir>/summary.json     percentiles, rates, goodput, fluidity-index (written last)
"""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Any

from blackbox.bench.config import BenchConfig
from blackbox.bench.metrics import RequestMetrics, Trace, meets, summarize, token_times
from blackbox.bench.prompts import Prompts, load_prompts
from blackbox.bench.schedule import drive
from blackbox.bench.workloads import Clients, Sender, now_clock
from blackbox.errors import BbxError
from blackbox.runs import RunDir


async def _server(clients: Clients, cfg: BenchConfig) -> dict[str, Any]:
    """What the server says it is: the model it serves, and its bbx info where it has it."""
    info: dict[str, Any] = {"base_url": cfg.base_url}
    try:
        models = await clients.openai.models.list()
    except Exception as e:  # noqa: BLE001 - the message names the server's answer
        raise BbxError(f"bbx bench: {cfg.base_url} does not answer GET /models ({e}): is the "
                       "server up, and is the URL its OpenAI base (ending in /v1)?") from None
    info["models"] = [m.id for m in models.data][:20]
    info["bbx"] = None  # other servers answer 404
    try:
        r = await clients.http.get("/bbx")
        if r.status_code == 200:
            info["bbx"] = r.json()
    except Exception:  # noqa: BLE001 - not knowing the server is fine for a load test
        pass
    return info


async def _mixture_adapters(clients: Clients, cfg: BenchConfig) -> list[str] | None:
    if cfg.workload != "mixture":
        return None
    if cfg.mixture_adapters:
        return list(cfg.mixture_adapters)
    r = await clients.http.get("/adapters")
    names = [a["name"] for a in r.json().get("data", [])] if r.status_code == 200 else []
    if not names:
        raise BbxError("workload mixture: the server lists no adapters (GET /v1/adapters): "
                       "serve some (bbx serve --adapters DIR) or name them with --adapters")
    return names


async def _run(cfg: BenchConfig, prompts: Prompts, api_key: str
               ) -> tuple[dict[str, Any], str, list[str] | None, list[Trace]]:
    clock = now_clock()
    clients = Clients(cfg, api_key, clock)
    try:
        server = await _server(clients, cfg)
        model = cfg.model or (server["models"] or ["default"])[0]
        names = await _mixture_adapters(clients, cfg)
        sender = Sender(cfg, prompts, clients, model, names)
        for i in range(cfg.warmup):
            # one at a time, untimed, on prompts after the measured ones' (so they warm
            # the server, not its prompt cache for the measured requests)
            await sender(cfg.requests + i, clock())
        traces = await drive(cfg.schedule, sender, clock)
    finally:
        await clients.close()
    return server, model, names, traces


def _row(t: Trace, m: RequestMetrics | None, cfg: BenchConfig) -> dict[str, Any]:
    row: dict[str, Any] = {"index": t.index, "scheduled_s": t.scheduled, "start_s": t.start,
                           "end_s": t.end, "ok": t.ok, "error": t.error, "items": t.items,
                           "prompt_tokens": t.prompt_tokens}
    if m is not None:
        row.update(e2e_s=m.e2e, meets_slo=meets(m, cfg.slo_s))
        if cfg.streamed:
            row.update(ttft_s=m.ttft, tpot_s=m.tpot, output_tokens=m.tokens,
                       usage_tokens=t.output_tokens, fluidity=m.fluidity, itl_s=m.itl,
                       chunk_times_s=[at for at, _ in t.chunks],
                       token_times_s=token_times(t))
    return row


def run_bench(cfg: BenchConfig, run_dir: str | Path | None = None) -> tuple[Path, dict[str, Any]]:
    """Run the benchmark ``cfg`` describes; (its run directory, its summary)."""
    prompts = load_prompts(cfg.task, cfg.prompt_words, templated=not cfg.streamed,
                           repeat=cfg.repeat, offset=cfg.offset)
    api_key = os.environ.get(cfg.api_key_env) or "unused"  # local servers take any key
    server, model, names, traces = asyncio.run(_run(cfg, prompts, api_key))
    rd = RunDir.open(cfg.as_recipe(), cfg.output_dir, run_dir,
                     name=f"bench-{cfg.workload}-{cfg.mode}")
    rd.write_manifest(method="bench", server=server, model=model)
    summary, per = summarize(traces, cfg.streamed, cfg.slo_s, cfg.prefill_s, cfg.decode_s)
    with open(rd.path / "requests.jsonl", "w") as f:
        for t, m in zip(traces, per, strict=True):
            f.write(json.dumps(_row(t, m, cfg)) + "\n")
    notes = {}
    used = len(traces) * cfg.batch
    if not cfg.repeat and used > prompts.distinct:
        notes["prompts"] = (f"{used} prompts sent, {prompts.distinct} distinct: they cycled, "
                            "so later ones may hit a prompt cache")
    if cfg.streamed and any(t.ok and t.output_tokens is None for t in traces):
        notes["usage"] = ("the server sent no usage total on some streams: each of their "
                          "chunks counted as one token")
    summary = {"method": "bench", "workload": cfg.workload, "mode": cfg.mode,
               "concurrency": cfg.schedule.clients if cfg.mode != "rate" else None,
               "rate": cfg.rate if cfg.mode == "rate" else None, "seed": cfg.seed,
               "model": model, "base_url": cfg.base_url, "batch": cfg.batch,
               "max_tokens": cfg.max_tokens if cfg.streamed else None,
               "prompt_words": cfg.prompt_words, "repeat": cfg.repeat, "warmup": cfg.warmup,
               "distinct_prompts": prompts.distinct, **summary,
               **({"mixtures_per_s": summary["requests_per_s"], "mixture_adapters": names}
                  if cfg.workload == "mixture" else {}),
               **({"notes": notes} if notes else {})}
    rd.write_summary(summary)
    return rd.path, summary
