"""Benchmark ``bbx serve`` on the bundled SmolLM2-135M: writes results/bench-serve.md.

All in one run on one machine (run it under ``flock /tmp/bbx-heavy.lock`` on shared CPUs):

1. throughput: ``bbx serve`` as a subprocess; 1, 8 and 32 concurrent clients (threads with the
   openai SDK) each sending one-prompt ``/v1/label_logprobs`` requests; requests/s, and the
   32-client rate against serving one request at a time (goal >= 3x) and against the
   in-process batched engine (goal >= 0.8);
2. adapter mixtures: latency of a one-prompt request under a NEW 10-adapter mixture (random
   alpha, beta: nothing cached) vs a plain request, vs materializing the merged weights for
   each new mixture (W += B*A* two ways, forward, restore; goal: mixtures >= 3x faster);
3. a population of 20 mixtures x 15 prompts in one batched call vs 20 sequential
   materialize-and-evaluate rounds (Evo-Merging's inner loop).

Without ``--adapters`` it builds 10 random PEFT LoRA adapters (r=8, alpha=16, all seven
projections, as Evo-Merging's pool) in a temp folder: timing does not depend on training.

    flock /tmp/bbx-heavy.lock .venv/bin/python scripts/bench_serve.py
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SUBJECTS = ["the film", "this movie", "the plot", "the acting", "the soundtrack", "the ending",
            "the director's latest", "the script", "the cast", "this sequel"]
VERDICTS = ["was a delight from start to finish", "felt long, dull and lifeless",
            "is an engrossing portrait of a family", "made no sense at all",
            "has moments of real beauty", "wastes a talented cast on weak jokes",
            "kept me on the edge of my seat", "is forgettable and flat"]
TEMPLATE = "Review: {text}\nSentiment:"
WORDS = [" negative", " positive"]
PROJ = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def prompts(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [TEMPLATE.format(text=f"{rng.choice(SUBJECTS).capitalize()} "
                            f"{rng.choice(VERDICTS)}.") for _ in range(n)]


def build_adapters(folder: Path, model_folder: Path, n: int = 10) -> Path:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    for i in range(n):
        base = AutoModelForCausalLM.from_pretrained(model_folder, dtype=torch.float32)
        torch.manual_seed(i)
        peft_model = get_peft_model(base, LoraConfig(r=8, lora_alpha=16, target_modules=PROJ,
                                                     init_lora_weights=False))
        with torch.no_grad():
            for name, p in peft_model.named_parameters():
                if "lora_" in name:
                    p.copy_(torch.randn_like(p) * 0.02)
        peft_model.save_pretrained(folder / f"lora{i:02d}")
    return folder


def new_mixture(rng: random.Random, names: list[str]) -> dict:
    return {"adapters": names, "alpha": [rng.uniform(0.2, 1.0) for _ in names],
            "beta": [rng.uniform(-1.0, 1.0) / len(names) for _ in names]}


# ---- 1. throughput over HTTP ----------------------------------------------------------

def start_server(adapters: Path, port: int, max_wait_ms: float,
                 threads: int) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "blackbox.cli.main", "serve", "--model", "default",
           "--adapters", str(adapters), "--port", str(port), "--log-level", "warning",
           "--max-wait-ms", str(max_wait_ms)]
    if threads:
        cmd += ["--threads", str(threads)]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    import httpx2

    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"bbx serve exited: {proc.stderr.read().decode()[-2000:]}")
        try:
            if httpx2.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                return proc
        except httpx2.TransportError:
            pass
        time.sleep(0.5)
    proc.kill()
    raise SystemExit("bbx serve did not start in 300 s")


def _cpu_seconds(pid: int | None = None) -> float:
    """CPU time (user + system, all threads) of this process, or of ``pid`` from /proc."""
    if pid is None:
        r = resource.getrusage(resource.RUSAGE_SELF)
        return r.ru_utime + r.ru_stime
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")  # no /proc (not Linux): the column shows nan
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def throughput(base: str, clients: int, texts: list[str], seconds: float,
               server_pid: int | None = None) -> dict:
    import httpx2
    import openai

    client = openai.OpenAI(base_url=base, api_key="EMPTY", max_retries=0, timeout=120)
    done: list[float] = []
    stop_at = time.perf_counter() + seconds
    lock = threading.Lock()

    def worker(k: int) -> None:
        i = k
        while i == k or time.perf_counter() < stop_at:  # at least one request each
            t0 = time.perf_counter()
            client.post("/label_logprobs", body={"prompts": [texts[i % len(texts)]],
                                                 "label_words": WORDS}, cast_to=object)
            with lock:
                done.append(time.perf_counter() - t0)
            i += clients

    # warm up: the first requests pay for lazy initialisation
    for t in texts[:4]:
        client.post("/label_logprobs", body={"prompts": [t], "label_words": WORDS},
                    cast_to=object)
    health = base.removesuffix("/v1") + "/health"
    before = httpx2.get(health, timeout=10).json()["batching"]
    cpu0, srv0 = _cpu_seconds(), _cpu_seconds(server_pid) if server_pid else float("nan")
    t0 = time.perf_counter()
    threads = [threading.Thread(target=worker, args=(k,)) for k in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    cpu1, srv1 = _cpu_seconds(), _cpu_seconds(server_pid) if server_pid else float("nan")
    after = httpx2.get(health, timeout=10).json()["batching"]
    calls = max(1, after["calls"] - before["calls"])
    return {"clients": clients, "requests": len(done), "wall_s": wall,
            "per_call": (after["items"] - before["items"]) / calls,
            "busy": (after["busy_s"] - before["busy_s"]) / wall,
            # cores used: the clients share the server's 2 cores, so what they burn is
            # taken from the model
            "client_cores": (cpu1 - cpu0) / wall, "server_cores": (srv1 - srv0) / wall,
            "rps": len(done) / wall, "p50_ms": 1000 * statistics.median(done),
            "p90_ms": 1000 * sorted(done)[int(0.9 * (len(done) - 1))]}


# ---- 2./3. mixtures in-process -----------------------------------------------------------

def materialize_and_run(backend, spec: dict, texts: list[str]) -> list[list[float]]:
    """A baseline: merge the mixture into the weights (all deltas ``B @ A*`` first), evaluate,
    subtract them again."""
    import torch

    repo, engine = backend.repository, backend.engine
    factors = repo.factors(spec)  # the same sparsify + mix as the batched path
    with torch.no_grad():
        deltas = {m: b @ a for m, (a, b) in factors.items()}
        for m, d in deltas.items():
            engine.model.get_submodule(m).weight.add_(d.to(engine.dtype))
        try:
            return engine.label_logprobs(texts, WORDS)
        finally:
            for m, d in deltas.items():
                engine.model.get_submodule(m).weight.sub_(d.to(engine.dtype))


def materialize_in_place(backend, spec: dict, texts: list[str],
                         originals: dict) -> list[list[float]]:
    """The leaner baseline: ``W.addmm_(B, A*)`` per module (no delta tensors), evaluate, copy
    the base weights back from ``originals`` (exact, where subtracting is not)."""
    import torch

    repo, engine = backend.repository, backend.engine
    factors = repo.factors(spec)
    with torch.no_grad():
        for m, (a, b) in factors.items():
            engine.model.get_submodule(m).weight.addmm_(b.to(engine.dtype), a.to(engine.dtype))
        try:
            return engine.label_logprobs(texts, WORDS)
        finally:
            for m in factors:
                engine.model.get_submodule(m).weight.copy_(originals[m])


def timed(fn, repeats: int) -> list[float]:
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def interleaved(fns: dict, repeats: int) -> dict[str, float]:
    """Median ms of each function, timed in rounds (one of each per round), so a change in
    the machine's load during the run touches all of them alike."""
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            times[k] += timed(fn, 1)
    return {k: 1000 * statistics.median(v) for k, v in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--adapters", type=Path, default=None, help="a folder of 10+ adapters")
    ap.add_argument("--seconds", type=float, default=20.0, help="per concurrency level")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--max-wait-ms", type=float, default=4.0)
    ap.add_argument("--out", type=Path, default=REPO / "results" / "bench-serve.md")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = ap.parse_args()
    sys.path.insert(0, str(REPO))
    # as `bbx serve` does (see blackbox.api.serve): idle OpenMP threads sleep, not spin, so
    # the in-process rates below are measured under the same setting as the server's
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    import torch

    from blackbox.backends.local import LocalBackend
    from blackbox.engine.loader import converted_folder, resolve_spec

    torch.manual_seed(0)
    load0 = os.getloadavg()[0]
    if args.threads:
        torch.set_num_threads(args.threads)
    texts = prompts(256)
    tmp = Path(tempfile.mkdtemp(prefix="bbx-bench-serve-"))
    backend = LocalBackend(model="default", dtype="auto", batch_size=32)
    _ = backend.engine  # convert the GGUF once if needed
    adapters = args.adapters
    if adapters is None:
        print("building 10 random LoRA adapters ...", flush=True)
        adapters = build_adapters(tmp / "zoo", converted_folder(resolve_spec("default")))
    names = sorted(p.name for p in adapters.iterdir() if (p / "adapter_config.json").is_file())
    names = names[:10]
    backend.close()
    backend = LocalBackend(model="default", dtype="auto", batch_size=32, adapters=str(adapters))
    engine = backend.engine
    dtype = str(engine.dtype).removeprefix("torch.")

    # mixtures vs plain vs materializing, one prompt, in-process
    from blackbox.backends.base import normalize_adapter

    rng = random.Random(1)
    one = texts[:1]
    repeats = 12
    for _ in range(2):  # first use of each adapter ranks its magnitudes once (cached after)
        backend.label_logprobs(one, WORDS, adapter=new_mixture(rng, names))
    fixed = new_mixture(rng, names)  # Evo-Merging's stage 2: alpha fixed, a new beta each time
    backend.label_logprobs(one, WORDS, adapter=fixed)
    backend.label_logprobs(one, WORDS, adapter=fixed)  # a pair's second request keeps the copy
    originals = {m: engine.model.get_submodule(m).weight.detach().clone()
                 for m in backend.repository.factors(normalize_adapter(fixed))}

    def new_beta() -> dict:
        return {**fixed, "beta": [rng.uniform(-1.0, 1.0) / len(names) for _ in names]}

    med = interleaved({
        "plain": lambda: backend.label_logprobs(one, WORDS),
        "mixed": lambda: backend.label_logprobs(one, WORDS, adapter=new_mixture(rng, names)),
        "compose": lambda: backend.repository.factors(
            normalize_adapter(new_mixture(rng, names))),
        "mat": lambda: materialize_and_run(backend, new_mixture(rng, names), one),
        "inplace": lambda: materialize_in_place(backend, new_mixture(rng, names), one,
                                                originals),
        "beta": lambda: backend.label_logprobs(one, WORDS, adapter=new_beta()),
    }, repeats)
    spec = new_mixture(rng, names)
    check = backend.label_logprobs(texts[:4], WORDS, adapter=spec)
    ref = materialize_in_place(backend, normalize_adapter(spec), texts[:4], originals)
    max_diff = max(abs(a - b) for r1, r2 in zip(check, ref, strict=True)
                   for a, b in zip(r1, r2, strict=True))
    print(", ".join(f"{k} {v:.0f} ms" for k, v in med.items())
          + f" (max |diff| {max_diff:.2e})", flush=True)

    # a population of 20 mixtures x 15 prompts: one batched call vs 20 materialize rounds
    pop = [normalize_adapter(new_mixture(rng, names)) for _ in range(20)]
    batch_prompts = texts[:15]
    t0 = time.perf_counter()
    backend.call_rows("label_logprobs", ([p for _ in pop for p in batch_prompts], WORDS),
                      [s for s in pop for _ in batch_prompts])
    pop_batched = time.perf_counter() - t0
    pop2 = [normalize_adapter(new_mixture(rng, names)) for _ in range(20)]
    t0 = time.perf_counter()
    for s in pop2:
        materialize_in_place(backend, s, batch_prompts, originals)
    pop_mat = time.perf_counter() - t0
    print(f"population: batched {pop_batched:.2f} s, materialized {pop_mat:.2f} s", flush=True)

    # in-process batched engine rate (the ceiling for the server), measured last before the
    # server starts. Two ways: all 256 prompts in one call (the engine sorts them by length
    # across the whole call, the least padding) and 8 calls of 32 in arrival order, which is
    # what the server's batches look like. Each is prompts over wall time across 2 rounds
    # (interleaved), a sustained rate like the server's over its window, not a best case.
    backend.label_logprobs(texts[:32], WORDS)
    spent = {"one": 0.0, "per_32": 0.0}
    rounds = 2
    for _ in range(rounds):
        t0 = time.perf_counter()
        backend.label_logprobs(texts, WORDS)
        spent["one"] += time.perf_counter() - t0
        t0 = time.perf_counter()
        for i in range(0, len(texts), 32):
            backend.label_logprobs(texts[i:i + 32], WORDS)
        spent["per_32"] += time.perf_counter() - t0
    engine_rate = rounds * len(texts) / spent["one"]
    engine_rate_32 = rounds * len(texts) / spent["per_32"]
    print(f"in-process engine: {engine_rate:.1f} prompts/s in one call, {engine_rate_32:.1f} "
          "in calls of 32", flush=True)
    backend.close()

    # throughput over HTTP, bbx serve in its own process
    port = args.port or free_port()
    server = start_server(adapters, port, args.max_wait_ms, args.threads)
    base = f"http://127.0.0.1:{port}/v1"
    levels = []
    try:
        for clients in (1, 8, 32):
            r = throughput(base, clients, texts, args.seconds, server.pid)
            print(f"{clients:>2} clients: {r['rps']:.1f} req/s, p50 {r['p50_ms']:.0f} ms",
                  flush=True)
            levels.append(r)
        http_mix = http_mixture_latency(base, names, rng, repeats)
    finally:
        server.terminate()
        server.wait(timeout=60)
    write_report(args.out, {
        "engine_rate": engine_rate, "engine_rate_32": engine_rate_32, "levels": levels,
        "med": med, "repeats": repeats, "max_diff": max_diff, "pop_batched": pop_batched,
        "pop_mat": pop_mat, "http_mix": http_mix, "dtype": dtype, "load0": load0,
        "names": names, "weights": sum(w.numel() for w in originals.values())}, args)


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def http_mixture_latency(base: str, names: list[str], rng: random.Random,
                         repeats: int) -> dict[str, float]:
    import openai

    client = openai.OpenAI(base_url=base, api_key="EMPTY", max_retries=0, timeout=120)
    text = prompts(1, seed=9)[0]

    def call(adapter: dict | None) -> None:
        body: dict = {"prompts": [text], "label_words": WORDS}
        if adapter is not None:
            body["adapter"] = adapter
        client.post("/label_logprobs", body=body, cast_to=object)

    call(None)
    plain = timed(lambda: call(None), repeats)
    mixed = timed(lambda: call(new_mixture(rng, names)), repeats)
    return {"plain_ms": 1000 * statistics.median(plain),
            "mixture_ms": 1000 * statistics.median(mixed)}


def write_report(out: Path, r: dict, args) -> None:
    """Write the markdown report from the run's measurements ``r`` (see :func:`main`)."""
    import torch

    levels, med, http_mix = r["levels"], r["med"], r["http_mix"]
    one, many = levels[0]["rps"], levels[-1]["rps"]
    engine_rate, engine_rate_32 = r["engine_rate"], r["engine_rate_32"]
    mat = min(med["mat"], med["inplace"])  # the faster baseline is the one to beat
    lines = [
        "# bbx serve benchmark",
        "",
        f"Measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} by "
        "`scripts/bench_serve.py`, all in one run on one machine: "
        f"{os.cpu_count()} CPU cores ({platform.processor() or platform.machine()}), "
        f"torch {torch.__version__} with {torch.get_num_threads()} threads "
        f"(OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'default')}), model SmolLM2-135M-"
        f"Instruct (bundled GGUF, converted) in {r['dtype']}. The CPU is shared with other jobs "
        "(the run holds `/tmp/bbx-heavy.lock`, which they also take), so numbers move a few "
        "percent between runs. 1-minute load average at the start / end: "
        f"{r['load0']:.1f} / {os.getloadavg()[0]:.1f}.",
        "",
        "Reproduce: `flock /tmp/bbx-heavy.lock .venv/bin/python scripts/bench_serve.py`",
        "",
        "## Throughput: one-prompt `/v1/label_logprobs` requests",
        "",
        f"`bbx serve` in its own process (uvicorn, dynamic batching with max wait "
        f"{args.max_wait_ms:g} ms); clients are threads of the benchmark process using the "
        f"openai SDK, each sending requests back to back for {args.seconds:g} s. Prompts are "
        "SST-2-style reviews in `Review: ...\\nSentiment:` (about 20 tokens), two label "
        "words.",
        "",
        "| concurrent clients | requests | requests/s | prompts per forward call | model busy "
        "| CPU cores: server / clients | p50 latency (ms) | p90 latency (ms) |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for lv in levels:
        lines.append(f"| {lv['clients']} | {lv['requests']} | {lv['rps']:.1f} | "
                     f"{lv['per_call']:.1f} | {lv['busy']:.0%} | "
                     f"{lv['server_cores']:.2f} / {lv['client_cores']:.2f} | "
                     f"{lv['p50_ms']:.0f} | {lv['p90_ms']:.0f} |")
    lines += [
        "",
        "*model busy*: the share of the wall time the server spent inside backend calls "
        "(`/health` reports it as `batching.busy_s`). *CPU cores*: CPU seconds per wall "
        "second of the server process and of the benchmark process (the client threads) "
        f"over the run; the machine has {os.cpu_count()}.",
        "",
        f"- in-process batched engine (`LocalBackend.label_logprobs`, measured just before "
        "the server started; prompts over wall time across 2 rounds): 256 prompts "
        f"in one call (sorted by length across all of them): **{engine_rate:.1f} "
        f"prompts/s**; in 8 calls of 32 (batches like the server's): {engine_rate_32:.1f} "
        "prompts/s",
        f"- 32 clients vs one request at a time: **{many / one:.2f}x** (goal >= 3x)",
        f"- 32 clients vs the in-process batched engine: **{many / engine_rate:.2f}** "
        f"(goal >= 0.8; {many / engine_rate_32:.2f} against calls of 32)",
        "",
        "## Adapter mixtures: a new 10-adapter mixture per request",
        "",
        f"Adapters: {len(r['names'])} LoRA adapters (r=8, alpha=16, q/k/v/o/gate/up/down on "
        "all 30 layers, 4.9M parameters each)"
        + (" built with random weights (timing does not depend on training)"
           if args.adapters is None else f" from {args.adapters}") + ". Every mixture has "
        "fresh random alpha in [0.2, 1] and beta, so no sparsified factor is cached. One "
        f"prompt, in-process, median of {r['repeats']} requests each, timed in rounds (one "
        "of each kind per round):",
        "",
        "| request | latency (ms) |",
        "|---|---:|",
        f"| plain (base model) | {med['plain']:.0f} |",
        f"| 10-adapter mixture, low-rank factors in the batched matmuls | {med['mixed']:.0f} |",
        f"| 10-adapter mixture, materialized: deltas B·A* per module, W += delta, evaluate, "
        f"W -= delta | {med['mat']:.0f} |",
        f"| 10-adapter mixture, materialized in place: W.addmm_(B, A*), evaluate, copy W "
        f"back | {med['inplace']:.0f} |",
        f"| 10-adapter mixture, alpha fixed and a new beta (cached sparse factors) | "
        f"{med['beta']:.0f} |",
        f"| composing a new 10-adapter mixture alone (sparsify + mix, no forward pass) | "
        f"{med['compose']:.0f} |",
        "",
        f"- mixture vs plain: **{med['mixed'] / med['plain']:.2f}x** the latency",
        f"- materializing (the faster of the two ways) vs mixture: **{mat / med['mixed']:.2f}x** "
        "slower (goal: mixtures >= 3x faster)",
        f"- the two agree: max |difference| of the label log-probs {r['max_diff']:.1e}",
        "- both paths compose the mixture the same way; what materializing adds is rewriting "
        f"and restoring the {r['weights'] / 1e6:.0f}M weights of the targeted layers: "
        f"{mat - med['compose'] - med['plain']:.0f} ms here, against the one-prompt forward "
        "pass's "
        f"{med['plain']:.0f} ms: even if composing and applying a mixture cost nothing, "
        f"the ratio would be at most about {(mat - med['compose']) / med['plain']:.1f}x on "
        "this machine",
        f"- over HTTP (`bbx serve`, one client): plain {http_mix['plain_ms']:.0f} ms, new "
        f"10-adapter mixture {http_mix['mixture_ms']:.0f} ms",
        "",
        "## A population of 20 mixtures (Evo-Merging's inner loop)",
        "",
        "20 new mixtures x 15 prompts: one batched call in which every row carries its own "
        "mixture, against 20 rounds of materialize-and-evaluate (in place, as above).",
        "",
        "| how | wall time (s) |",
        "|---|---:|",
        f"| one batched call (300 rows) | {r['pop_batched']:.2f} |",
        f"| 20 sequential materialize-and-evaluate rounds | {r['pop_mat']:.2f} |",
        "",
        f"- batched population: **{r['pop_mat'] / r['pop_batched']:.2f}x** faster",
        "",
    ]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
