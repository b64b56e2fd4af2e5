"""The method commands' options: help from the recipe schema, only what the user set passed
on (the schema's default otherwise), the same backend options everywhere, and ``--dry-run``
on every method command (a plan, nothing paid)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import typer.main
from typer.testing import CliRunner

from blackbox import api
from blackbox.cli.common import BACKEND_OPTIONS, resolve_help
from blackbox.cli.main import app
from blackbox.methods.claps.recipe import ClapsRecipe
from blackbox.methods.eval.recipe import EvalRecipe
from blackbox.methods.lmturk.recipe import LMTurkRecipe
from blackbox.methods.merge.recipe import MergeRecipe
from blackbox.methods.mpd.recipe import DecodeRecipe
from blackbox.recipes.schema import RemoteBackendConfig

METHOD_COMMANDS = [["eval"], ["search-prompt"], ["distill"], ["merge"], ["decode", "fit"],
                   ["decode", "predict"]]
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _invoke(*args: str) -> Any:
    # wide enough that rich wraps no help line
    return CliRunner().invoke(app, list(args), env={"COLUMNS": "400", "NO_COLOR": "1"})


def _command(path: list[str]) -> Any:
    cmd: Any = typer.main.get_command(app)
    for part in path:
        cmd = cmd.commands[part]
    return cmd


def _id(value: Any) -> str:
    """Test ids: the command and the option (the rest is in the test)."""
    if isinstance(value, list):
        return " ".join(value)
    return value if isinstance(value, str) and value.startswith("--") else ""


@pytest.mark.parametrize("command,option,model,field,default", [
    (["search-prompt"], "--budget", ClapsRecipe, "queries", "20000"),
    (["distill"], "--acquisition", LMTurkRecipe, "acquisition", "entropy"),
    (["decode", "fit"], "--neighbours", DecodeRecipe, "neighbours", "10"),
    (["merge"], "--variant", MergeRecipe, "variant", "evo"),
    (["eval"], "--split", EvalRecipe, "split", "test"),
    (["eval"], "--api", RemoteBackendConfig, "api", "auto"),
], ids=_id)
def test_help_is_the_schema_description_and_default(command, option, model, field,
                                                    default) -> None:
    description = model.model_fields[field].description
    result = _invoke(*command, "--help")
    assert result.exit_code == 0, result.output
    [line] = [ln for ln in ANSI.sub("", result.output).splitlines()
              if re.search(rf"\s{option}\s", ln)]
    assert description and f"{description} [default from recipe: {default}]" in line


def test_a_stage_option_shows_that_stages_own_default() -> None:
    out = ANSI.sub("", _invoke("merge", "--help").output)
    [stage2] = [ln for ln in out.splitlines() if "--stage2" in ln]
    assert "Stage-2 (β) evaluations: mixtures scored" in stage2
    assert "[default from recipe: 800]" in stage2  # stage 2's, not StageConfig's 400


@pytest.mark.parametrize("command", METHOD_COMMANDS, ids=" ".join)
def test_every_method_command_takes_the_same_backend_options_and_its_help_resolves(
        command) -> None:
    cmd = _command(command)
    names = {p.name for p in cmd.params}
    assert set(BACKEND_OPTIONS) | {"max_queries", "output_dir", "json_out"} <= names, command
    for p in cmd.params:
        help_text = resolve_help(getattr(p, "help", None))  # a typo'd field raises here
        assert help_text is None or "\x00" not in help_text, (command, p.name)
        if p.name in BACKEND_OPTIONS or p.name == "max_queries":
            assert p.default is None, (command, p.name)  # "not given": the recipe's default


class Captured:
    """``api.run_recipe`` replaced: the recipe the command built, nothing run."""

    def __init__(self) -> None:
        self.recipes: list[Any] = []

    def __call__(self, recipe: Any, **kwargs: Any) -> api.RunResult:
        self.recipes.append(recipe)
        return api.RunResult(Path("nowhere"), {"method": recipe.method})


@pytest.mark.parametrize("command,option,value,field", [
    (["search-prompt"], "--budget", "123", "queries"),
    (["distill"], "--budget", "40", "queries"),
    (["decode", "fit"], "--neighbours", "4", "neighbours"),
    (["merge"], "--user-examples", "8", "user_examples"),
    (["eval"], "--split", "dev", "split"),
], ids=_id)
def test_an_option_not_given_leaves_the_recipe_default(monkeypatch, command, option, value,
                                                       field) -> None:
    captured = Captured()
    monkeypatch.setattr(api, "run_recipe", captured)
    base = [*command, "--backend", "fake", "--json", "--no-progress"]
    assert _invoke(*base).exit_code == 0
    assert _invoke(*base, option, value).exit_code == 0
    default, given = captured.recipes
    schema = type(default).model_fields[field]
    assert field not in default.model_fields_set  # not passed on: the schema's default
    assert getattr(default, field) == schema.get_default(call_default_factory=True)
    assert field in given.model_fields_set and str(getattr(given, field)) == value
    assert not {"seed", "shots", "task", "output_dir"} & default.model_fields_set


def test_without_backend_options_the_recipe_default_backend_applies(monkeypatch) -> None:
    captured = Captured()
    monkeypatch.setattr(api, "run_recipe", captured)
    assert _invoke("merge", "--json", "--no-progress").exit_code == 0
    assert _invoke("merge", "--stage2", "30", "--popsize", "4", "--json").exit_code == 0
    plain, staged = captured.recipes
    # the recipe's default backend, with merge's default adapters: the zoo
    assert (plain.backend.kind, plain.backend.model, plain.backend.adapters) == (
        "local", "default", "zoo")
    assert (plain.stage1.evaluations, plain.stage2.evaluations) == (400, 800)
    # a stage given in part keeps its other defaults
    assert (staged.stage1.evaluations, staged.stage1.popsize) == (400, 4)
    assert (staged.stage2.evaluations, staged.stage2.popsize, staged.stage2.optimizer) == (
        30, 4, "cma")


def test_a_backend_option_of_another_kind_is_an_error(monkeypatch) -> None:
    monkeypatch.setattr(api, "run_recipe", Captured())
    result = _invoke("eval", "--backend", "fake", "--base-url", "http://127.0.0.1:9/v1")
    assert result.exit_code != 0
    assert str(result.exception) == ("--base-url is an option of --backend remote, not of "
                                     "'fake'")


DRY_RUNS = {
    "search-prompt": ["search-prompt", "--shots", "4", "--clusters", "20", "--search", "random",
                      "--budget", "600", "--test-limit", "30"],
    "distill": ["distill", "--shots", "4", "--budget", "120", "--batch", "8", "--pool-limit",
                "60", "--eval-limit", "30"],
    "decode fit": ["decode", "fit", "--shots", "4", "--test-limit", "30"],
    "merge": ["merge", "--user-examples", "8", "--test-limit", "20", "--stage1", "20",
              "--stage2", "20", "--popsize", "4"],
}


@pytest.fixture
def nothing_paid(monkeypatch, tmp_path) -> Path:
    """The fake backend's verbs and the run itself raise: a dry run may call none of them."""
    from blackbox.backends.fake import FakeBackend

    def paid(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a dry run called the backend")

    for verb in ("label_logprobs", "score", "hidden", "generate", "embed"):
        monkeypatch.setattr(FakeBackend, verb, paid)
    monkeypatch.setattr(api, "run_recipe", paid)
    responses = tmp_path / "responses"
    monkeypatch.setenv("BBX_RESPONSES_DIR", str(responses))
    return responses


@pytest.mark.parametrize("name", list(DRY_RUNS))
def test_dry_run_prints_a_plan_and_pays_nothing(name, tmp_path, nothing_paid) -> None:
    out = tmp_path / "out"
    result = _invoke(*DRY_RUNS[name], "--backend", "fake", "--dry-run", "--json",
                     "--output-dir", str(out))
    assert result.exit_code == 0, (result.output, result.exception)
    plan = json.loads(result.output)
    [step] = plan["steps"]
    assert step["stages"] and plan["total"]["queries"] > 0
    assert all(r["queries"] >= 0 and "prompt_tokens" in r for r in step["stages"])
    assert not out.exists()  # no run directory, so no ledger rows
    assert not nothing_paid.exists() or not any(nothing_paid.rglob("*"))  # nothing cached
    table = _invoke(*DRY_RUNS[name], "--backend", "fake", "--dry-run", "--output-dir", str(out))
    assert table.exit_code == 0 and "nothing paid" in table.output and "total" in table.output
    assert not out.exists()


def test_a_dry_run_says_when_the_run_would_be_refused(tmp_path, nothing_paid) -> None:
    result = _invoke(*DRY_RUNS["merge"], "--backend", "fake", "--dry-run", "--json")
    [step] = json.loads(result.output)["steps"]
    assert step["note"].startswith("the run would be refused: merge needs adapters")
