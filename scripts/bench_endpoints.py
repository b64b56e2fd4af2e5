"""Several endpoints, measured: N calls over E loopback endpoints of fixed latency L (no
compute) at concurrency C each, against the bound 1.2·N·L/(E·C), for E = 1, 2, 4.

Each endpoint is ``tests/loopback.py``'s server in front of a minimal app that sleeps L and
answers a fixed one-token completion, so the wall time measures the remote backend's
transport alone (endpoint choice, the per-endpoint bounds, the SDK's client) and not a
model. Detection (``/v1/bbx``, ``/v1/models``) is done before the clock starts. One run,
no repeats; writes ``results/bench-endpoints.md`` (the machine named by ``lscpu``).

    python scripts/bench_endpoints.py [--calls 384] [--latency 0.1] [--concurrency 8]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))  # the loopback server the tests use

from loopback import LoopbackServer  # noqa: E402

MODEL = "bench-model"


def latency_app(latency: float) -> Any:
    """An ASGI app: ``/v1/models`` lists one model, completions wait ``latency`` and answer
    one fixed token; anything else is 404 (so ``/v1/bbx`` says: not a bbx server)."""
    completion = json.dumps({
        "id": "cmpl-bench", "object": "text_completion", "created": 0, "model": MODEL,
        "choices": [{"index": 0, "text": " ok", "logprobs": None, "finish_reason": "length"}],
    }).encode()
    models = json.dumps({"object": "list", "data": [
        {"id": MODEL, "object": "model", "created": 0, "owned_by": "bench"}]}).encode()

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        path = scope["path"]
        if path == "/v1/completions":
            await receive()
            await asyncio.sleep(latency)
            status, body = 200, completion
        elif path == "/v1/models":
            status, body = 200, models
        else:
            status, body = 404, b'{"error": {"message": "Not Found"}}'
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": body})

    return app


def run(endpoints: int, calls: int, latency: float, concurrency: int) -> dict[str, Any]:
    """Wall time of ``calls`` one-token generations over ``endpoints`` servers."""
    from blackbox.backends.remote import RemoteBackend

    servers = [LoopbackServer(latency_app(latency)) for _ in range(endpoints)]
    bases = [s.__enter__() for s in servers]
    try:
        backend = RemoteBackend(base_url=bases, api_key_env="BBX_BENCH_NO_KEY",
                                max_concurrency=concurrency, api="completions",
                                label_logprobs="generate", timeout=30.0)
        _ = backend.capabilities  # detection, before the clock
        prompts = [f"prompt {i}" for i in range(calls)]
        t0 = time.perf_counter()
        out = backend.generate(prompts, {"max_tokens": 1})
        wall = time.perf_counter() - t0
        assert out == [" ok"] * calls
        backend.close()
    finally:
        for s in servers:
            s.__exit__(None, None, None)
    ideal = calls * latency / (endpoints * concurrency)
    return {"E": endpoints, "wall": wall, "ideal": ideal, "bound": 1.2 * ideal,
            "per_endpoint": [s.counts.by_path.get("/v1/completions", 0) for s in servers]}


def cpu_name() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return "unknown CPU (no lscpu)"
    for line in out.splitlines():
        if line.strip().startswith("Model name:"):
            return line.split(":", 1)[1].strip()
    return "unknown CPU"


def report(rows: list[dict[str, Any]], calls: int, latency: float, concurrency: int,
           cpus: str) -> str:
    lines = [
        "# Several endpoints: wall time against the bound",
        "",
        f"`scripts/bench_endpoints.py`: N = {calls} one-token completions through the remote "
        f"backend (the openai SDK) over E loopback endpoints, each answering after a fixed "
        f"L = {latency * 1000:g} ms with no compute, at concurrency C = {concurrency} per "
        "endpoint. The bound is 1.2·N·L/(E·C); the ideal N·L/(E·C) is what E·C calls in "
        "flight at all times would take. One run, no repeats; detection is outside the "
        "clock.",
        "",
        f"Machine: {cpus}, {cpus_count()} CPUs visible (shared with other jobs while this "
        "ran).",
        "",
        "| E | wall (s) | ideal N·L/(E·C) (s) | bound 1.2× (s) | within | wall / ideal | "
        "calls per endpoint |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(f"| {r['E']} | {r['wall']:.2f} | {r['ideal']:.2f} | {r['bound']:.2f} | "
                     f"{'yes' if r['wall'] <= r['bound'] else 'no'} | "
                     f"{r['wall'] / r['ideal']:.3f} | "
                     f"{', '.join(str(n) for n in r['per_endpoint'])} |")
    lines += ["", "Calls go to the endpoint with the fewest requests in flight, so they split "
              "evenly over endpoints of equal latency.", ""]
    return "\n".join(lines)


def cpus_count() -> int:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else \
        (os.cpu_count() or 1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--calls", type=int, default=384)
    ap.add_argument("--latency", type=float, default=0.1, help="seconds per call")
    ap.add_argument("--concurrency", type=int, default=8, help="per endpoint")
    ap.add_argument("--out", type=Path, default=REPO / "results" / "bench-endpoints.md")
    args = ap.parse_args()
    rows = []
    for e in (1, 2, 4):
        row = run(e, args.calls, args.latency, args.concurrency)
        print(f"E={e}: wall {row['wall']:.2f} s, bound {row['bound']:.2f} s, "
              f"per endpoint {row['per_endpoint']}", flush=True)
        rows.append(row)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(report(rows, args.calls, args.latency, args.concurrency, cpu_name()))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
