"""Chained recipes on the fake backend: references validated before anything runs, a step's
output passed on, per-step resume, one budget over the whole chain."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import bbx

from blackbox.api import run_recipe
from blackbox.chains import step_recipes
from blackbox.errors import BbxError

SEARCH = {"name": "search", "method": "search-prompt", "vocab": ["great", "awful", "film",
                                                                "plot", "fun", "bad"],
          "clusters": 0, "length": 2, "queries": 400, "percentile": 50, "test_limit": 30}


def chain(tmp_path: Path, *steps: dict, **top: object) -> dict:
    return {"name": "c", "task": "sst-2", "backend": {"kind": "fake"},
            "output_dir": str(tmp_path / "runs"), "steps": list(steps), **top}


@pytest.mark.parametrize(("steps", "message"), [
    ([{"name": "a", "method": "eval", "prompt": {"from": "search", "output": "best_prompt"}},
      SEARCH], "step 'a' prompt: from: 'search' runs later"),
    ([SEARCH, {"name": "a", "method": "eval", "prompt": {"from": "serch",
                                                         "output": "best_prompt"}}],
     "from: 'serch' is no earlier step .*did you mean 'search'"),
    ([SEARCH, {"name": "a", "method": "eval", "prompt": {"from": "search", "output": "prompt"}}],
     r"has no output 'prompt' \(choose from: best_prompt, accuracy\)"),
    ([{"name": "a", "method": "eval", "limt": 3}], "step 'a'.*unknown key 'limt'"),
    ([{"method": "eval"}], "step 1 needs a name"),
])
def test_bad_chains_are_refused_before_anything_runs(tmp_path: Path, steps: list,
                                                     message: str) -> None:
    with pytest.raises(BbxError, match=message):
        step_recipes(chain(tmp_path, *steps))
    with pytest.raises(BbxError, match=message):
        run_recipe(chain(tmp_path, *steps), progress=False)
    assert not (tmp_path / "runs").exists()  # nothing ran, nothing was written


def test_a_step_takes_an_earlier_steps_output_and_resume_skips_finished_steps(
        tmp_path: Path) -> None:
    data = chain(tmp_path, {"name": "zero-shot", "method": "eval", "limit": 30}, SEARCH,
                 {"name": "tuned", "method": "eval", "limit": 30,
                  "prompt": {"from": "search", "output": "best_prompt"}})
    first = run_recipe(data, progress=False)
    rows = {r["step"]: r for r in first.summary["steps"]}
    tuned = json.loads((first.run_dir / "steps" / "03-tuned" / "summary.json").read_text())
    assert tuned["prompt"] == rows["search"]["artefact"] != ""
    assert [r["n"] for r in rows.values()] == [30, 30, 30]  # the same test items
    assert first.summary["deploy"] is None  # an eval step deploys nothing
    # reopening the chain pays for nothing: every step is finished
    again = run_recipe(data, run_dir=first.run_dir, progress=False)
    assert again.summary["steps"] == first.summary["steps"]
    assert again.summary["usage"] == first.summary["usage"]


def test_the_chain_budget_caps_every_step_together(tmp_path: Path) -> None:
    data = chain(tmp_path, {"name": "one", "method": "eval", "limit": 30, "chunk": 10},
                 {"name": "two", "method": "eval", "limit": 30, "chunk": 10, "template": 1},
                 budget={"max_queries": 40})
    with pytest.raises(BbxError, match="budget"):
        run_recipe(data, progress=False)
    (run,) = (tmp_path / "runs").iterdir()
    one = json.loads((run / "steps" / "01-one" / "summary.json").read_text())
    two = json.loads((run / "steps" / "02-two" / "summary.json").read_text())
    assert one["usage"]["queries"] == 30
    assert two["status"] == "failed" and two["paid_rows"] == 10  # 40 in all, never more


def test_bbx_run_prints_one_table_across_steps(tmp_path: Path) -> None:
    recipe = tmp_path / "chain.yaml"
    recipe.write_text(json.dumps(chain(tmp_path, {"name": "zero-shot", "method": "eval",
                                                  "limit": 20})))
    res = bbx("run", str(recipe), "--no-progress", env={"COLUMNS": "200"})
    assert res.returncode == 0, res.stderr
    assert "bbx chain" in res.stdout and "zero-shot" in res.stdout
    assert "(test, 20 items)" in res.stdout
