"""Zero-shot accuracy of the bundled model on every task's full test set → results/zero-shot.md.

    .venv/bin/python scripts/zero_shot.py            (or: make zero-shot)

Each row is one `bbx eval` run (template 0, no prompt) on the local engine; answers are cached,
so re-running the script is fast and pays nothing.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

from blackbox.api import evaluate
from blackbox.data.tasks import TASKS

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", nargs="*", default=list(TASKS))
    parser.add_argument("--model", default="default")
    parser.add_argument("--out", default=str(REPO / "results" / "zero-shot.md"))
    args = parser.parse_args()
    from blackbox.engine.loader import choose_placement

    placement = choose_placement()  # what "auto" picks here: bf16 and fp32 differ slightly
    rows = []
    for name in args.tasks:
        t0 = time.perf_counter()
        r = evaluate(task=name, split="test", backend={"kind": "local", "model": args.model},
                     output_dir=str(REPO / "results" / "runs"))
        s = r.summary
        rows.append((name, s["n"], s["accuracy"], s["macro_f1"], 1 / len(TASKS[name].labels),
                     time.perf_counter() - t0, s["usage"]["queries"], r.run_dir.name))
        print(f"{name}: acc={s['accuracy']:.4f} n={s['n']}", flush=True)
    lines = [
        "# Zero-shot accuracy of SmolLM2-135M-Instruct (bundled GGUF, local engine)",
        "",
        "Label-word scoring: the class whose label word has the highest next-token log-prob after",
        "the task's template 0 (see `blackbox/data/tasks.py`), no prompt, full test sets",
        "(bbc-news: the fixed 20% held-out split of the de-duplicated corpus).",
        "",
        "Reproduce: `.venv/bin/python scripts/zero_shot.py` (or `make zero-shot`).",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, {platform.platform()}; "
        f"engine {placement.device} / {placement.dtype} ({placement.reason}); "
        f"written {time.strftime('%Y-%m-%d')}.",
        "",
        "| task | test n | accuracy | macro-F1 | chance | wall s (this run) | queries paid | run |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for name, n, acc, f1, chance, wall, paid, run in rows:
        lines.append(f"| {name} | {n} | {acc:.4f} | {f1:.4f} | {chance:.3f} | {wall:.0f} | "
                     f"{paid} | {run} |")
    lines += ["", "Wall time and queries paid are those of the run that wrote this file; a run "
              "answered from the response cache pays 0 queries."]
    Path(args.out).write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
