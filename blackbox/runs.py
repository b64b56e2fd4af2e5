"""The run directory: everything a run leaves behind, and what lets it resume.

::

    <run_dir>/recipe.yaml      the resolved recipe (after includes and --set)
    <run_dir>/manifest.json    seeds, versions, git revision, backend fingerprint, optimizer
    <run_dir>/trials.jsonl     one row per finished trial (search methods)
    <run_dir>/ledger.jsonl     one row per backend item: cached flag, tokens, latency
    <run_dir>/summary.json     the result (written last; its presence means "finished")

Seeds: one seed per recipe; :func:`child_rng` spawns a named, independent generator from it,
so adding a random draw in one place never shifts the draws of another.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from blackbox.errors import BbxError
from blackbox.machine import cpu_description
from blackbox.paths import portable, repo_root


def child_rng(seed: int, name: str) -> np.random.Generator:
    """An independent generator for the purpose ``name`` under the recipe ``seed``."""
    tag = int.from_bytes(hashlib.sha256(name.encode()).digest()[:4], "big")
    return np.random.default_rng([seed, tag])


def git_revision() -> str | None:
    """The checkout's git revision (``+dirty`` when modified), or None outside a checkout."""
    root = repo_root()
    if root is None:
        return None
    try:
        rev = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True,
                             text=True, timeout=5).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=root, capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return (rev + ("+dirty" if dirty else "")) if rev else None


def package_versions() -> dict[str, str]:
    """Versions of the packages whose behaviour a result depends on."""
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for name in ("bbx", "torch", "transformers", "numpy", "nevergrad", "cma", "openai",
                 "scikit-learn", "pot", "peft"):
        with contextlib.suppress(PackageNotFoundError):
            out[name] = version(name)
    return out


def _write_json(path: Path, data: Any) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")
    os.replace(tmp, path)  # atomic: a killed run never leaves half a file


def _normalized(saved: Any, normalize: Callable[[dict[str, Any]], dict[str, Any]] | None) -> Any:
    """A saved recipe as the current schema reads it, so that a field added since (with its
    default) does not stop an old run from resuming; unreadable ones are compared as saved."""
    if normalize is None or not isinstance(saved, dict):
        return saved
    try:
        return normalize(saved)
    except Exception:  # noqa: BLE001 - a recipe the schema refuses simply differs
        return saved


def _without_output(recipe: Any) -> Any:
    return {k: v for k, v in recipe.items() if k != "output_dir"} if isinstance(
        recipe, dict) else recipe


@dataclass
class RunDir:
    """A run directory (see module docstring)."""

    path: Path

    @classmethod
    def open(cls, recipe_data: dict[str, Any], output_dir: str | Path,
             run_dir: str | Path | None = None, name: str = "run",
             normalize: Callable[[dict[str, Any]], dict[str, Any]] | None = None) -> RunDir:
        """Create a fresh run directory, or reopen ``run_dir`` to resume it.

        Reopening checks that the directory holds the same recipe: resuming a different
        recipe into old trials would silently mix two experiments.
        """
        if run_dir is None:
            stamp = time.strftime("%Y%m%d-%H%M%S")
            base = Path(output_dir) / f"{stamp}-{name}"
            path, i = base, 1
            while path.exists():
                i += 1
                path = base.with_name(f"{base.name}-{i}")
        else:
            path = Path(run_dir)
        path.mkdir(parents=True, exist_ok=True)
        rd = cls(path)
        saved = path / "recipe.yaml"
        # where runs are written is not part of the experiment (a run directory resumes
        # from another checkout), and inside the checkout it is saved repo-relative
        to_save = dict(recipe_data)
        if isinstance(to_save.get("output_dir"), str):
            to_save["output_dir"] = portable(to_save["output_dir"])
        text = yaml.safe_dump(to_save, sort_keys=True)
        if saved.is_file() and _without_output(
                _normalized(yaml.safe_load(saved.read_text()), normalize)) != _without_output(
                recipe_data):
            raise BbxError(
                f"run directory {path} holds a different recipe: pass a new --run-dir "
                "(or none) to start a fresh run"
            )
        if not saved.is_file():
            saved.write_text(text)
        return rd

    @property
    def trials(self) -> Path:
        return self.path / "trials.jsonl"

    @property
    def ledger(self) -> Path:
        return self.path / "ledger.jsonl"

    def write_manifest(self, **fields: Any) -> None:
        """Write manifest.json: versions, git revision, host, plus the given fields."""
        data = {
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "versions": package_versions(),
            "git_revision": git_revision(),
            "host": {"platform": platform.platform(), "machine": platform.machine(),
                     "cpus": os.cpu_count(), **cpu_description()},
            **fields,
        }
        _write_json(self.path / "manifest.json", data)

    def write_summary(self, summary: dict[str, Any]) -> None:
        _write_json(self.path / "summary.json", summary)

    def write_json(self, name: str, data: Any) -> None:
        """Write any other JSON artefact atomically."""
        _write_json(self.path / name, data)


