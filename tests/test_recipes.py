"""Recipes: schema, includes, --set overrides, clear errors, and every shipped recipe dry-runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from blackbox.api import run_recipe
from blackbox.backends.fake import FakeBackend
from blackbox.errors import BbxError
from blackbox.recipes import load_recipe
from blackbox.recipes.loader import apply_overrides, overrides_between

REPO = Path(__file__).resolve().parents[1]
SHIPPED = sorted(p for p in (REPO / "recipes").glob("*.yaml") if not p.name.startswith("_"))


def test_include_and_set(tmp_path) -> None:
    (tmp_path / "base.yaml").write_text("backend: {kind: fake, seed: 3}\nseed: 1\n")
    (tmp_path / "r.yaml").write_text("include: base.yaml\nmethod: eval\ntask: trec\nseed: 2\n")
    r = load_recipe(tmp_path / "r.yaml", ["limit=10", "backend.seed=5"])
    assert (r.seed, r.limit, r.backend.kind, r.backend.seed) == (2, 10, "fake", 5)


@pytest.mark.parametrize("text,msg", [
    ("method: eval\ntempalte: 1\n", "unknown key 'tempalte' (did you mean 'template'?)"),
    ("method: eval\nbackend: {kind: fake, sed: 1}\n", "unknown key 'backend.sed'"),
    ("method: evl\n", "unknown method 'evl' (did you mean 'eval'?)"),
    ("task: sst-2\n", "needs a 'method:' key"),
    ("method: eval\ntask: sst2\n", "unknown task 'sst2'"),
    ("method: eval\n  bad: [\n", "not valid YAML"),
    ("- a list\n", "must be a mapping"),
])
def test_bad_recipes_give_one_line_errors(tmp_path, text: str, msg: str) -> None:
    f = tmp_path / "r.yaml"
    f.write_text(text)
    with pytest.raises(BbxError) as e:
        load_recipe(f)
    assert msg in str(e.value) and "\n" not in str(e.value)


def test_include_cycle_and_missing_file(tmp_path) -> None:
    (tmp_path / "a.yaml").write_text("include: b.yaml\nmethod: eval\n")
    (tmp_path / "b.yaml").write_text("include: a.yaml\n")
    with pytest.raises(BbxError, match="include cycle"):
        load_recipe(tmp_path / "a.yaml")
    with pytest.raises(BbxError, match="not found"):
        load_recipe(tmp_path / "nope.yaml")


def test_overrides_between_is_the_inverse_of_apply_overrides() -> None:
    base = {"task": "sst-2", "seed": 1, "test_limit": None, "name": "x",
            "backend": {"kind": "local", "model": "default"}}
    data = {"task": "sst-2", "seed": 13, "test_limit": 40, "name": "y", "label": "13",
            "backend": {"kind": "local", "model": "other"}, "tags": [1, 2]}
    sets = overrides_between(base, data, skip=("name",))
    assert sets == ["backend.model=other", 'label="13"', "seed=13", "tags=[1, 2]",
                    "test_limit=40"]
    assert apply_overrides(base, sets) == {**data, "name": "x"}
    assert overrides_between(data, data) == []
    # another backend kind: the whole mapping, since the old kind's keys would not validate
    fake = {**base, "backend": {"kind": "fake", "seed": 0}}
    assert overrides_between(base, fake) == ['backend={"kind": "fake", "seed": 0}']
    assert overrides_between({**base, "backend": {"kind": "fake", "seed": 1}}, fake) == [
        "backend.seed=0"]


def test_set_needs_key_value() -> None:
    with pytest.raises(BbxError, match="key=value"):
        apply_overrides({}, ["budget"])
    assert apply_overrides({}, ["a.b=[1, 2]"]) == {"a": {"b": [1, 2]}}


# LMTurk sizes for the shipped-recipe test (a distill recipe's pool, evaluation set, budget)
SMALL = {"pool_limit": 60, "eval_limit": 40, "queries": 30, "batch": 10, "finetune_epochs": 1}


@pytest.mark.parametrize("path", SHIPPED, ids=[p.name for p in SHIPPED])
def test_every_shipped_recipe_validates_and_dry_runs(path: Path, tmp_path) -> None:
    from blackbox.chains import is_chain
    from blackbox.recipes.loader import load_recipe_data

    # two fake adapters, so that merge recipes (which search over a repository) dry-run too
    fake = FakeBackend(adapter_bias={"a": {" positive": 1.0}, "b": {" negative": 1.0}})
    data = load_recipe_data(path)
    if is_chain(data):  # a chain: every step on the fake backend
        for step in data["steps"]:  # the fake backend has no output embeddings to read
            step.pop("logprobs_from_hidden", None)
        result = run_recipe({**data, "output_dir": str(tmp_path)}, backend=fake,
                            progress=False)
        assert [r["step"] for r in result.summary["steps"]] == [s["name"] for s in
                                                                 data["steps"]]
        for row, step in zip(result.summary["steps"], data["steps"], strict=True):
            sub = json.loads((REPO / row["run_dir"] / "summary.json").read_text())
            _assert_held_out(sub, step["method"])
            assert row["accuracy"] == sub_accuracy(sub)
        return
    recipe = load_recipe(path)
    # the grid recipes label and fine-tune on hundreds of items: the same recipe on fewer
    if recipe.method == "distill":
        recipe = load_recipe(path, [f"{k}={v}" for k, v in SMALL.items()])
    result = run_recipe(recipe.model_copy(update={"output_dir": str(tmp_path)}),
                        backend=fake, progress=False)
    assert (result.run_dir / "manifest.json").is_file()
    _assert_held_out(json.loads((result.run_dir / "summary.json").read_text()),
                     recipe.method)


def sub_accuracy(summary: dict) -> float:
    from blackbox.runs import held_out

    found = held_out(summary)
    assert found is not None
    return found[2]


def _assert_held_out(summary: dict, method: str) -> None:
    """The run finished as its method, reports a held-out accuracy, and that accuracy is
    the mean of its own per-item record on the items it names."""
    from blackbox.runs import held_out
    from blackbox.stats import parse_correct

    assert summary["method"] == method and summary.get("status", "finished") == "finished"
    found = held_out(summary)
    assert found is not None, sorted(summary)
    split, n, accuracy = found
    assert split == "test" and n > 0

    def records(d: dict):
        for k, v in d.items():
            if k == "correct" and isinstance(v, str):
                yield v
            elif isinstance(v, dict):
                yield from records(v)

    per_item = [c for c in records(summary) if len(c) == n]
    assert per_item, "no per-item record of the held-out accuracy"
    # (distill rounds its accuracies to 4 decimals)
    assert any(parse_correct(c).mean() == pytest.approx(accuracy, abs=5e-5) for c in per_item)
    # the record the reports pair on is that one
    from blackbox.runs import held_out_correct

    record = held_out_correct(summary)
    assert record is not None and len(record) == n
    assert parse_correct(record).mean() == pytest.approx(accuracy, abs=5e-5)


def test_a_run_saved_before_a_new_default_field_resumes_but_another_recipe_is_refused(
        tmp_path) -> None:
    import yaml

    recipe = load_recipe(REPO / "recipes" / "dry-run-eval.yaml", [f"output_dir={tmp_path}"])
    first = run_recipe(recipe, progress=False)
    saved = first.run_dir / "recipe.yaml"
    # what an older bbx wrote: the same recipe without a field that has since got a default
    data = yaml.safe_load(saved.read_text())
    data["backend"].pop("seed", None)
    data.pop("budget", None)
    saved.write_text(yaml.safe_dump(data))
    again = run_recipe(recipe, run_dir=first.run_dir, progress=False)
    assert again.summary["accuracy"] == first.summary["accuracy"]
    other = load_recipe(REPO / "recipes" / "dry-run-eval.yaml",
                        [f"output_dir={tmp_path}", "seed=7"])
    with pytest.raises(BbxError, match="holds a different recipe"):
        run_recipe(other, run_dir=first.run_dir, progress=False)
