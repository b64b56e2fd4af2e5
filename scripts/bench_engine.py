"""Benchmark the engine's label_logprobs against the loop a user would write first.

Measures, in one run on one machine, on SST-2 test prompts with label words
" negative" / " positive":

(a) the naive loop: fp32, one prompt per forward pass, logits at every position, then a
    log-softmax of the last position;
(b) the engine: batched, left-padded, logits at the scoring position only, in the dtype
    "auto" picks for this hardware;

their tokens/s and ratio, the largest absolute difference between their label-word
log-probs, and the engine's rate as a fraction of the bound set by this machine's measured
matmul rate (bound tok/s = matmul FLOP/s / (2 x non-embedding params)). The VM this runs on
may be noisy, so every rate is the best of ``--rounds`` interleaved runs; all runs are listed.

Usage: .venv/bin/python scripts/bench_engine.py [--n 200] [--rounds 2] [--out FILE.md]
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import torch
import transformers

from blackbox.data import get_task, load_split
from blackbox.data.tasks import render
from blackbox.engine.loader import choose_placement, load_model
from blackbox.engine.runtime import Engine
from blackbox.machine import cpu_bf16_units, cpu_description

WORDS = [" negative", " positive"]
REPO = Path(__file__).resolve().parents[1]


def cpu_model() -> str:
    return cpu_description()["cpu"]


def matmul_gflops(dtype: torch.dtype, n: int = 2048, reps: int = 5, rounds: int = 3) -> float:
    """Best-of-rounds GFLOP/s of an n x n matmul in ``dtype``."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    for _ in range(2):
        a @ b
    best = 0.0
    for _ in range(rounds):
        t0 = time.perf_counter()
        for _ in range(reps):
            a @ b
        best = max(best, 2 * n**3 * reps / (time.perf_counter() - t0) / 1e9)
    return best


def naive_label_logprobs(model, tokenizer, prompts: list[str]) -> list[list[float]]:
    """What one writes first: one prompt at a time, full logits, log-softmax of the last row."""
    ids = [tokenizer(w, add_special_tokens=False).input_ids[0] for w in WORDS]
    out = []
    with torch.no_grad():
        for p in prompts:
            enc = tokenizer(p, return_tensors="pt")
            logits = model(**enc).logits
            logp = torch.log_softmax(logits[0, -1], dim=-1)
            out.append([float(logp[i]) for i in ids])
    return out


def non_embedding_params(model) -> int:
    """Parameters that every token passes through (decoder layers + final norm)."""
    skip = {id(model.get_input_embeddings().weight), id(model.get_output_embeddings().weight)}
    return sum(p.numel() for p in model.parameters() if id(p) not in skip)