def read_run(path: str | Path) -> dict[str, Any]:
    """Load a run directory's recipe, manifest and summary (for ``bbx report``)."""
    p = Path(path)
    if not (p / "recipe.yaml").is_file():
        raise BbxError(f"{p} is not a bbx run directory (no recipe.yaml): pass a folder under "
                       "results/runs/")
    recipe = yaml.safe_load((p / "recipe.yaml").read_text())
    out: dict[str, Any] = {"path": str(p), "recipe": recipe}
    for name in ("manifest", "summary"):
        f = p / f"{name}.json"
        out[name] = json.loads(f.read_text()) if f.is_file() else None
    return out


def ledger_counts(path: str | Path) -> dict[str, Any]:
    """Rows, uncached (paid) rows, and what the paid rows cost: prompt tokens (``tokens``),
    completion tokens and dollars (``usd``: ``None`` when no row was priced)."""
    rows = paid = tokens = completion = 0
    usd: float | None = None
    p = Path(path)
    if p.is_file():
        for line in p.read_text().splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue  # a row cut off by a kill
            rows += 1
            if not row.get("cached"):
                paid += 1
                tokens += int(row.get("tokens", 0))
                completion += int(row.get("completion_tokens") or 0)
                if row.get("usd") is not None:
                    usd = (usd or 0.0) + float(row["usd"])
    return {"rows": rows, "paid": paid, "cached": rows - paid, "tokens": tokens,
            "completion_tokens": completion, "usd": None if usd is None else round(usd, 6)}


def run_status(summary: dict[str, Any] | None) -> str:
    """``finished``, ``failed`` (a ``status: failed`` summary), or ``incomplete`` (none yet:
    running, or killed; resume it with ``--run-dir``)."""
    if summary is None:
        return "incomplete"
    return str(summary.get("status", "finished"))


def iter_runs(root: str | Path) -> list[dict[str, Any]]:
    """Every run directory under ``root`` (oldest first), as :func:`read_run` gives it, with
    its ``status``."""
    out: list[dict[str, Any]] = []
    base = Path(root)
    if not base.is_dir():
        return out
    for recipe in sorted(base.glob("*/recipe.yaml")):
        run = read_run(recipe.parent)
        run["status"] = run_status(run["summary"])
        out.append(run)
    return out


def is_finished(path: str | Path) -> bool:
    """Whether the run directory holds a finished run (a summary that is not ``failed``):
    what grid scripts skip; a failed or incomplete one is resumed."""
    f = Path(path) / "summary.json"
    if not f.is_file():
        return False
    try:
        return run_status(json.loads(f.read_text())) == "finished"
    except json.JSONDecodeError:
        return False


