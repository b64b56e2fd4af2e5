"""Chained recipes: ``steps:`` run in order in one run directory, a step taking a named
output of an earlier one.

A chain is a recipe without ``method:`` and with ``steps:``. Its other top-level keys (task,
seed, shots, backend, cache_dir, test_seed, allow_overlap) are every step's defaults; each
step is a method recipe with a ``name``. A value written ``{from: STEP, output: NAME}`` is
replaced by that earlier step's output when the step runs (data, never code):

========================  =====================================================
``search-prompt``         ``best_prompt`` (a string: eval's ``prompt``, ...)
``decode``                ``decoder_file`` (a path: decode predict's ``decoder_file``)
``distill``               ``student`` (a path: the student file)
``merge``                 ``mixture`` (an adapter spec)
every method              ``accuracy`` (its held-out accuracy)
========================  =====================================================

Everything is validated before anything runs: unknown steps or outputs, references to a
later step, and each step's own recipe (with the reference's type standing in for it).
Each step gets its own run directory under the chain's (``steps/NN-name/``); reopening the
chain (``--run-dir``) skips finished steps and resumes the others, so nothing is paid twice.
``budget:`` at the top caps the whole chain; a step's own ``budget:`` caps the step too.
"""

from __future__ import annotations

import copy
import time
from pathlib import Path
from typing import Any

from blackbox.errors import BbxError, did_you_mean

#: Per method, the outputs a later step may take: name -> (summary key path, placeholder).
OUTPUTS: dict[str, dict[str, tuple[tuple[str, ...], Any]]] = {
    "search-prompt": {"best_prompt": (("best_prompt",), "")},
    "decode": {"decoder_file": (("decoder_file",), "decoder.safetensors")},
    "distill": {"student": (("student",), "student.json")},
    "merge": {"mixture": (("adapter",), None)},
}
SHARED = ("task", "seed", "shots", "backend", "cache_dir", "test_seed", "allow_overlap",
          "drop_overlap")
TOP = (*SHARED, "name", "steps", "budget", "output_dir")


def is_chain(data: Any) -> bool:
    """Whether a recipe mapping is a chain (``steps:`` and no ``method:``)."""
    return isinstance(data, dict) and "steps" in data and "method" not in data


def _outputs(method: str) -> dict[str, tuple[tuple[str, ...], Any]]:
    return {**OUTPUTS.get(method, {}), "accuracy": (("accuracy",), 0.0)}


def _refs(value: Any, path: str = "") -> list[tuple[str, dict[str, Any]]]:
    """Every ``{from:, output:}`` reference inside a step, with where it sits."""
    if isinstance(value, dict):
        if set(value) == {"from", "output"}:
            return [(path, value)]
        return [r for k, v in value.items() for r in _refs(v, f"{path}.{k}" if path else k)]
    if isinstance(value, list):
        return [r for i, v in enumerate(value) for r in _refs(v, f"{path}[{i}]")]
    return []


def _substitute(value: Any, resolve: Any) -> Any:
    if isinstance(value, dict):
        if set(value) == {"from", "output"}:
            return resolve(value)
        return {k: _substitute(v, resolve) for k, v in value.items()}
    if isinstance(value, list):
        return [_substitute(v, resolve) for v in value]
    return value


def step_recipes(chain: dict[str, Any], source: str = "chain") -> list[dict[str, Any]]:
    """The steps as full recipe mappings (shared keys merged in), references left in place,
    after checking everything that can be checked before running (see the module docstring).
    """
    from blackbox.recipes.loader import deep_merge, parse_recipe

    unknown = [k for k in chain if k not in TOP]
    if unknown:
        raise BbxError(f"{source}: unknown key '{unknown[0]}'{did_you_mean(unknown[0], TOP)}")
    steps = chain.get("steps")
    if not isinstance(steps, list) or not steps:
        raise BbxError(f"{source}: steps: give a list of method recipes, each with a name")
    shared = {k: copy.deepcopy(chain[k]) for k in SHARED if k in chain}
    out: list[dict[str, Any]] = []
    methods: dict[str, str] = {}
    for i, step in enumerate(steps):
        if not isinstance(step, dict) or not isinstance(step.get("name"), str):
            raise BbxError(f"{source}: step {i + 1} needs a name: (and a method:)")
        name = step["name"]
        if name in methods:
            raise BbxError(f"{source}: two steps are named '{name}': names must differ")
        data = deep_merge(shared, step)
        for where, ref in _refs(step):
            frm, output = ref["from"], ref["output"]
            if frm not in methods:
                later = any(s.get("name") == frm for s in steps[i:] if isinstance(s, dict))
                raise BbxError(f"{source}: step '{name}' {where}: from: '{frm}' "
                               + ("runs later: a step can only take an earlier step's output"
                                  if later else
                                  f"is no earlier step{did_you_mean(frm, list(methods))}"))
            choices = _outputs(methods[frm])
            if output not in choices:
                raise BbxError(f"{source}: step '{name}' {where}: step '{frm}' "
                               f"({methods[frm]}) has no output '{output}' (choose from: "
                               f"{', '.join(choices)})")
        # the step's own schema, with each reference's type standing in for its value
        placeholder = _substitute(data, lambda r: _outputs(methods[r["from"]])[r["output"]][1])
        parsed = parse_recipe(placeholder, source=f"{source} step '{name}'")
        methods[name] = parsed.method  # type: ignore[attr-defined]
        out.append(data)
    return out


