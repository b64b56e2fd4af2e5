"""Every method on a user's own files, one CLI command each -> results/own-data.md.

    .venv/bin/python scripts/own_data.py            # runs what is missing, then the report
    .venv/bin/python scripts/own_data.py --report   # the report from committed run summaries

The task is SST-2 written out as a user would hand it over (never a registered name): the
16-shot seed-13 train split as ``train.csv`` (class names, a UTF-8 BOM), its dev split as
``dev.tsv`` (``sentence`` header, integer labels), the test set as ``test.jsonl`` (labels
written ``1.0``), and 800 unlabelled SST sentences (SST-5's 16-shot files, which come from
SST's train split) as ``pool.txt``. The files go to ``.bbx-cache/own-data/`` (not
committed); each method's run directory to ``results/own-data-runs/<method>/`` (committed
without ledgers and predictions). Every command scores the same ``--limit`` test items.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
from pathlib import Path

from blackbox.runs import held_out, held_out_correct, iter_runs, machines_lines
from blackbox.stats import format_diff, paired_bootstrap

REPO = Path(__file__).resolve().parents[1]
DATA = Path(".bbx-cache") / "own-data"  # relative: saved recipes name no machine path
RUNS = Path("results") / "own-data-runs"
LIMIT = 300
LABELS = ("negative", "positive")


def write_files() -> dict[str, Path]:
    """The four files (idempotent)."""
    from blackbox.data import get_task, load_split

    root = REPO / DATA
    root.mkdir(parents=True, exist_ok=True)
    sst2, sst5 = get_task("sst-2"), get_task("sst-5")
    with (root / "train.csv").open("w", newline="", encoding="utf-8-sig") as f:
        w = csv.writer(f)
        w.writerow(["text", "label"])
        for e in load_split(sst2, "train", 16, 13):
            w.writerow([e.text, LABELS[e.label]])
    (root / "dev.tsv").write_text("sentence\tlabel\n" + "".join(
        f"{e.text}\t{e.label}\n" for e in load_split(sst2, "dev", 16, 13)), encoding="utf-8")
    (root / "test.jsonl").write_text("".join(
        json.dumps({"text": e.text, "label": float(e.label)}) + "\n"
        for e in load_split(sst2, "test")), encoding="utf-8")
    pool = sorted({e.text for seed in (13, 21, 42, 87, 100) for split in ("train", "dev")
                   for e in load_split(sst5, split, 16, seed)})
    (root / "pool.txt").write_text("".join(t + "\n" for t in pool), encoding="utf-8")
    return {k: DATA / f for k, f in (("train", "train.csv"), ("dev", "dev.tsv"),
                                     ("test", "test.jsonl"), ("pool", "pool.txt"))}


def commands(files: dict[str, Path]) -> dict[str, list[str]]:
    """One command per method, as the README's walk-through gives them."""
    own = ["--train", str(files["train"]), "--dev", str(files["dev"]), "--test",
           str(files["test"]), "--template", "Review: {text}\nSentiment:"]
    return {
        "zero-shot": ["eval", *own, "--limit", str(LIMIT)],
        "search-prompt": ["search-prompt", *own, "--clusters", "200", "--budget", "8000",
                          "--test-limit", str(LIMIT)],
        # MPD queries several prompts: three templates of the user's own
        "decode": ["decode", "fit", *own, "--template", "{text} All in all, the movie was",
                   "--template", "Text: {text}\nQuestion: Is this review positive or "
                   "negative?\nAnswer:", "--test-limit", str(LIMIT)],
        "distill": ["distill", *own, "--pool", str(files["pool"]), "--budget", "600",
                    "--eval-limit", str(LIMIT)],
        # Evo-Merging over the leak-free zoo `bbx zoo build` makes (the engine's default
        # dtype, as a user runs it), 32 stratified user examples from train + dev
        "merge": ["merge", *own, "--user-examples", "32", "--stage1", "60", "--stage2", "120",
                  "--test-limit", str(LIMIT)],
    }


def run_missing(files: dict[str, Path]) -> None:
    done = {Path(r["path"]).parent.name for r in iter_runs_all() if r["status"] == "finished"}
    for name, args in commands(files).items():
        if name in done:
            print(f"{name}: finished, skipped", flush=True)
            continue
        cmd = [sys.executable, "-m", "blackbox.cli.main", *args, "--no-progress",
               "--output-dir", str(RUNS / name), "--json"]
        print("bbx " + " ".join(args), flush=True)
        # a response cache of its own: each run pays for its queries, so wall times are real
        env = {**os.environ, "BBX_RESPONSES_DIR": str(REPO / DATA / "responses")}
        subprocess.run(cmd, cwd=REPO, check=True, stdout=subprocess.DEVNULL, env=env)