def held_out(summary: dict[str, Any]) -> tuple[str, int, float] | None:
    """(split, size, accuracy) of the number a run reports, whichever method made it: the
    first row of every summary table, so a train accuracy is never read as a test one."""
    test = summary.get("test") if isinstance(summary.get("test"), dict) else None
    if summary.get("method") == "eval" and "accuracy" in summary:
        return summary.get("split", "test"), summary["n"], summary["accuracy"]
    if summary.get("method") == "decode" and "n_eval" in summary:
        return summary["eval_split"], summary["n_eval"], summary["accuracy"]
    if summary.get("method") == "distill" and "eval" in summary:
        return "test", summary["eval"], summary["accuracy"]
    if test and "accuracy" in test:
        return "test", test["n"], test["accuracy"]
    return None


def held_out_correct(summary: dict[str, Any]) -> str | None:
    """The per-item record (``"0110..."``) behind :func:`held_out`'s number, for paired
    comparisons; ``None`` where the run kept none. A decode run's is its reported decoder's."""
    if summary.get("method") == "decode" and "variants" in summary:
        return summary["variants"][summary["decoder"]].get("correct")
    test = summary.get("test")
    return summary.get("correct", test.get("correct") if isinstance(test, dict) else None)


def run_host(path: str | Path) -> str:
    """Where a run ran, from its manifest: ``"<cpu> (<float units>)"``. Two CPUs with other
    units give other float results for the same run (bf16 on AMX and on AVX-512 BF16 round
    differently), so reports that compare runs say which machine each came from."""
    f = Path(path) / "manifest.json"
    host = json.loads(f.read_text()).get("host", {}) if f.is_file() else {}
    if "cpu" not in host:
        return "not recorded (manifest written before bbx recorded the CPU)"
    return f"{host['cpu']} ({', '.join(host.get('cpu_units') or []) or 'no AVX2'})"


def run_dtype(path: str | Path) -> str | None:
    """The engine dtype a run's manifest records (``"float32"``), or ``None`` (a remote or
    fake backend, or a manifest from before bbx recorded it)."""
    f = Path(path) / "manifest.json"
    data = json.loads(f.read_text()) if f.is_file() else {}
    extra = ((data.get("backend") or {}).get("capabilities") or {}).get("extra") or {}
    return extra.get("dtype")


def machines_lines(cells: list[tuple[Path, str]], heading: str = "Machines (from the run "
                   "manifests)") -> list[str]:
    """Report lines naming the machines a grid's cells ran on. ``cells`` pairs each run
    directory with its comparison group (``"sst-2 s42"``: the runs whose paired differences
    are read against each other); a group split over machines is named, because its paired
    differences then hold the machines' float differences as well as the methods', with
    the dtype its cells share (float32 results differ far less between CPUs than bf16's)."""
    by_host: dict[str, list[str]] = {}
    hosts_of: dict[str, set[str]] = {}
    dtypes_of: dict[str, set[str | None]] = {}
    for path, group in cells:
        host = run_host(path)
        by_host.setdefault(host, []).append(group)
        hosts_of.setdefault(group, set()).add(host)
        dtypes_of.setdefault(group, set()).add(run_dtype(path))
    if not by_host:
        return []
    if len(by_host) == 1:
        return [f"{heading}: every cell ran on {next(iter(by_host))}.", ""]
    out = [f"{heading}:"]
    for host, groups in by_host.items():
        counts = ", ".join(f"{g} ×{groups.count(g)}" for g in dict.fromkeys(groups))
        out.append(f"- {host}: {len(groups)} cells ({counts})")
    split = [g for g, hosts in hosts_of.items() if len(hosts) > 1]
    if split:
        shared = set().union(*(dtypes_of[g] for g in split))
        if len(shared) == 1 and None not in shared:  # say a dtype all of them share once
            names, what = ", ".join(split), f", every cell {next(iter(shared))}"
        else:
            names, what = ", ".join(
                f"{g} (every cell {next(iter(dtypes_of[g]))})"
                if len(dtypes_of[g]) == 1 and None not in dtypes_of[g] else g
                for g in split), ""
        out.append(f"- split over machines{what} (their paired differences include the "
                   f"machines' float differences): {names}")
    return out + [""]
