"""Where the gold seed, the unlabelled pool and the evaluation set come from.

* gold: the task's ``train`` split (``shots`` per class, or a user's whole train file);
* a pool file (``pool_file``, or the task spec's ``pool``): its texts are the pool (labels,
  if the file has them, are used only to report label quality and the upper bound), the
  task's test split is the evaluation set;
* BBC News and one-file tasks: the ``pool`` split (everything outside the fixed test split);
* the few-shot benchmarks, whose folders hold no large train set: a seeded half of the test
  set is the pool, the other half the evaluation set (an evaluation text equal to a pool
  text is dropped from the evaluation half: the test files repeat a few sentences).

Pool texts equal to a gold example are dropped (the workers see those as demonstrations).
The leak guard then checks gold and pool against the evaluation set: an overlap is an error.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from blackbox.data import Example, Task, load_split
from blackbox.data.datasets import read_texts, seeded_subset
from blackbox.data.leak import normalize
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


def _subset(n: int, limit: int | None, rng: np.random.Generator) -> np.ndarray:
    if limit is None or limit >= n:
        return np.arange(n)
    return np.sort(rng.choice(n, size=limit, replace=False))


def make_splits(task: Task, shots: int, seed: int, rng_split: np.random.Generator,
                rng_subset: np.random.Generator, pool_file: str | None = None,
                pool_limit: int | None = None, eval_limit: int | None = None,
                test_seed: int = 0) -> Splits:
    """Gold seed, pool and evaluation set for a run (see the module docstring)."""
    gold = load_split(task, "train", shots, seed)
    gold_keys = {normalize(e.text) for e in gold}
    pool_file = pool_file or task.files.get("pool")
    if pool_file is not None:
        pool_texts, pool_labels = read_texts(pool_file, task.labels)
        evalset = load_split(task, "test", shots, seed)
        source = f"file:{Path(pool_file).name}"
    elif task.source in {"bbc", "file"}:
        pool = load_split(task, "pool", shots, seed)
        pool_texts, pool_labels = [e.text for e in pool], np.array([e.label for e in pool])
        evalset = load_split(task, "test", shots, seed)
        source = "pool split"
    elif task.source == "files":
        raise BbxError(f"task '{task.name}': distill needs unlabelled texts to label: give a "
                       "pool file (--pool FILE, or pool: in the task spec)")
    else:
        test = load_split(task, "test", shots, seed)
        perm = rng_split.permutation(len(test))
        half = len(test) // 2
        pool = [test[i] for i in np.sort(perm[:half])]
        pool_keys = {normalize(e.text) for e in pool}
        evalset = [test[i] for i in np.sort(perm[half:])
                   if normalize(test[i].text) not in pool_keys]
        pool_texts, pool_labels = [e.text for e in pool], np.array([e.label for e in pool])
        source = "seeded half of the test split"
    keep = [i for i, t in enumerate(pool_texts) if normalize(t) not in gold_keys]
    pool_texts = [pool_texts[i] for i in keep]
    pool_labels = np.asarray(pool_labels, dtype=np.int64)[keep]
    pick = _subset(len(pool_texts), pool_limit, rng_subset)
    pool_texts, pool_labels = [pool_texts[i] for i in pick], pool_labels[pick]
    evalset = seeded_subset(evalset, eval_limit, test_seed)
    if not pool_texts:
        raise BbxError(f"task '{task.name}': the unlabelled pool is empty (after dropping the "
                       "gold examples): give a pool file with other texts")
    if not evalset:
        raise BbxError(f"task '{task.name}': the evaluation set is empty: give a test file")
    return Splits(gold, pool_texts, pool_labels, evalset, source)