def _output(summary: dict[str, Any], method: str, output: str) -> Any:
    path, _ = _outputs(method)[output]
    value: Any = summary
    for key in path:
        value = value.get(key) if isinstance(value, dict) else None
    if value is None:
        raise BbxError(f"step output '{output}' is missing from the {method} run's summary: "
                       "the step did not produce it (see its summary)")
    return value


def run_chain(chain: dict[str, Any], run_dir: str | Path | None = None,
              progress: bool = True, source: str = "chain", backend: Any = None) -> Any:
    """Run the steps of ``chain`` in order (see the module docstring); returns a
    :class:`~blackbox.api.RunResult` whose summary holds one row per step. ``backend``
    replaces every step's backend (tests, dry runs); it is left open."""
    from blackbox.api import RunResult, make_backend, run_recipe
    from blackbox.progress import Stages
    from blackbox.recipes import parse_recipe
    from blackbox.runs import RunDir, is_finished, read_run

    steps = step_recipes(chain, source)
    name = chain.get("name") or "chain"
    rd = RunDir.open(chain, chain.get("output_dir", "results/runs"), run_dir, name=name)
    cap = dict(chain.get("budget") or {})
    paid: dict[str, Any] = {"queries": 0, "tokens": 0, "completion_tokens": 0, "usd": None}
    summaries: dict[str, tuple[str, dict[str, Any]]] = {}
    backends: dict[str, Any] = {}  # one backend per distinct config: the model loads once
    rows = []
    log = Stages(name, enabled=progress)  # one line per step, as each method's stage lines
    t0 = time.perf_counter()
    try:
        for i, data in enumerate(steps):
            step_dir = rd.path / "steps" / f"{i + 1:02d}-{data['name']}"
            if is_finished(step_dir):
                summary = read_run(step_dir)["summary"]
                log.note(f"step {i + 1}/{len(steps)} {data['name']}: finished, not re-run")
            else:
                resolved = _substitute(data, lambda r: _output(
                    summaries[r["from"]][1], summaries[r["from"]][0], r["output"]))
                resolved["output_dir"] = str(rd.path / "steps")
                budget = dict(resolved.get("budget") or {})
                for key, used in (("max_queries", paid["queries"]),
                                  ("max_tokens", paid["tokens"]),
                                  ("max_usd", paid["usd"] or 0.0)):
                    if cap.get(key) is not None:
                        left = max(0, cap[key] - used)
                        budget[key] = left if budget.get(key) is None else min(left, budget[key])
                resolved["budget"] = budget
                recipe = parse_recipe(resolved, source=f"step '{data['name']}'")
                key = repr(sorted(recipe.backend.model_dump().items()))
                if backend is not None:
                    backends.setdefault(key, backend)
                elif key not in backends:
                    backends[key] = make_backend(recipe.backend)
                log.note(f"step {i + 1}/{len(steps)} {data['name']} "
                         f"({recipe.method})")  # type: ignore[attr-defined]
                summary = run_recipe(recipe, run_dir=step_dir, progress=progress,
                                     backend=backends[key], close_backend=False).summary
            usage = summary.get("usage", {})
            paid["queries"] += int(usage.get("queries", 0))
            paid["tokens"] += int(usage.get("tokens", 0))
            paid["completion_tokens"] += int(usage.get("completion_tokens") or 0)
            if usage.get("usd") is not None:  # None: unpriced (local, or no price given)
                paid["usd"] = round((paid["usd"] or 0.0) + float(usage["usd"]), 6)
            summaries[data["name"]] = (summary["method"], summary)
            rows.append(_row(data["name"], summary, step_dir))
    finally:
        for b in backends.values():
            if b is not backend:
                b.close()
    out = {"method": "chain", "steps": rows, "usage": paid,
           "run_wall_s": round(time.perf_counter() - t0, 2),
           "deploy": rows[-1]["artefact"] if rows else None}
    rd.write_summary(out)
    return RunResult(rd.path, out)


def _row(name: str, summary: dict[str, Any], step_dir: Path) -> dict[str, Any]:
    """One step's line of the chain's table."""
    from blackbox.paths import portable
    from blackbox.runs import held_out

    shown = held_out(summary)
    artefact = (summary.get("best_prompt") if summary["method"] == "search-prompt"
                else summary.get("decoder_file") or summary.get("student")
                or (summary.get("adapter") if summary["method"] == "merge" else None))
    usage = summary.get("usage", {})
    return {"step": name, "method": summary["method"], "run_dir": portable(step_dir),
            "split": shown[0] if shown else None, "n": shown[1] if shown else None,
            "accuracy": shown[2] if shown else None,
            "queries": usage.get("queries", 0), "cached": usage.get("cached", 0),
            "tokens": usage.get("tokens", 0),
            "completion_tokens": usage.get("completion_tokens", 0), "usd": usage.get("usd"),
            "wall_s": summary.get("run_wall_s"),
            "artefact": artefact}