def timed(fn):
    t0 = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=200, help="number of SST-2 test prompts")
    ap.add_argument("--rounds", type=int, default=2, help="interleaved timing rounds")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--out", default=str(REPO / "results" / "bench-engine.md"))
    args = ap.parse_args()

    task = get_task("sst-2")
    prompts = [render(task.template, e.text) for e in load_split(task, "test")[: args.n]]
    # Other work on the machine skews every rate (most of all the naive loop's many small
    # kernels): record the load so a reader can tell a quiet run from a busy one.
    load_start = os.getloadavg()[0]
    auto = choose_placement("auto", "auto")
    print(f"placement: {auto}")

    print("matmul rates ...")
    gflops = {"float32": matmul_gflops(torch.float32), "bfloat16": matmul_gflops(torch.bfloat16)}
    print(gflops)

    ref = load_model("default", device="cpu", dtype="float32")
    tok = ref.tokenizer
    n_tokens = sum(len(x) for x in tok(prompts).input_ids)
    if auto.device == "cpu" and auto.dtype == "float32":
        fast_model = ref.model  # the best dtype here is fp32 itself: share the weights
    else:
        fast_model = load_model("default", device=auto.device, dtype=auto.dtype).model
    engine = Engine(fast_model, tok, auto.device, getattr(torch, auto.dtype),
                    batch_size=args.batch_size)
    n_params = non_embedding_params(ref.model)

    # warm-up: first calls allocate and pick kernels
    naive_label_logprobs(ref.model, tok, prompts[:4])
    engine.label_logprobs(prompts[:8], WORDS)

    # Interleave the two in chunks of 2 batches (alternating which goes first), so that a
    # change in the machine's load hits both alike; sum the chunk times per round.
    chunk = 2 * args.batch_size
    naive_times, engine_times = [], []
    naive_out: list[list[float]] = []
    engine_out: list[list[float]] = []
    for r in range(args.rounds):
        t_naive = t_engine = 0.0
        naive_out, engine_out = [], []
        for k, start in enumerate(range(0, len(prompts), chunk)):
            part = prompts[start:start + chunk]
            for which in ("naive", "engine") if k % 2 == 0 else ("engine", "naive"):
                if which == "naive":
                    res, t = timed(lambda p=part: naive_label_logprobs(ref.model, tok, p))
                    naive_out += res
                    t_naive += t
                else:
                    res, t = timed(lambda p=part: engine.label_logprobs(p, WORDS))
                    engine_out += res
                    t_engine += t
        naive_times.append(t_naive)
        engine_times.append(t_engine)
        print(f"round {r}: naive {n_tokens / t_naive:.0f} tok/s, "
              f"engine {n_tokens / t_engine:.0f} tok/s, load {os.getloadavg()[0]:.1f}")

    # the other dtype, on a subset, to show why "auto" chose what it chose
    other = "bfloat16" if auto.dtype == "float32" else "float32"
    sub = prompts[:48]
    sub_tokens = sum(len(x) for x in tok(sub).input_ids)
    other_model = load_model("default", device=auto.device, dtype=other).model
    other_engine = Engine(other_model, tok, auto.device, getattr(torch, other),
                          batch_size=args.batch_size)
    other_engine.label_logprobs(sub[:8], WORDS)
    _, t_other = timed(lambda: other_engine.label_logprobs(sub, WORDS))
    other_rate = sub_tokens / t_other

    naive_rate = n_tokens / min(naive_times)
    engine_rate = n_tokens / min(engine_times)
    diff = max(abs(a - b) for ra, rb in zip(naive_out, engine_out, strict=True)
               for a, b in zip(ra, rb, strict=True))
    bound = gflops[auto.dtype] * 1e9 / (2 * n_params)
    bound_fp32 = gflops["float32"] * 1e9 / (2 * n_params)
    acc_naive = acc_engine = 0
    labels = [e.label for e in load_split(task, "test")[: args.n]]
    for y, a, b in zip(labels, naive_out, engine_out, strict=True):
        acc_naive += int(max(range(2), key=lambda k: a[k]) == y)
        acc_engine += int(max(range(2), key=lambda k: b[k]) == y)

    def runs(times: list[float]) -> str:
        return ", ".join(f"{n_tokens / t:.0f}" for t in times)

    load_end = os.getloadavg()[0]
    rows = [
        ("(a) naive loop: fp32, batch 1, full logits at every position",
         f"{naive_rate:.0f}", runs(naive_times)),
        (f"(b) engine: {auto.dtype}, batch {args.batch_size}, logits at the scoring position only",
         f"{engine_rate:.0f}", runs(engine_times)),
        (f"engine in {other} (not chosen here; first {len(sub)} prompts)", f"{other_rate:.0f}", ""),
    ]
    table = "\n".join(f"| {a} | {b} | {c} |" for a, b, c in rows)
    acc = f"{acc_naive / len(labels):.3f} / {acc_engine / len(labels):.3f}"

    md = f"""# Engine benchmark: `label_logprobs` on SST-2

Made by `.venv/bin/python scripts/bench_engine.py` (n={args.n}, rounds={args.rounds},
batch size {args.batch_size}); every number below was measured in that one run on one machine.

## Machine

| | |
|---|---|
| CPU | {cpu_model()} |
| cores (os / torch threads) | {os.cpu_count()} / {torch.get_num_threads()} |
| native bf16 matmul (AMX / AVX-512 BF16) | {cpu_bf16_units() or "no"} |
| torch / transformers | {torch.__version__} / {transformers.__version__} |
| engine placement ("auto") | {auto.device}, {auto.dtype}: {auto.reason} |
| matmul rate, 2048x2048, fp32 | {gflops["float32"]:.0f} GFLOP/s |
| matmul rate, 2048x2048, bf16 | {gflops["bfloat16"]:.0f} GFLOP/s |
| 1-min load average, start / end | {load_start:.1f} / {load_end:.1f} |

## Workload

SmolLM2-135M-Instruct (the bundled default model), {args.n} SST-2 test sentences in the
template `{task.template!r}`, label words `" negative"`, `" positive"`: {n_tokens} prompt
tokens, {n_tokens / len(prompts):.1f} per prompt. Non-embedding parameters: {n_params / 1e6:.1f} M,
so one token costs {2 * n_params / 1e6:.0f} MFLOP.

## Results

| | tokens/s (best) | all rounds |
|---|---:|---|
{table}

- **speed-up (b)/(a): {engine_rate / naive_rate:.2f}x**
- largest |difference| between (a) and (b) label-word log-probs: {diff:.2e} nats
- accuracy of the argmax label on these {len(labels)} sentences, (a) / (b): {acc}
- bound for (b) from the {auto.dtype} matmul rate: {bound:.0f} tok/s; the engine reaches
  **{engine_rate / bound:.0%}** of it (the naive loop reaches {naive_rate / bound_fp32:.0%} of
  the fp32 bound of {bound_fp32:.0f} tok/s)

Rates are best-of-rounds, and (a) and (b) alternate in chunks of {chunk} prompts within each
round, because this machine is a shared VM whose speed varies with other work on it (see the
load average above; 2 cores); the column "all rounds" shows the spread.
"""
    if auto.dtype == "float32" and engine_rate < 5 * naive_rate:
        # Say plainly why the goal set on a bf16 machine is out of reach on this one.
        md += f"""
## Why the ratio is below 5x on this machine

The ≥5x goal was set on a CPU with AMX, where bf16 matmuls run several times faster than
fp32 and "auto" picks bf16. This CPU has no native bf16 matmul (neither AMX nor AVX-512
BF16), so the engine stays in fp32 and its whole gain comes from batching and skipping the
unread logits. In fp32 the ratio can
be at most the fp32 bound over the naive rate, {bound_fp32 / naive_rate:.1f}x here; reaching
5x would need the engine at {5 * naive_rate / bound_fp32:.0%} of the bound, with the
model's 576-wide matrices and the non-matmul work (norms, rotary, attention) counted in.
"""
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(md)
    print(md)


if __name__ == "__main__":
    main()
