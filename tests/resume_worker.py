"""A small metered prompt search in a run directory; ``tests/test_resume.py`` kills and
restarts it.

Usage: ``python tests/resume_worker.py RUN_DIR SLEEP_S``. Candidates are 3-word prefixes
over a tiny vocabulary, scored through ``MeteredBackend(FakeBackend)`` with a cache and a
ledger in RUN_DIR; ``SLEEP_S`` is slept after each batch is paid for and before it is
recorded, so a kill lands in the window a real crash would hit hardest.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from blackbox.backends.fake import FakeBackend
from blackbox.backends.metered import MeteredBackend
from blackbox.optim import DiscreteSpace, make_optimizer, run_search

VOCAB = ["great", "awful", "movie", "the", "fine", "bad", "superb", "plot", "dull", "a"]
LABELS = [" positive", " negative"]
MAX_TRIALS = 40
BATCH = 4


def main(run_dir: Path, sleep_s: float) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    fake = FakeBackend(seed=3, bias={"great": {" positive": 2.0}, "superb": {" positive": 1.0},
                                     "awful": {" negative": 2.0}, "dull": {" negative": 1.0}})
    backend = MeteredBackend(fake, cache_dir=run_dir / "cache",
                             ledger_path=run_dir / "ledger.jsonl")
    space = DiscreteSpace(length=3, n_choices=len(VOCAB))
    opt = make_optimizer("ng:DiscreteOnePlusOne", space, seed=7, batch_size=BATCH,
                         budget=MAX_TRIALS)

    def objective(values):
        prompts = [" ".join(VOCAB[i] for i in v) + " Review: it was ok. Sentiment:"
                   for v in values]
        scores = backend.label_logprobs(prompts, LABELS)
        time.sleep(sleep_s)
        return [(s[1] - s[0], {"logp_positive": s[0]}) for s in scores]

    result = run_search(objective, opt, max_trials=MAX_TRIALS, batch_size=BATCH,
                        trials_path=run_dir / "trials.jsonl", progress=False,
                        describe=lambda v: " ".join(VOCAB[i] for i in v))
    backend.close()
    (run_dir / "result.json").write_text(json.dumps({
        "n_trials": result.n_trials, "n_replayed": result.n_replayed,
        "best_value": result.best_value, "best_loss": result.best_loss,
        "paid_queries": backend.usage.queries,
    }))


if __name__ == "__main__":
    main(Path(sys.argv[1]), float(sys.argv[2]))
