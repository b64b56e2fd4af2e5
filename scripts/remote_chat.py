"""Every method through llama.cpp's chat route beside the local backend, on the same model
and data -> ``results/remote-chat.md``.

    .venv/bin/python scripts/remote_chat.py            # runs what is missing, then the report
    .venv/bin/python scripts/remote_chat.py --report   # the report from committed summaries

The served model is the bundled SmolLM2-135M-Instruct GGUF in llama.cpp's own C++ server
(`llama-server`, built once by ``scripts/llama_cpp_server_build.sh``), started here on a
loopback port with 8 slots and its embeddings route on (mean pooling); bbx reaches it as a
user reaches a hosted API: ``--backend remote --api chat``, the OpenAI SDK, no bbx extensions (label
words from the chat route's ``top_logprobs``, the ``logit_bias`` recovery through the
server's tokenize route, hidden states through ``/v1/embeddings``). The local rows run the
same commands on bbx's own engine (exact log-probs, hidden states). Each run starts from an
empty response cache of its own, so queries are paid and wall times are real; each writes
its run directory to ``results/remote-chat-runs/<method>-<backend>/`` (committed without
ledgers and predictions).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from blackbox.backends.pricing import EXAMPLE_PRICES, EXAMPLE_PRICES_DATE
from blackbox.runs import held_out, held_out_correct, iter_runs
from blackbox.stats import format_diff, paired_bootstrap

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))  # the server helpers the tests use

from serve_support import build_script, free_port, process_server  # noqa: E402

RUNS = Path("results") / "remote-chat-runs"
CACHE = Path(".bbx-cache") / "remote-chat"
LIMIT = 200
ALIAS = "smollm2-135m-instruct"  # the model id the server reports (not the file's path)
PRICE_MODEL = "gpt-4o-mini"  # dollars are given at this model's example price
BASE = ["--task", "sst-2", "--seed", "13"]
METHODS: dict[str, list[str]] = {
    "eval": ["eval", *BASE, "--limit", str(LIMIT)],
    "search-prompt": ["search-prompt", *BASE, "--clusters", "60", "--budget", "3000",
                      "--test-limit", str(LIMIT)],
    "decode": ["decode", "fit", *BASE, "--test-limit", str(LIMIT)],
    "distill": ["distill", *BASE, "--budget", "300", "--pool-limit", "400",
                "--eval-limit", str(LIMIT)],
}
BACKENDS = ("local", "remote-chat")
# eval also through the server's completions route: the same text as local, so the gap
# between this row and local is the server's arithmetic (Q4_1) and top-k scoring, and the
# gap between it and remote-chat is the chat framing
EXTRA = {"eval": ("remote-completions",)}


def backends(method: str) -> tuple[str, ...]:
    return BACKENDS + EXTRA.get(method, ())


def remote_args(url: str, backend: str = "remote-chat") -> list[str]:
    api = backend.removeprefix("remote-")
    return ["--backend", "remote", "--base-url", url, "--model", ALIAS, "--api", api]


@contextlib.contextmanager
def llama_server() -> Iterator[str]:
    """llama-server on the bundled GGUF (8 slots, embeddings on), ready; its ``/v1`` URL."""
    from blackbox.engine.loader import resolve_spec

    try:
        binary = build_script("llama_cpp_server_build.sh")
    except RuntimeError as e:
        raise SystemExit(f"llama-server cannot be built here: {e}") from None
    port = free_port()
    cmd = [binary, "-m", str(resolve_spec("default").path), "--alias", ALIAS, "--host",
           "127.0.0.1", "--port", str(port), "-np", "8", "-c", "16384", "-t", "2",
           "--embeddings", "--pooling", "mean", "--log-verbosity", "1"]
    with process_server(cmd, "/health", "llama-server", port, ready_s=120) as root:
        yield root + "/v1"


def finished() -> dict[str, dict[str, Any]]:
    out = {}
    for d in sorted((REPO / RUNS).glob("*")):
        for r in iter_runs(d):
            if r["status"] == "finished":
                out[d.name] = r
    return out


def run_missing() -> None:
    done = finished()
    todo = [(m, b) for m in METHODS for b in backends(m) if f"{m}-{b}" not in done]
    if not todo:
        return
    with contextlib.ExitStack() as stack:
        url = stack.enter_context(llama_server()) if any(b != "local" for _, b in todo) \
            else ""
        for method, backend in todo:
            name = f"{method}-{backend}"
            args = METHODS[method] + (remote_args(url, backend) if backend != "local" else [])
            cache = REPO / CACHE / name
            shutil.rmtree(cache, ignore_errors=True)  # paid afresh: real queries, real time
            env = {**os.environ, "BBX_RESPONSES_DIR": str(cache), "OPENAI_API_KEY": "none"}
            print("bbx " + " ".join(args), flush=True)
            out_dir = REPO / RUNS / name
            shutil.rmtree(out_dir, ignore_errors=True)  # an unfinished run: start over
            subprocess.run([sys.executable, "-m", "blackbox.cli.main", *args, "--no-progress",
                            "--output-dir", str(RUNS / name), "--json"], cwd=REPO,
                           check=True, stdout=subprocess.DEVNULL, env=env)
            for junk in ("ledger.jsonl", "predictions.jsonl"):  # big, and not evidence
                for f in out_dir.glob(f"*/{junk}"):
                    f.unlink()


def _test(s: dict[str, Any]) -> tuple[float, int, str | None]:
    """(accuracy, test size, per-item record) of the number a run reports."""
    shown = held_out(s)
    assert shown is not None, f"a finished {s['method']} run reports a held-out number"
    _, n, acc = shown
    return acc, n, held_out_correct(s)


def report(out: Path) -> None:
    runs = finished()
    price = EXAMPLE_PRICES[PRICE_MODEL]
    lines = [
        "# Every method through llama.cpp's chat route, beside the local backend", "",
        "Regenerate: `.venv/bin/python scripts/remote_chat.py --report` (the runs: "
        "`scripts/remote_chat.py`, one `bbx` command per row, listed below; it skips "
        "finished runs).", "",
        "Model: the bundled SmolLM2-135M-Instruct. *local*: bbx's engine on the GGUF's "
        "dequantized weights (exact label log-probs, hidden states). *remote-chat*: the same "
        "GGUF served by llama.cpp's C++ `llama-server` (8 slots, embeddings on) on a loopback "
        "port, reached only through `/v1/chat/completions` (top-20 log-probs of the reply's "
        "first token, `logit_bias` for label words outside them) and `/v1/embeddings` "
        "(decode's stand-in for hidden states). SST-2, 16-shot seed 13; every row scores the "
        f"same {LIMIT} test items (the seeded subset), so remote minus local is paired, with a "
        "95% bootstrap interval over the items. Each run starts from an empty response cache.",
        "",
        f"Dollars: what the run's tokens would cost at {PRICE_MODEL}'s example price "
        f"(${price.input_per_mtok:.2f} / ${price.output_per_mtok:.2f} per million input / "
        f"output tokens, as of {EXAMPLE_PRICES_DATE}; `blackbox/backends/pricing.py`). Remote "
        "token counts are the server's `usage`; local ones are bbx's tokenizer counts.", "",
        "| method | backend | test accuracy (n) | remote − local, points [95% CI] | queries "
        "| prompt tokens | completion tokens | $ at example price | wall s |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    notes: list[str] = []
    for method in METHODS:
        local = runs.get(f"{method}-local")
        for backend in backends(method):
            run = runs.get(f"{method}-{backend}")
            if run is None:
                lines.append(f"| {method} | {backend} | not run | | | | | | |")
                continue
            s = run["summary"]
            acc, n, correct = _test(s)
            diff = ""
            if backend != "local" and local is not None and correct is not None:
                base = _test(local["summary"])[2]
                if base is not None:
                    diff = format_diff(paired_bootstrap(base, correct))
            u = s.get("usage") or {}
            pt = u.get("prompt_tokens", u.get("tokens", 0)) or 0
            ct = u.get("completion_tokens", 0) or 0
            usd = (pt * price.input_per_mtok + ct * price.output_per_mtok) / 1e6
            wall = s.get("run_wall_s") or (s.get("wall_s") or {}).get("total")
            lines.append(f"| {method} | {backend} | {100 * acc:.1f}% ({n}) | {diff} | "
                         f"{u.get('queries')} | {pt:,} | {ct:,} | {usd:.4f} | "
                         f"{wall:.0f} |" if isinstance(wall, (int, float)) else "|")
            label = (s.get("notes") or {}).get("label_scores")
            if label and backend != "local":
                notes.append(f"- {method}: {label}")
    split = [runs.get(f"eval-{b}") for b in ("local", "remote-completions", "remote-chat")]
    if all(split):
        loc, comp, chat = (_test(r["summary"])[2] for r in split)  # type: ignore[index]
        lines += ["", "The eval rows split the gap. Completions route − local: "
                  f"{format_diff(paired_bootstrap(loc, comp))} points (the same text; what "
                  "differs is the server's Q4_1 arithmetic and top-k scoring). Chat route − "
                  f"completions route: {format_diff(paired_bootstrap(comp, chat))} points "
                  "(the same server; what differs is the chat template around the prompt, "
                  "with the label word as the start of the assistant's reply)."]
    if notes:
        lines += ["", "What the remote runs recorded about their label scores "
                  "(`notes.label_scores`):", "", *notes]
    lines += ["", "Commands (from the repository root; `URL` is the server's "
              "`http://127.0.0.1:PORT/v1`):", "", "```bash"]
    for method, args in METHODS.items():
        for backend in backends(method):
            extra = remote_args("URL", backend) if backend != "local" else []
            lines.append(".venv/bin/bbx " + " ".join(args + extra))
    lines += ["```", ""]
    out.write_text("\n".join(lines))
    print(f"wrote {out}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--report", action="store_true", help="only write the report")
    parser.add_argument("--out", default=str(REPO / "results" / "remote-chat.md"))
    args = parser.parse_args()
    if not args.report:
        run_missing()
    report(Path(args.out))


if __name__ == "__main__":
    main()
