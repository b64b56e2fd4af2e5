"""bbx serve beside llama.cpp's own C++ server and llama-cpp-python's server, on the same
GGUF and under the same loads, in one run on one machine: ``results/bench-serving.md``.

The three servers are started by this script on loopback ports and stopped at its end:

* ``bbx serve`` exactly as a user starts it (defaults: ``dtype auto``, the dynamic batcher,
  continuous-batching decode); it dequantizes the GGUF into torch weights;
* ``llama-server`` (built once by ``scripts/llama_cpp_server_build.sh``) with 8 parallel
  slots (``-np 8``), on the quantized GGUF as shipped;
* llama-cpp-python's ``llama_cpp.server`` (built once by ``scripts/llama_server_env.sh``),
  one sequence at a time, with ``--interrupt_requests false`` (by default a new request cuts
  the one being streamed short).

Loads, each through ``blackbox.api.bench`` (the ``bbx bench`` load generator; its client
threads run in this process): next-token scoring on ``/v1/completions`` (``max_tokens=1,
logprobs=5``) at 1, 8 and 32 clients on distinct SST-2 prompts and at 32 clients on one
repeated prompt; streamed generation of 64 tokens at 1 and 8 clients. Every cell runs in two
rounds, interleaved (round 1 of every cell on every server, then round 2), so drift in the
machine's speed shows as the spread between rounds rather than as a difference between
servers. Each cell's summary goes to ``results/bench-serving.json``;
``--report-only`` rewrites the markdown from it.

    flock /tmp/bbx-heavy.lock env OMP_WAIT_POLICY=PASSIVE .venv/bin/python scripts/bench_serving.py
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))  # the server helpers the tests use

from serve_support import build_script, free_port, process_server  # noqa: E402

SERVERS = ("bbx", "llama-server", "llama-cpp-python")
LABELS = {"bbx": "bbx serve", "llama-server": "llama-server -np 8 (C++)",
          "llama-cpp-python": "llama-cpp-python server"}
# (name, bench options): the loads
SCORING = [(f"next-token c={c}", {"workload": "next-token", "concurrency": c})
           for c in (1, 8, 32)] + [
    ("next-token c=32 repeated", {"workload": "next-token", "concurrency": 32, "repeat": True})]
STREAMING = [(f"stream 64 tokens c={c}", {"workload": "completion", "concurrency": c,
                                           "max_tokens": 64}) for c in (1, 8)]
THREADS = 2


@contextlib.contextmanager
def servers() -> Iterator[dict[str, str]]:
    """The three servers, started and ready; their ``/v1`` base URLs by name."""
    from blackbox.engine.loader import resolve_spec

    gguf = str(resolve_spec("default").path)
    try:
        llama_server = build_script("llama_cpp_server_build.sh")
        llama_python = build_script("llama_server_env.sh")
    except RuntimeError as e:
        raise SystemExit(f"a llama.cpp server cannot be built here: {e}") from None
    ports = {name: free_port() for name in SERVERS}
    cmds = {
        "bbx": [str(Path(sys.executable).with_name("bbx")), "serve", "--port",
                str(ports["bbx"]), "--threads", str(THREADS)],
        "llama-server": [llama_server, "-m", gguf, "--host", "127.0.0.1", "--port",
                         str(ports["llama-server"]), "-np", "8", "-c", "8192", "-t",
                         str(THREADS)],
        "llama-cpp-python": [llama_python, "-m", "llama_cpp.server", "--model", gguf,
                             "--host", "127.0.0.1", "--port", str(ports["llama-cpp-python"]),
                             "--n_ctx", "2048", "--n_threads", str(THREADS),
                             # its default cuts a streaming answer short whenever another
                             # request arrives: off, so every request is served in full
                             "--interrupt_requests", "false", "--verbose", "false"],
    }
    with contextlib.ExitStack() as stack:
        urls = {name: stack.enter_context(process_server(
            cmd, "/v1/models", name, ports[name], ready_s=300,
            env={"OMP_WAIT_POLICY": "PASSIVE"})) + "/v1" for name, cmd in cmds.items()}
        yield urls


def cell_options(opts: dict[str, Any], quick: bool, offset: int) -> dict[str, Any]:
    """A cell's bench options; its prompts start at ``offset`` (each round's cells take
    texts no earlier cell sent, so no server answers a "distinct" prompt from a cache)."""
    c = opts["concurrency"]
    out: dict[str, Any] = {"workload": opts["workload"], "task": "sst-2", "prompt_words": 20,
                           "repeat": opts.get("repeat", False), "warmup": 2 if c == 1 else c,
                           "offset": offset}
    out.update({"mode": "sync"} if c == 1 else {"mode": "concurrency", "concurrency": c})
    if opts["workload"] == "completion":
        out.update(max_tokens=opts["max_tokens"], requests=8 * c if not quick else 2 * c,
                   duration=60.0)
    else:
        out.update(requests=80 if c == 1 else 300, duration=20.0 if not quick else 5.0)
    return out


def run_all(rounds: int, quick: bool, out_json: Path) -> dict[str, Any]:
    from blackbox import api
    from blackbox.machine import cpu_description

    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    cells: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp, servers() as urls:
        load0 = os.getloadavg()[0]
        offset = 0
        for rnd in range(1, rounds + 1):
            for name, opts in SCORING + STREAMING:
                options = cell_options(opts, quick, offset)
                for server in SERVERS:
                    res = api.bench(urls[server], output_dir=tmp, **options)
                    s = res.summary
                    keep = {k: s.get(k) for k in (
                        "ok", "failed", "errors", "duration_s", "requests_per_s", "e2e_s",
                        "ttft_s", "itl_s", "tpot_s", "fluidity", "output_tokens_per_s",
                        "distinct_prompts")}
                    cells.append({"load": name, "server": server, "round": rnd,
                                  "options": options, **keep})
                    print(f"round {rnd} · {name} · {server}: "
                          f"{s.get('requests_per_s', 0):.2f} req/s, {s.get('failed')} failed",
                          flush=True)
                offset += 1 if options["repeat"] else options["requests"] + options["warmup"]
        load1 = os.getloadavg()[0]
    import torch

    data = {"started": started, "machine": {**cpu_description(), "cores": os.cpu_count(),
                                            "python": platform.python_version(),
                                            "torch": torch.__version__, "threads": THREADS},
            "load_average": [round(load0, 2), round(load1, 2)], "rounds": rounds,
            "cells": cells}
    out_json.write_text(json.dumps(data, indent=1) + "\n")
    return data


def profile_decode(tokens: int = 64) -> dict[str, Any]:
    """Where one streamed request's time goes in bbx's engine, in this process (the servers
    are stopped): a prompt of the benchmark's kind prefilled, then ``tokens`` greedy decode
    steps of one row, under ``torch.profiler`` (self CPU time per operator), and the bytes
    of weights every step reads."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    from blackbox.engine.decode import DecodeBatch, new_row
    from blackbox.engine.runtime import Engine

    torch.set_num_threads(THREADS)
    engine = Engine.from_spec("default")
    ids = engine._prompt_ids(["Review: a wonderful, moving film with superb acting and a "
                              "lot of heart, if a little long.\nSentiment:"])[0]

    def one() -> tuple[float, float, int]:
        batch = DecodeBatch(engine)
        row = new_row(ids, "profile", tokens, engine.max_length)
        t0 = time.perf_counter()
        batch.admit([row])
        t1 = time.perf_counter()
        while batch.rows:
            batch.step()
        return t1 - t0, time.perf_counter() - t1, len(row.new)

    for _ in range(2):
        one()
    plain = [one() for _ in range(3)]
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        _, decode_s, n = one()
    ops = sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)
    total = sum(e.self_cpu_time_total for e in ops)
    params = sum(p.numel() * p.element_size() for p in engine.model.parameters())
    served = str(engine.dtype).removeprefix("torch.")
    # what int8 weights would give: torch's dynamic quantization of every Linear (fbgemm
    # int8 kernels) over the fp32 model, same prompt and steps (bbx does not serve this)
    variants = {}
    engine = Engine.from_spec("default", dtype="float32")
    for name in ("float32", "int8"):
        if name == "int8":  # the same fp32 engine, its linear layers quantized in place
            engine.model = torch.ao.quantization.quantize_dynamic(
                engine.model, {torch.nn.Linear}, dtype=torch.qint8, inplace=True)
        one()
        runs = [one() for _ in range(3)]
        variants[name] = {"prefill_ms": 1000 * min(p[0] for p in runs),
                          "step_ms": 1000 * min(p[1] / max(1, p[2] - 1) for p in runs)}
    return {
        "variants": variants,
        "dtype": served, "prompt_tokens": len(ids),
        "prefill_ms": 1000 * min(p[0] for p in plain),
        "step_ms": 1000 * min(p[1] / max(1, p[2] - 1) for p in plain),
        "profiled_step_ms": 1000 * decode_s / max(1, n - 1),
        "weight_mb": params / 1e6,
        "ops": [{"op": e.key, "calls": e.count, "self_ms": e.self_cpu_time_total / 1000,
                 "share": e.self_cpu_time_total / total} for e in ops[:8]],
    }


