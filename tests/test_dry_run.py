"""``bbx run --dry-run``: every method's plan projected to queries, tokens and dollars pays
nothing, and lands within 25% of what the real run then pays (fake backend, cold cache)."""

from __future__ import annotations

import copy
import json

import pytest
from conftest import bbx

from blackbox.api import run_recipe
from blackbox.backends.fake import FakeBackend
from blackbox.dryrun import dry_run

PRICED = {"pricing": {"input_per_mtok": 2.5, "output_per_mtok": 10.0}}
ADAPTERS = {"a": {" positive": 1.0}, "b": {" negative": 1.0}}
RECIPES = {
    "eval": {"method": "eval", "task": "trec", "limit": 20},
    "search-prompt": {"method": "search-prompt", "task": "sst-2", "shots": 4, "clusters": 20,
                      "search": "random", "queries": 600, "test_limit": 30},
    "decode": {"method": "decode", "task": "sst-2", "shots": 4, "test_limit": 30,
               "epochs": 2},
    "distill": {"method": "distill", "task": "sst-2", "shots": 4, "queries": 120, "batch": 8,
                "pool_limit": 60, "eval_limit": 30, "worker_eval_limit": 10},
    "merge": {"method": "merge", "task": "sst-2", "user_examples": 8, "test_limit": 20,
              "stage1": {"evaluations": 20, "popsize": 4},
              "stage2": {"evaluations": 20, "popsize": 4}},
}


def _recipe(method: str, tmp_path) -> dict:
    data = copy.deepcopy(RECIPES[method])
    data["backend"] = {"kind": "fake", **PRICED,
                       **({"adapter_bias": ADAPTERS} if method == "merge" else {})}
    data["output_dir"] = str(tmp_path / "out")
    return data


def _fake(method: str) -> FakeBackend:
    return FakeBackend(adapter_bias=ADAPTERS if method == "merge" else None)


def _close(projected: float, paid: float) -> bool:
    return abs(projected - paid) <= 0.25 * paid


@pytest.mark.parametrize("method", list(RECIPES))
def test_dry_run_pays_nothing_and_is_within_25_percent_of_the_run(method, tmp_path) -> None:
    data = _recipe(method, tmp_path)
    fake = _fake(method)
    plan = dry_run(data, backend=fake)
    assert fake.calls == 0 and not (tmp_path / "out").exists()  # no call, no run, no ledger
    [step] = plan["steps"]
    assert step["method"] == method and step["stages"]
    assert all(set(r) >= {"stage", "verb", "queries", "prompt_tokens", "completion_tokens",
                          "usd"} for r in step["stages"])
    projected = plan["total"]
    usage = run_recipe(data, backend=_fake(method), progress=False).summary["usage"]
    assert usage["usd"] > 0
    assert _close(projected["usd"], usage["usd"]), (projected, usage)
    assert _close(projected["queries"], usage["queries"]), (projected, usage)


def test_a_chain_is_projected_step_by_step(tmp_path) -> None:
    chain = {"name": "c", "task": "sst-2", "shots": 4, "output_dir": str(tmp_path / "out"),
             "backend": {"kind": "fake", **PRICED},
             "steps": [{"name": "search", **{k: v for k, v in RECIPES["search-prompt"].items()
                                            if k not in ("task", "shots")}},
                       {"name": "check", "method": "eval", "task": "sst-2", "limit": 30,
                        "prompt": {"from": "search", "output": "best_prompt"}}]}
    fake = FakeBackend()
    plan = dry_run(chain, backend=fake)
    assert fake.calls == 0 and not (tmp_path / "out").exists()
    assert [s["step"] for s in plan["steps"]] == ["search", "check"]
    assert plan["total"]["usd"] == pytest.approx(sum(s["total"]["usd"] for s in plan["steps"]))
    paid = run_recipe(chain, backend=FakeBackend(), progress=False).summary["usage"]
    assert _close(plan["total"]["usd"], paid["usd"]), (plan["total"], paid)


def test_cli_dry_run_then_run_then_report_what_was_paid(tmp_path) -> None:
    f = tmp_path / "r.yaml"
    f.write_text(json.dumps(_recipe("eval", tmp_path)))  # JSON is YAML
    proc = bbx("run", str(f), "--dry-run", "--json")
    assert proc.returncode == 0, proc.stderr
    plan = json.loads(proc.stdout)
    assert plan["total"]["queries"] == 20 and not (tmp_path / "out").exists()
    direct = bbx("eval", "--task", "trec", "--backend", "fake", "--limit", "20", "--json",
                 "--dry-run", "--output-dir", str(tmp_path / "out"))
    assert json.loads(direct.stdout)["total"]["queries"] == 20  # the method command too
    table = bbx("run", str(f), "--dry-run")
    assert table.returncode == 0 and "total" in table.stdout and "nothing paid" in table.stdout
    assert bbx("run", str(f), "--no-progress").returncode == 0
    [run_dir] = (tmp_path / "out").iterdir()
    ledger = [json.loads(line) for line in (run_dir / "ledger.jsonl").read_text().splitlines()]
    report = bbx("report", str(run_dir))
    assert report.returncode == 0, report.stderr
    paid_in = sum(r["prompt_tokens"] for r in ledger)
    paid_out = sum(r["completion_tokens"] for r in ledger)
    line = report.stdout.strip().splitlines()[-1]
    assert line.startswith("paid: 20 queries") and f"{paid_in:,} tokens in" in line
    assert f"{paid_out:,} out" in line and "$" in line
