"""Benchmark: a population of mixtures scored in ONE batched pass vs one round per mixture.

    flock /tmp/bbx-heavy.lock env OMP_WAIT_POLICY=PASSIVE .venv/bin/python scripts/bench_merge.py

Three ways to score a population of P mixtures (default 20) on the same n user prompts
(default 16 SST-2 sentences) with the real model and the real zoo:

(a) batched — what ``bbx merge`` sends: P·n rows in one ``label_logprobs`` call, each row
    carrying its own mixture as low-rank factors (per-row LoRA in shared forward passes);
(b) sequential materialize-and-evaluate — what a server without per-row mixtures does: per
    mixture, write W + B*·A* into the base weights, score the n prompts, restore W;
(c) sequential per-mixture calls — P calls of n rows with the mixture applied by hooks.

All three are measured in the same run, alternating, ``--rounds`` times; sparsify/mix
caches are cleared before each so that every way pays for composing its mixtures. The
answers are compared (largest |difference| in log-prob).
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
from bench_engine import cpu_model  # scripts/ is on sys.path when run as a script


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="default")
    ap.add_argument("--zoo", default="zoo", help="adapter folder (default: the built zoo)")
    ap.add_argument("--task", default="sst-2")
    ap.add_argument("--examples", type=int, default=16)
    ap.add_argument("--population", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--dtype", default="float32",
                    help="engine dtype (default fp32, as the merge grid: in bf16 (b) would "
                    "round B*·A* into bf16 weights)")
    ap.add_argument("--out", default="results/bench-merge.md")
    args = ap.parse_args()

    import torch

    from blackbox.backends.local import LocalBackend
    from blackbox.data import get_task
    from blackbox.methods.merge.objective import mixture, prompts_of, split_user_and_test

    backend = LocalBackend(model=args.model, adapters=args.zoo, batch_size=32, dtype=args.dtype)
    engine, repo = backend.engine, backend.repository
    names = repo.names()
    task = get_task(args.task)
    user, _ = split_user_and_test(task, args.examples, 200, seed=0)
    prompts = prompts_of(task, 0, user)
    words = list(task.label_words)
    rng = np.random.default_rng(0)
    n = len(names)

    def population() -> list[dict]:
        # new values each round: nothing is reused from a previous round's caches
        return [mixture(names, rng.uniform(0.3, 1.0, n).round(6),
                        rng.normal(1 / n, 0.3, n).round(6)) for _ in range(args.population)]

    def clear() -> None:
        repo.clear_caches()  # each way pays for composing its mixtures

    def batched(specs: list[dict]) -> np.ndarray:
        rows = backend.call_rows("label_logprobs", ([p for _ in specs for p in prompts], words),
                                 [s for s in specs for _ in prompts])
        return np.asarray(rows).reshape(len(specs), len(prompts), -1)

    def materialized(specs: list[dict]) -> np.ndarray:
        out = []
        for spec in specs:
            factors = repo.factors(spec)
            saved = {}
            with torch.no_grad():
                for m, (a, b) in factors.items():
                    w = engine.model.get_submodule(m).weight
                    saved[m] = w.detach().clone()
                    w += (b @ a).to(w.dtype)
                try:
                    out.append(engine.label_logprobs(prompts, words))
                finally:
                    for m, w0 in saved.items():
                        engine.model.get_submodule(m).weight.copy_(w0)
        return np.asarray(out)

    def per_call(specs: list[dict]) -> np.ndarray:
        return np.asarray([backend.label_logprobs(prompts, words, adapter=s) for s in specs])

    ways = {"(a) batched: one call, per-row mixtures": batched,
            "(b) sequential materialize-and-evaluate": materialized,
            "(c) sequential calls, one mixture each": per_call}
    batched(population()[:2])  # warm-up: load the adapters, first forward passes
    times: dict[str, list[float]] = {k: [] for k in ways}
    diffs: list[float] = []
    load = [os.getloadavg()[0]]
    for r in range(args.rounds):
        specs = population()
        answers = []
        for name, fn in ways.items():
            clear()
            t0 = time.perf_counter()
            answers.append(fn(specs))
            times[name].append(time.perf_counter() - t0)
            print(f"round {r}: {name}: {times[name][-1]:.1f} s", flush=True)
        diffs.append(max(float(np.abs(a - answers[0]).max()) for a in answers[1:]))
    load.append(os.getloadavg()[0])

    tokens = sum(engine.count_tokens(prompts)) * args.population
    best = {k: min(v) for k, v in times.items()}
    first = next(iter(best))
    lines = [
        "# Merge benchmark: a population of mixtures in one batched pass vs one round each",
        "",
        f"Made by `.venv/bin/python scripts/bench_merge.py --dtype {args.dtype} "
        f"--population {args.population} "
        f"--examples {args.examples} --rounds {args.rounds}` (under `flock "
        "/tmp/bbx-heavy.lock`); every number below was measured in that one run, the three "
        "ways alternating within each round.",
        "",
        "## Machine",
        "",
        "| | |",
        "|---|---|",
        f"| CPU | {cpu_model()}, {os.cpu_count()} cores, "
        f"torch threads {torch.get_num_threads()} |",
        f"| engine placement | {backend.placement.device}, {backend.placement.dtype} |",
        f"| torch | {torch.__version__} |",
        f"| 1-min load average, start / end | {load[0]:.1f} / {load[1]:.1f} |",
        "",
        "## Workload",
        "",
        f"{backend.source.name} with the {n} adapters of the zoo ({', '.join(names)}; LoRA "
        f"r=8 on q,k,v,o,gate,up,down), a population of {args.population} random mixtures "
        f"(α ∈ [0.3, 1], β ~ N(1/N, 0.3)), each scored on the same {len(prompts)} "
        f"{task.name} prompts: {tokens} prompt tokens per population. Sparsify and mixture "
        "caches are cleared before every way, so each pays for composing its mixtures.",
        "",
        "## Results",
        "",
        "| way | seconds (best) | all rounds | relative to (a) |",
        "|---|---:|---|---:|",
    ]
    for k, v in times.items():
        lines.append(f"| {k} | {best[k]:.1f} | {', '.join(f'{x:.1f}' for x in v)} | "
                     f"{best[k] / best[first]:.2f}x |")
    lines += [
        "",
        f"- largest |difference| of any log-prob between the ways: {max(diffs):.2e} nats "
        f"({backend.placement.dtype}; (b) adds B*·A* into the weights in that dtype)",
        "",
    ]
    Path(args.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
