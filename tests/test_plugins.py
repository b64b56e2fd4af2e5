"""Plugins through entry points: a backend a package registers in ``bbx.backends`` runs a
recipe by name with its own options model, a misspelled option or name is one line, and a
plugin name that collides with a built-in one is refused. The entry points are faked by
replacing the registry's view of the installed packages' metadata."""

from __future__ import annotations

import json
from importlib.metadata import EntryPoint
from typing import Any

import pytest
from pydantic import BaseModel, ConfigDict

from blackbox.backends.fake import FakeBackend
from blackbox.errors import BbxError


class ShiftedBackend(FakeBackend):
    """A plugin's backend: the fake model with every label word's score shifted."""

    class Config(BaseModel):
        model_config = ConfigDict(extra="forbid")
        shift: float = 0.0

    def __init__(self, shift: float = 0.0) -> None:
        super().__init__()
        self.shift = shift
        self.name = "shifted"

    @property
    def fingerprint(self) -> str:  # part of every cache key: its answers are its own
        return f"shifted:{self.shift}:" + super().fingerprint

    def label_logprobs(self, prompts: Any, label_words: Any, adapter: Any = None
                       ) -> list[list[float]]:
        rows = super().label_logprobs(prompts, label_words, adapter)
        return [[v + self.shift for v in row] for row in rows]


@pytest.fixture
def plugins(monkeypatch: pytest.MonkeyPatch):
    """Install entry points (``{group: {name: target}}``) for the duration of a test."""
    import blackbox.registry as registry
    from blackbox.backends import BACKENDS

    def install(points: dict[str, dict[str, str]]) -> None:
        eps = [EntryPoint(name, target, group) for group, named in points.items()
               for name, target in named.items()]
        monkeypatch.setattr(registry, "entry_points",
                            lambda group: [e for e in eps if e.group == group])
        monkeypatch.setattr(BACKENDS, "_entry_points_loaded", False)
        monkeypatch.setattr(BACKENDS, "_targets", dict(BACKENDS._targets))

    return install


def test_a_plugin_backend_runs_a_recipe_by_name(plugins, tmp_path) -> None:
    from blackbox.api import run_recipe
    from blackbox.recipes import parse_recipe

    plugins({"bbx.backends": {"shifted": "test_plugins:ShiftedBackend"}})
    recipe = parse_recipe({"method": "eval", "task": "sst-2", "limit": 5,
                           "backend": {"kind": "shifted", "shift": -1.5},
                           "output_dir": str(tmp_path), "cache_dir": str(tmp_path / "c")})
    res = run_recipe(recipe, progress=False)
    s = res.summary
    plain = run_recipe({"method": "eval", "task": "sst-2", "limit": 5, "backend":
                        {"kind": "fake"}, "output_dir": str(tmp_path),
                        "cache_dir": str(tmp_path / "c")}, progress=False).summary
    # the same argmax (a shift changes no ranking) from a backend bbx never shipped, each
    # paying for its own answers (its fingerprint keeps them apart in the shared cache)
    assert s["n"] == 5 and s["correct"] == plain["correct"]
    assert s["usage"]["queries"] == 5 and plain["usage"]["queries"] == 5
    manifest = json.loads((res.run_dir / "manifest.json").read_text())
    assert manifest["backend"]["kind"] == "shifted"


def test_a_plugins_bad_option_or_name_is_one_line(plugins, tmp_path) -> None:
    from blackbox.api import run_recipe
    from blackbox.recipes import parse_recipe

    plugins({"bbx.backends": {"shifted": "test_plugins:ShiftedBackend"}})
    bad = parse_recipe({"method": "eval", "task": "sst-2", "limit": 2,
                        "backend": {"kind": "shifted", "shfit": 1.0},
                        "output_dir": str(tmp_path)})
    with pytest.raises(BbxError) as e:
        run_recipe(bad, progress=False)
    assert str(e.value) == "backend 'shifted': shfit: Extra inputs are not permitted"
    with pytest.raises(BbxError, match=r"unknown backend 'shiftd' \(did you mean 'shifted'"):
        parse_recipe({"method": "eval", "backend": {"kind": "shiftd"}})
    assert not list(tmp_path.iterdir())  # refused before a run directory was made


def test_a_plugin_name_that_collides_with_a_built_in_is_refused(plugins) -> None:
    from blackbox.backends import BACKENDS

    plugins({"bbx.backends": {"fake": "test_plugins:ShiftedBackend"}})
    with pytest.raises(ValueError, match="backend name 'fake' is registered twice: "
                       "blackbox.backends.fake:FakeBackend and test_plugins:ShiftedBackend"):
        BACKENDS.names()


def test_optimizer_and_method_plugins_are_found_and_collisions_refused(plugins,
                                                                       monkeypatch) -> None:
    from blackbox.methods import METHODS
    from blackbox.optim.base import BoxSpace
    from blackbox.optim.registry import OPTIMIZERS, make_optimizer

    plugins({"bbx.optimizers": {"my-random": "blackbox.optim.random_search:RandomSearch"},
             "bbx.methods": {"eval": "test_plugins"}})
    monkeypatch.setattr(OPTIMIZERS, "_entry_points_loaded", False)
    monkeypatch.setattr(OPTIMIZERS, "_targets", dict(OPTIMIZERS._targets))
    monkeypatch.setattr(METHODS, "_entry_points_loaded", False)
    monkeypatch.setattr(METHODS, "_targets", dict(METHODS._targets))
    assert "my-random" in OPTIMIZERS.names()
    with pytest.raises(ValueError, match="method name 'eval' is registered twice"):
        METHODS.names()
    opt = make_optimizer("my-random", BoxSpace(2, lower=0.0, upper=1.0), seed=0)
    asked = opt.ask(3)
    assert len(asked) == 3 and all(0.0 <= x <= 1.0 for c in asked for x in c.value)
