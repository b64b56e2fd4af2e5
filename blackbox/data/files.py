"""The one reader of a user's labelled (or unlabelled) texts: CSV, TSV, JSONL, plain text.

Every command that reads texts from a file goes through :func:`read_table`, so every command
accepts the same files and refuses the same mistakes:

* ``.jsonl``: one object per line with ``text`` (or ``sentence``) and, optionally, ``label``;
* ``.csv`` / ``.tsv`` (or any other name): the delimiter is sniffed from the header line (a
  tab or a comma, whatever the suffix says), the header must name a ``text`` or ``sentence``
  column (any case) and may name a ``label`` column; tab-separated files are read without
  quote processing, as the few-shot benchmark files are written (their texts hold ``"``);
* ``.txt``: one text per line, no labels;
* a UTF-8 byte-order mark is dropped; a label may be a class name (any case), an index, or an
  index written as a float (``1.0``);
* an empty text, or a label that names no class, is an error naming the file and the rows.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from blackbox.errors import BbxError

TEXT_COLUMNS = ("text", "sentence")
LABEL_COLUMN = "label"


@dataclass(frozen=True)
class Table:
    """A file's texts and raw labels (``None`` where a row has none), in file order."""

    path: Path
    texts: list[str]
    raw_labels: list[str | None]

    @property
    def has_labels(self) -> bool:
        """Whether every row carries a label."""
        return bool(self.raw_labels) and all(lab is not None for lab in self.raw_labels)


def _rows_of(path: Path) -> list[dict[str, object]]:
    """The file's rows as mappings; ``text``/``label`` keys are found case-insensitively."""
    raw = path.read_text(encoding="utf-8-sig")
    if path.suffix == ".jsonl":
        rows: list[dict[str, object]] = []
        for i, line in enumerate(raw.splitlines()):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise BbxError(f"{path} line {i + 1}: not JSON ({e.msg}): write one JSON "
                               "object per line") from None
            if not isinstance(row, dict):
                raise BbxError(f"{path} line {i + 1}: write a JSON object with a 'text' field")
            rows.append({str(k).lower(): v for k, v in row.items()})
        return rows
    if path.suffix == ".txt":
        return [{"text": line} for line in raw.splitlines() if line.strip()]
    header = raw.split("\n", 1)[0]
    delimiter = "\t" if "\t" in header else ","
    reader = csv.reader(io.StringIO(raw, newline=""), delimiter=delimiter,
                        quoting=csv.QUOTE_NONE if delimiter == "\t" else csv.QUOTE_MINIMAL)
    lines = [r for r in reader if any(cell.strip() for cell in r)]
    if not lines:
        return []
    names = [c.strip().lower() for c in lines[0]]
    if not any(c in names for c in TEXT_COLUMNS):
        raise BbxError(f"{path}: the first line must name the columns (a 'text' or "
                       f"'sentence' column, and 'label'); it reads {lines[0]!r}")
    out: list[dict[str, object]] = []
    for i, cells in enumerate(lines[1:], start=2):
        if len(cells) != len(names):
            raise BbxError(f"{path} line {i}: {len(cells)} fields where the header has "
                           f"{len(names)}: quote texts that hold the delimiter "
                           f"({'tab' if delimiter == chr(9) else 'comma'})")
        out.append(dict(zip(names, cells, strict=True)))
    return out


def read_table(path: str | Path, need_labels: bool = True) -> Table:
    """Read ``path`` (see the module docstring); ``need_labels``: every row must have one."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise BbxError(f"data file {p} not found: check the path")
    rows = _rows_of(p)
    texts: list[str] = []
    labels: list[str | None] = []
    empty: list[int] = []
    unlabelled: list[int] = []
    for i, row in enumerate(rows):
        key = next((c for c in TEXT_COLUMNS if c in row), None)
        if key is None:
            raise BbxError(f"{p} row {i + 1}: needs a 'text' (or 'sentence') field")
        # texts are kept as written (inner whitespace included: it is part of the prompt)
        text = str(row[key] if row[key] is not None else "").strip()
        if not text:
            empty.append(i + 1)
        lab = row.get(LABEL_COLUMN)
        lab = None if lab is None or (isinstance(lab, str) and not lab.strip()) else str(lab)
        if lab is None:
            unlabelled.append(i + 1)
        texts.append(text)
        labels.append(lab.strip() if lab is not None else None)
    if not texts:
        raise BbxError(f"data file {p} holds no examples")
    if empty:
        raise BbxError(f"{p}: {len(empty)} empty text(s) (rows {_rows(empty)}): remove those "
                       "rows or fill them in")
    if need_labels and unlabelled:
        raise BbxError(f"{p}: {len(unlabelled)} row(s) without a label (rows "
                       f"{_rows(unlabelled)}): give every row a 'label'")
    return Table(p, texts, labels)


def _rows(rows: list[int]) -> str:
    shown = ", ".join(map(str, rows[:5]))
    return shown + (f", ... {len(rows) - 5} more" if len(rows) > 5 else "")


def _as_index(raw: str) -> int | None:
    """``"2"`` and ``"2.0"`` are index 2; anything else is not an index."""
    try:
        value = float(raw)
    except ValueError:
        return None
    if math.isfinite(value) and value == int(value):
        return int(value)
    return None


def label_index(raw: str, labels: Sequence[str]) -> int | None:
    """The class index ``raw`` names (a class name in any case, or an index), else ``None``."""
    if raw in labels:
        return list(labels).index(raw)
    folded = [lab.casefold() for lab in labels]
    if raw.casefold() in folded:
        return folded.index(raw.casefold())
    idx = _as_index(raw)
    return idx if idx is not None and 0 <= idx < len(labels) else None


def label_indices(table: Table, labels: Sequence[str]) -> list[int]:
    """Every row's class index (``-1`` where a row has no label); a label that names no class
    is an error listing the classes."""
    out: list[int] = []
    bad: list[int] = []
    for i, raw in enumerate(table.raw_labels):
        if raw is None:
            out.append(-1)
            continue
        idx = label_index(raw, labels)
        if idx is None:
            bad.append(i)
            out.append(-1)
        else:
            out.append(idx)
    if bad:
        values = sorted({str(table.raw_labels[i]) for i in bad})[:5]
        raise BbxError(f"{table.path}: {len(bad)} label(s) name no class (values "
                       f"{', '.join(map(repr, values))}; rows {_rows([i + 1 for i in bad])}): "
                       f"use one of {list(labels)} or an index 0..{len(labels) - 1}")
    return out


def infer_labels(tables: Sequence[Table]) -> tuple[str, ...]:
    """Class names from the files' labels, sorted (any case folds to one name); labels that
    are indices refer to those names, and indices alone cannot name the classes."""
    seen = {lab for t in tables for lab in t.raw_labels if lab is not None}
    if not seen:
        raise BbxError("no labels in the data files: give every training row a 'label'")
    named = {lab for lab in seen if _as_index(lab) is None}
    if not named:
        n = max(_as_index(lab) or 0 for lab in seen) + 1
        raise BbxError(f"the labels are class indices (0..{n - 1}): name the {n} classes in "
                       "index order with --labels (e.g. --labels negative,positive) or "
                       "labels: in the task spec")
    names: dict[str, str] = {}
    for lab in sorted(named):
        names.setdefault(lab.casefold(), lab)
    return tuple(sorted(names.values(), key=str.casefold))
