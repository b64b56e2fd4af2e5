"""Where the gold seed, the unlabelled pool and the evaluation set come from.

* gold: the task's k-shot ``train`` split (``shots`` per class);
* a user's ``pool_file``: its texts are the pool (labels, if the file has them, are used only
  to report label quality and the upper bound), the task's test split is the evaluation set;
* BBC News: the ``pool`` split (everything outside the fixed test split), the test split;
* the few-shot benchmarks and user tasks, whose folders hold no large train set: a seeded
  half of the test set is the pool, the other half the evaluation set.

Texts equal to a gold example are dropped from pool and evaluation set, so that no item the
workers see as a demonstration is asked about or scored.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from blackbox.data import Example, Task, load_split
from blackbox.errors import BbxError


@dataclass
class Splits:
    """The three sets a distill run works with. Pool labels are ``-1`` where unknown."""

    gold: list[Example]
    pool_texts: list[str]
    pool_labels: np.ndarray
    eval: list[Example]
    pool_source: str

    @property
    def pool_has_labels(self) -> bool:
        return bool(len(self.pool_labels)) and bool(np.all(self.pool_labels >= 0))


def read_texts(path: str | Path,
               labels: Sequence[str] | None = None) -> tuple[list[str], np.ndarray]:
    """Texts (and labels where given, else -1) from .txt (a text per line), .csv, .tsv or .jsonl.

    Labels may be names from ``labels`` or indices; a file without a label column is fine.
    """
    p = Path(path)
    if not p.is_file():
        raise BbxError(f"input file {p} not found: check the path")
    rows: list[dict]
    if p.suffix == ".txt":
        lines = p.read_text(encoding="utf-8").splitlines()
        rows = [{"text": ln} for ln in lines if ln.strip()]
    elif p.suffix == ".jsonl":
        try:
            with p.open(encoding="utf-8") as f:
                rows = [json.loads(ln) for ln in f if ln.strip()]
        except json.JSONDecodeError as e:
            raise BbxError(f"{p}: not valid JSONL ({e.msg} at line {e.lineno})") from None
    elif p.suffix in {".csv", ".tsv"}:
        with p.open(newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f, delimiter="\t" if p.suffix == ".tsv" else ","))
    else:
        raise BbxError(f"input file {p}: use .txt (one text per line), .csv, .tsv or .jsonl")
    texts: list[str] = []
    found: list[int] = []
    for i, row in enumerate(rows):
        if not isinstance(row, dict) or "text" not in row:
            raise BbxError(f"{p} row {i + 1}: needs a 'text' field (or use a .txt file)")
        texts.append(str(row["text"]))
        found.append(_label_index(row.get("label"), labels))
    if not texts:
        raise BbxError(f"input file {p} holds no texts")
    return texts, np.asarray(found, dtype=np.int64)


def _label_index(raw: object, labels: Sequence[str] | None) -> int:
    if raw is None or raw == "" or labels is None:
        return -1
    if isinstance(raw, str) and raw in labels:
        return list(labels).index(raw)
    try:
        lab = int(raw)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return -1
    return lab if 0 <= lab < len(labels) else -1


def _subset(n: int, limit: int | None, rng: np.random.Generator) -> np.ndarray:
    if limit is None or limit >= n:
        return np.arange(n)
    return np.sort(rng.choice(n, size=limit, replace=False))


def make_splits(task: Task, shots: int, seed: int, rng_split: np.random.Generator,
                rng_subset: np.random.Generator, pool_file: str | None = None,
                pool_limit: int | None = None, eval_limit: int | None = None) -> Splits:
    """Gold seed, pool and evaluation set for a run (see the module docstring)."""
    gold = load_split(task, "train", shots, seed)
    gold_texts = {e.text for e in gold}
    if pool_file is not None:
        pool_texts, pool_labels = read_texts(pool_file, task.labels)
        evalset = load_split(task, "test", shots, seed)
        source = f"file:{pool_file}"
    elif task.source == "bbc":
        pool = load_split(task, "pool", shots, seed)
        pool_texts, pool_labels = [e.text for e in pool], np.array([e.label for e in pool])
        evalset = load_split(task, "test", shots, seed)
        source = "pool split"
    else:
        test = load_split(task, "test", shots, seed)
        perm = rng_split.permutation(len(test))
        half = len(test) // 2
        pool = [test[i] for i in np.sort(perm[:half])]
        evalset = [test[i] for i in np.sort(perm[half:])]
        pool_texts, pool_labels = [e.text for e in pool], np.array([e.label for e in pool])
        source = "seeded half of the test split"
    keep = [i for i, t in enumerate(pool_texts) if t not in gold_texts]
    pool_texts = [pool_texts[i] for i in keep]
    pool_labels = np.asarray(pool_labels, dtype=np.int64)[keep]
    evalset = [e for e in evalset if e.text not in gold_texts]
    pick = _subset(len(pool_texts), pool_limit, rng_subset)
    pool_texts, pool_labels = [pool_texts[i] for i in pick], pool_labels[pick]
    evalset = [evalset[i] for i in _subset(len(evalset), eval_limit, rng_subset)]
    if not pool_texts:
        raise BbxError(f"task '{task.name}': the unlabelled pool is empty: give a pool_file")
    if not evalset:
        raise BbxError(f"task '{task.name}': the evaluation set is empty")
    return Splits(gold, pool_texts, pool_labels, evalset, source)
