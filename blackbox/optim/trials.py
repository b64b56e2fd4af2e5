"""``trials.jsonl``: one JSON row per finished trial, appended and flushed per batch.

A row is ``{"index", "batch", "value", "loss", "info", "time"}`` (plus ``"desc"`` when the
search was given a describer). A non-finite loss (a failed trial) is written as ``null`` so
the file stays strict JSON for other tools.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from blackbox.errors import BbxError


def read_trials(path: str | Path) -> list[dict[str, Any]]:
    """Rows already in ``path`` (none if it is missing), repairing a torn last line.

    A process killed in the middle of a write can leave a last line without its newline;
    that row is dropped and the file truncated to its last complete line, so that rows
    appended afterwards start on a line of their own. A complete line that is not JSON is
    corruption we cannot repair: a :class:`BbxError`.
    """
    path = Path(path)
    if not path.exists():
        return []
    data = path.read_bytes()
    end = data.rfind(b"\n") + 1  # 0 when there is no complete line at all
    if end != len(data):
        with open(path, "r+b") as f:
            f.truncate(end)
    rows = []
    for lineno, line in enumerate(data[:end].splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise BbxError(f"{path} line {lineno} is not valid JSON ({exc.msg}); "
                           "use a new run directory") from exc
        if not isinstance(row, dict) or not {"index", "value", "loss"} <= set(row):
            raise BbxError(f"{path} line {lineno} is not a trial row; use a new run directory")
        if row["loss"] is None:
            row["loss"] = math.nan
        rows.append(row)
    for i, row in enumerate(rows):
        if row["index"] != i:
            raise BbxError(f"{path} has trial index {row['index']} where {i} was expected; "
                           "use a new run directory")
    return rows


def _json_default(obj: Any) -> Any:
    # numpy scalars and arrays in info dicts: store their plain value, never fail a run on it
    if hasattr(obj, "tolist"):
        return obj.tolist()
    return str(obj)


class TrialWriter:
    """Appends rows to ``trials.jsonl``; each batch is one write followed by a flush."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._f = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()

    def write(self, rows: Sequence[dict[str, Any]]) -> None:
        """Append ``rows`` and flush them to the OS (a SIGKILL after this loses nothing)."""
        if not rows:
            return
        lines = []
        for row in rows:
            loss = row["loss"]
            row = {**row, "loss": loss if math.isfinite(loss) else None}
            lines.append(json.dumps(row, default=_json_default))
        self._f.write("\n".join(lines) + "\n")
        # flush hands the bytes to the kernel, which keeps them when the process is killed;
        # no fsync: surviving power loss is not worth a disk round-trip per batch
        self._f.flush()

    def close(self) -> None:
        """Close the file."""
        self._f.close()