def _ms(v: Any) -> str:
    return f"{1000 * v:.0f}" if isinstance(v, (int, float)) else "-"


def _span(values: list[float], fmt: str = "{:.1f}") -> str:
    if not values:
        return "-"
    lo, hi = min(values), max(values)
    return fmt.format(lo) if fmt.format(lo) == fmt.format(hi) else \
        f"{fmt.format(lo)}–{fmt.format(hi)}"


def _get(c: dict[str, Any], key: str, stat: str) -> float | None:
    v = (c.get(key) or {}).get(stat)
    return float(v) if isinstance(v, (int, float)) else None


def report(data: dict[str, Any]) -> str:
    cells = data["cells"]

    def of(load: str, server: str) -> list[dict[str, Any]]:
        return [c for c in cells if c["load"] == load and c["server"] == server]

    def mean(load: str, server: str, key: str, stat: str | None = None) -> float:
        vals = [c[key] if stat is None else _get(c, key, stat) for c in of(load, server)]
        vals = [v for v in vals if v is not None]
        return sum(vals) / len(vals) if vals else float("nan")

    m = data["machine"]
    lines = [
        "# Serving benchmark: bbx serve beside llama.cpp's servers", "",
        f"Measured {data['started']} by `scripts/bench_serving.py`, every number in one run on "
        f"one machine: {m['cores']} CPU cores ({m['cpu']}; units {', '.join(m['cpu_units'])}), "
        f"torch {m['torch']}, {m['threads']} threads per server, OMP_WAIT_POLICY=PASSIVE. "
        f"1-minute load average at the start / end: {data['load_average'][0]} / "
        f"{data['load_average'][1]}.", "",
        "All three servers serve the bundled SmolLM2-135M-Instruct GGUF (Q4_1). `llama-server` "
        "and llama-cpp-python compute on the quantized weights; `bbx serve` (started with its "
        "defaults, so `dtype auto`) dequantizes them into torch weights (bf16 on a CPU with "
        "native bf16 units, else fp32). Clients are threads of the benchmark process "
        "(`bbx bench` through the openai SDK), on the same cores as the servers. Prompts: "
        "SST-2 test reviews cut to 20 words in `Review: ...\\nSentiment:`; unless marked "
        "*repeated*, no prompt is sent twice to a server in the whole run (each cell starts "
        "past the texts of the cells before it), so no server answers from a cache. "
        f"Each cell ran {data['rounds']} times, interleaved "
        "with the other servers; ranges below are the rounds' lowest–highest.", "",
        "Reproduce: `flock /tmp/bbx-heavy.lock env OMP_WAIT_POLICY=PASSIVE .venv/bin/python "
        "scripts/bench_serving.py` (builds both llama.cpp servers once into the user cache). "
        "`--report-only` rewrites this file from `results/bench-serving.json`.", "",
        "## Next-token scoring: `/v1/completions`, `max_tokens=1, logprobs=5`", "",
        "| load | " + " | ".join(f"{LABELS[s]} req/s" for s in SERVERS)
        + " | " + " | ".join(f"{LABELS[s]} p50 / p90 ms" for s in SERVERS) + " |",
        "|---|" + "---:|" * (2 * len(SERVERS)),
    ]
    for load, _ in SCORING:
        rps = [_span([c["requests_per_s"] for c in of(load, s)]) for s in SERVERS]
        lat = [f"{_ms(mean(load, s, 'e2e_s', 'p50'))} / {_ms(mean(load, s, 'e2e_s', 'p90'))}"
               for s in SERVERS]
        lines.append(f"| {load} | " + " | ".join(rps) + " | " + " | ".join(lat) + " |")
    lines += ["", "Latency columns are the rounds' mean of each round's percentile.", "",
              "## Streamed generation: `/v1/completions`, `stream=true`, 64 tokens", "",
              "| load | server | req/s | output tok/s | TTFT p50 / p90 ms | ITL p50 / p90 ms "
              "| TPOT p50 / p90 ms | fluidity-index mean / p10 |",
              "|---|---|---:|---:|---:|---:|---:|---:|"]
    for load, _ in STREAMING:
        for s in SERVERS:
            cs = of(load, s)
            row = [load, LABELS[s], _span([c["requests_per_s"] for c in cs], "{:.2f}"),
                   _span([c["output_tokens_per_s"] or 0 for c in cs], "{:.0f}")]
            for key in ("ttft_s", "itl_s", "tpot_s"):
                row.append(f"{_ms(mean(load, s, key, 'p50'))} / {_ms(mean(load, s, key, 'p90'))}")
            row.append(f"{mean(load, s, 'fluidity', 'mean'):.2f} / "
                       f"{mean(load, s, 'fluidity', 'p10'):.2f}")
            lines.append("| " + " | ".join(row) + " |")
    fl = next((c.get("fluidity") for c in cells if c.get("fluidity")), {}) or {}
    lines += ["", f"Fluidity-index (Etalon): the share of a request's tokens that meet their "
              f"deadlines (first token within {fl.get('prefill_deadline_s')} s, then one "
              f"every {fl.get('decode_deadline_s')} s, slack carried forward).", ""]
    failed = sum(c.get("failed") or 0 for c in cells)
    lines += [f"Failed requests over all cells: {failed}.", "", "## The issue's goals", "",
              "| goal | measured | met |", "|---|---:|---|"]

    def ratio(load: str, key: str, stat: str | None, inverse: bool = False) -> float:
        a, b = mean(load, "bbx", key, stat), mean(load, "llama-server", key, stat)
        return b / a if inverse else a / b

    goals = [
        ("32 clients, distinct prompts: bbx req/s ≥ 2x llama-server",
         ratio("next-token c=32", "requests_per_s", None), 2.0),
        ("32 clients, repeated prompt: bbx req/s ≥ 1x llama-server",
         ratio("next-token c=32 repeated", "requests_per_s", None), 1.0),
        ("1 client: bbx p50 latency ≤ 1x llama-server (shown as llama-server / bbx)",
         ratio("next-token c=1", "e2e_s", "p50", inverse=True), 1.0),
        ("streaming, 1 client: bbx TTFT p50 ≤ 1x llama-server (llama-server / bbx)",
         ratio("stream 64 tokens c=1", "ttft_s", "p50", inverse=True), 1.0),
    ]
    for text, value, bound in goals:
        lines.append(f"| {text} | {value:.2f}x | {'yes' if value >= bound else 'no'} |")
    prof = data.get("profile")
    if prof:
        lines += ["", "## Where a streamed token's time goes in bbx", "",
                  f"In-process, the servers stopped: one {prof['prompt_tokens']}-token prompt, "
                  f"then 64 greedy steps of one row in {prof['dtype']} "
                  f"(`scripts/bench_serving.py --profile-only`). Prefill "
                  f"{prof['prefill_ms']:.0f} ms; one decode step {prof['step_ms']:.1f} ms "
                  f"({prof['profiled_step_ms']:.1f} ms under the profiler). Every step reads "
                  f"all {prof['weight_mb']:.0f} MB of weights. Self CPU time by operator "
                  "over the profiled steps:", "",
                  "| operator | calls | self ms | share |", "|---|---:|---:|---:|"]
        for o in prof["ops"]:
            lines.append(f"| `{o['op']}` | {o['calls']} | {o['self_ms']:.0f} | "
                         f"{100 * o['share']:.0f}% |")
        if prof.get("variants"):
            lines += ["", "The same prompt and steps with other weights, in-process (int8: "
                      "torch's dynamic quantization of every linear layer of the fp32 model, "
                      "fbgemm kernels; an experiment, not what bbx serves):", "",
                      "| weights | prefill ms | decode step ms |", "|---|---:|---:|",
                      f"| {prof['dtype']} (served) | {prof['prefill_ms']:.0f} | "
                      f"{prof['step_ms']:.1f} |"]
            for name, v in prof["variants"].items():
                lines.append(f"| {name} | {v['prefill_ms']:.0f} | {v['step_ms']:.1f} |")
        lines += ["", *reading(data, mean, prof)]
    return "\n".join(lines) + "\n"


