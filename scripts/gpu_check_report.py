"""Write results/gpu-check.md from one run of scripts/gpu_check.sh: the machine, the
exactness tests' result, the mixture request, and each bbx bench run's numbers (read from
the summaries that run wrote; nothing typed in by hand).

    .venv/bin/python scripts/gpu_check_report.py --work DIR --gpu "..." --torch 2.x \
        --torch-cuda 12.8 --failed 0 --out results/gpu-check.md
"""

from __future__ import annotations

import argparse
import json
import subprocess
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


def _ms(d: dict[str, Any] | None, q: str) -> str:
    value = (d or {}).get(q)
    return "-" if value is None else f"{1000 * value:.1f}"


def _num(value: float | None, fmt: str = "{:.1f}") -> str:
    return "-" if value is None else fmt.format(value)


def bench_rows(work: Path) -> list[str]:
    """One markdown row per bench run (a run that printed no summary says why)."""
    rows = []
    for f in sorted(work.glob("bench-*.json")):
        name = f.stem.removeprefix("bench-")
        try:
            s = json.loads(f.read_text())
        except json.JSONDecodeError:
            err = (work / f"bench-{name}.err").read_text().strip().splitlines()
            rows.append(f"| {name} | failed: {err[-1] if err else 'no output'} |" + " |" * 9)
            continue
        how = {"sync": "sync", "concurrency": f"c={s['concurrency']}",
               "rate": f"Poisson {s['rate']}/s"}[s["mode"]]
        rate = (f"{_num(s.get('output_tokens_per_s'))} tok/s" if "ttft_s" in s else
                f"{_num(s.get('items_per_s'))} items/s")
        if "mixtures_per_s" in s:
            rate += f", {_num(s['mixtures_per_s'])} mixtures/s"
        good = s["goodput"]
        flu = s.get("fluidity") or {}
        rows.append(" | ".join([
            f"| {name}", how, f"{s['ok']}/{s['requests']}", _num(s["requests_per_s"]), rate,
            f"{_ms(s.get('ttft_s'), 'p50')} / {_ms(s.get('ttft_s'), 'p99')}",
            f"{_ms(s.get('tpot_s'), 'p50')} / {_ms(s.get('tpot_s'), 'p99')}",
            f"{_ms(s.get('itl_s'), 'p50')} / {_ms(s.get('itl_s'), 'p99')}",
            f"{_ms(s['e2e_s'], 'p50')} / {_ms(s['e2e_s'], 'p99')}",
            (f"{_num(good['requests_per_s'])} req/s" if good["slo_s"] else "-"),
            (f"{_num(flu.get('mean'), '{:.3f}')} / {_num(flu.get('p10'), '{:.3f}')}"
             if flu else "-") + " |"]))
    return rows


def bench_errors(work: Path) -> list[str]:
    """The errors of bench runs that had failed requests, one line each."""
    out = []
    for f in sorted(work.glob("bench-*.json")):
        try:
            s = json.loads(f.read_text())
        except json.JSONDecodeError:
            continue
        for message, n in (s.get("errors") or {}).items():
            out.append(f"- {f.stem.removeprefix('bench-')}: {n} x {message}")
    return out


def main() -> None:
    """Parse the arguments and write the report."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--gpu", required=True)
    ap.add_argument("--torch", required=True)
    ap.add_argument("--torch-cuda", required=True)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--dtype", default="bfloat16")
    ap.add_argument("--failed", default="0")
    ap.add_argument("--model", default="default", help="default | tiny")
    ap.add_argument("--marks", default="exactness")
    ap.add_argument("--zoo", default="")
    ap.add_argument("--prompt-words", default="100")
    ap.add_argument("--max-tokens", default="64")
    ap.add_argument("--out", type=Path, default=REPO / "results" / "gpu-check.md")
    args = ap.parse_args()
    rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO,
                         capture_output=True, text=True).stdout.strip() or "unknown"
    exact = (args.work / "exactness.txt").read_text().strip() if (
        args.work / "exactness.txt").is_file() else "not run"
    model = ("the bundled SmolLM2-135M" if args.model == "default" else
             "the tests' tiny random Llama (BBX_GPU_CHECK_MODEL=tiny, or no bundled model)")
    mix_file = args.work / "mixture.json"
    mix = json.loads(mix_file.read_text()) if mix_file.is_file() else None
    lines = [
        "# GPU check",
        "",
        f"`scripts/gpu_check.sh`, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
        f"git {rev}. Status: **{'FAILED' if args.failed != '0' else 'passed'}**.",
        "",
        f"- GPU (nvidia-smi: name, memory, driver): {args.gpu}",
        f"- torch {args.torch}, CUDA {args.torch_cuda}",
        f"- engine exactness tests on {args.device}, bfloat16 "
        f"(`pytest -m '{args.marks}'`): {exact}",
    ]
    if mix is not None:
        lines.append(
            f"- bbx serve on {args.device} ({args.dtype}, {model}; zoo {args.zoo}), one "
            f"/v1/label_logprobs request "
            f"under a mixture of {len(mix['adapters'])} adapters ({', '.join(mix['adapters'])})"
            f": {mix['ms']:.1f} ms, log-probs {[round(x, 4) for x in mix['logprobs']]} "
            f"(base model: {[round(x, 4) for x in mix['plain_logprobs']]})")
    lines += [
        "",
        "## bbx bench against it",
        "",
        f"Each row is one `bbx bench` run (prompts: BBC News articles cut to "
        f"{args.prompt_words} words; generation: at most {args.max_tokens} tokens, greedy; "
        "SLOs and fluidity deadlines: TTFT 500 ms, TPOT 50 ms; 2 warm-up requests each). "
        "Latencies in ms, p50 / p99.",
        "",
        "| run | schedule | ok | req/s | throughput | TTFT | TPOT | ITL | e2e | goodput "
        "| fluidity mean / p10 |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
        *bench_rows(args.work),
        "",
    ]
    errors = bench_errors(args.work)
    if errors:
        lines += ["Failed requests:", "", *errors, ""]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines))


if __name__ == "__main__":
    main()