def iter_runs_all() -> list[dict]:
    out = []
    for d in sorted((REPO / RUNS).glob("*")):
        out.extend(iter_runs(d))
    return out


def report(out: Path) -> None:
    runs = {Path(r["path"]).parent.name: r for r in iter_runs_all() if r["status"] == "finished"}
    order = [n for n in commands({k: Path(k) for k in ("train", "dev", "test", "pool")})
             if n in runs]
    base = runs["zero-shot"]["summary"]["correct"] if "zero-shot" in runs else None
    lines = [
        "# Every method on your own files",
        "",
        "Regenerate: `.venv/bin/python scripts/own_data.py --report` (the runs: "
        "`scripts/own_data.py`, one `bbx` command per method, listed below; it skips finished "
        "runs).",
        "",
        "The task is SST-2 handed over as files, not by name: `train.csv` (32 examples, class "
        "names, BOM), `dev.tsv` (32, `sentence` header, integer labels), `test.jsonl` (1,821, "
        "labels written `1.0`), `pool.txt` (800 unlabelled SST train sentences). Every method "
        f"scores the same {LIMIT} test items (`--limit`/`--test-limit`/`--eval-limit` "
        f"{LIMIT}: the shared seeded subset), so differences are paired: each is given with a "
        "95% bootstrap interval over the test items. One seed (42). Model: "
        "SmolLM2-135M-Instruct on the CPU; each run starts from an empty response cache, so "
        "queries are paid and wall times are real.",
        "",
        *machines_lines([(Path(runs[n]["path"]), "own data") for n in order]),
        "| method | test accuracy (n) | vs zero-shot, points [95% CI] | queries paid | "
        "wall s |",
        "|---|---:|---:|---:|---:|",
    ]
    verdicts: list[str] = []
    for name in order:
        s = runs[name]["summary"]
        measured = held_out(s)
        if measured is None:
            # Every run here is given a test file, so a summary without a held-out score means
            # the run stopped before scoring: say which, rather than print a "nan%" row.
            raise SystemExit(f"{name}: its summary has no held-out score; rerun it "
                             "(the runs already paid for are kept)")
        _split, n, acc = measured
        correct = held_out_correct(s)
        diff = "—"
        if name != "zero-shot" and base is not None and correct is not None:
            r = paired_bootstrap(base, correct)
            diff = format_diff(r)
            verdicts.append(f"{name} " + ("beats zero-shot" if r["lo"] > 0 else
                                          "loses to zero-shot" if r["hi"] < 0 else
                                          "is not distinguishable from zero-shot"))
        lines.append(f"| {name} | {100 * acc:.1f}% ({n}) | {diff} | {s['usage']['queries']} "
                     f"| {s['run_wall_s']:.0f} |")
    if verdicts:
        lines += ["", f"On these {LIMIT} items, by the intervals: " + "; ".join(verdicts)
                  + "." + ("" if any("beats" in v for v in verdicts) else
                           " No method beats zero-shot here; the README's walk-through says "
                           "what to try then.")]
    lines += ["", "Commands (from the repository root):", "", "```bash"]
    files = {k: DATA / f for k, f in (("train", "train.csv"), ("dev", "dev.tsv"),
                                      ("test", "test.jsonl"), ("pool", "pool.txt"))}
    for args in commands(files).values():
        lines.append(".venv/bin/bbx " + " ".join(
            a if " " not in a and "\n" not in a else "$" + repr(a) for a in args))
    lines += ["```", ""]
    if "merge" not in runs:
        lines += ["`bbx merge` is not in the table yet: it needs the adapter zoo built "
                  "leak-free by `bbx zoo build` (12 adapters, about 50 minutes of an idle "
                  "2-core CPU).", ""]
    out.write_text("\n".join(lines))
    print(f"wrote {out}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--report", action="store_true", help="only write the report")
    parser.add_argument("--out", default=str(REPO / "results" / "own-data.md"))
    args = parser.parse_args()
    if not args.report:
        run_missing(write_files())
    report(Path(args.out))


if __name__ == "__main__":
    main()