def reading(data: dict[str, Any], mean: Any, prof: dict[str, Any]) -> list[str]:
    """What the numbers say, each sentence computed from them."""
    itl = {s: mean("stream 64 tokens c=1", s, "itl_s", "p50") for s in SERVERS}
    linear = next((o for o in prof["ops"] if o["op"] == "aten::addmm" or "linear" in o["op"]
                   or o["op"] == "aten::mm"), None)
    steps = 63
    lines = [
        "## Reading", "",
        f"- **Scoring** batches: at 32 clients bbx serves "
        f"{mean('next-token c=32', 'bbx', 'requests_per_s'):.1f} req/s against "
        f"llama-server's {mean('next-token c=32', 'llama-server', 'requests_per_s'):.1f}; "
        "concurrent `/v1/completions` scoring requests share forward passes (the dynamic "
        "batcher), where `-np 8` decodes at most 8 sequences at a time.",
        "- **A repeated prompt** is computed once by bbx (`blackbox/serve/reuse.py`: kept "
        "results and in-flight joins), so the repeated cell measures the HTTP path alone; "
        "llama-server's prompt cache (`--cache-prompt`, on by default) keeps the KV cache "
        "of the prompt a slot last served.",
        f"- **Streaming is where bbx is slower**: one client's inter-token latency is "
        f"{1000 * itl['bbx']:.0f} ms in bbx against {1000 * itl['llama-server']:.0f} ms in "
        f"llama-server. The profile says why: a decode step ({prof['step_ms']:.0f} ms) "
        "runs the transformers module tree op by op",
    ]
    if linear is not None:
        per = linear["self_ms"] / max(1, linear["calls"])
        lines[-1] += (f", and its matrix products (`{linear['op']}`, {linear['calls']} calls "
                      f"over {steps} steps, {per:.2f} ms each) take "
                      f"{100 * linear['share']:.0f}% of the CPU time: one-row products over "
                      f"{prof['weight_mb']:.0f} MB of {prof['dtype']} weights per step, "
                      "against the 98 MB Q4_1 file llama.cpp reads")
    lines[-1] += "."
    q8 = (prof.get("variants") or {}).get("int8")
    if q8:
        lines += [f"- int8 weights alone take a decode step to {q8['step_ms']:.0f} ms and the "
                  f"prefill to {q8['prefill_ms']:.0f} ms (from {prof['step_ms']:.0f} and "
                  f"{prof['prefill_ms']:.0f} ms), against llama-server's "
                  f"{1000 * itl['llama-server']:.0f} ms inter-token latency and "
                  f"{1000 * mean('stream 64 tokens c=1', 'llama-server', 'ttft_s', 'p50'):.0f}"
                  " ms time to first token over HTTP."]
    lines += [
        "- **What would close it** (not done here): weights kept in int8 or int4 with fused "
        "kernels (a quarter to an eighth of the bytes per step), fused q/k/v and gate/up "
        "projections (4 matrix products per layer instead of 7), and a captured graph "
        "(`torch.compile`) instead of per-op dispatch; on a GPU, CUDA graphs. Exact label "
        "log-probs, the reason bbx serves its own model, constrain the first of these to "
        "the generation path.",
    ]
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--quick", action="store_true", help="tiny cells, to check the script")
    ap.add_argument("--json", type=Path, default=REPO / "results" / "bench-serving.json")
    ap.add_argument("--out", type=Path, default=REPO / "results" / "bench-serving.md")
    ap.add_argument("--report-only", action="store_true")
    ap.add_argument("--profile-only", action="store_true",
                    help="only (re)measure the decode profile into the existing JSON")
    args = ap.parse_args()
    if args.report_only or args.profile_only:
        data = json.loads(args.json.read_text())
    else:
        data = run_all(args.rounds, args.quick, args.json)
    if not args.report_only:
        data["profile"] = profile_decode()
        args.json.write_text(json.dumps(data, indent=1) + "\n")
    text = report(data)
    args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
