"""A new backend written from the protocol alone: the verbs only, then one ability at a time.

A method that needs an ability the backend lacks is refused before anything is paid, with
one line naming the ability and the fallback; a backend that declares the ability runs the
method, and its metered calls land in the ledger (and the cache: a rerun pays nothing).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from blackbox.api import run_recipe
from blackbox.backends.abilities import ABILITIES, Need, check_needs, has
from blackbox.backends.base import Adapter, Capabilities, normalize_adapter
from blackbox.backends.metered import MeteredBackend
from blackbox.errors import BbxError
from blackbox.recipes import parse_recipe

WORDS = ["magic", "wand", "table", "chair", "water", "river", "stone", "cloud", "green",
         "blue", "happy", "film", "story", "music", "book", "actor"]


def _vec(text: str, dim: int = 8) -> list[float]:
    seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big")
    v = np.random.default_rng(seed).standard_normal(dim)
    return (v / np.linalg.norm(v)).tolist()


class Minimal:
    """The six verbs and nothing else: every optional ability flag left at its default."""

    name = "minimal"

    def __init__(self) -> None:
        self.paid = 0  # items this backend computed (what the meter must have counted)

    @property
    def capabilities(self) -> Capabilities:
        return Capabilities()

    @property
    def fingerprint(self) -> str:
        return f"minimal:{type(self).__name__}"

    def _shift(self, adapter: Adapter, word: str) -> float:
        spec = normalize_adapter(adapter)
        if spec is None:
            return 0.0
        raise BbxError("the minimal backend has no adapters")

    def label_logprobs(self, prompts: Sequence[str], label_words: Sequence[str],
                       adapter: Adapter = None) -> list[list[float]]:
        self.paid += len(prompts)
        return [[-1.0 - 0.5 * i + ("great" in p.lower()) * (i == 1) + self._shift(adapter, w)
                 for i, w in enumerate(label_words)] for p in prompts]

    def score(self, prompts: Sequence[str], continuations: Sequence[str],
              adapter: Adapter = None) -> list[list[float]]:
        self.paid += len(prompts)
        return [[-1.0] * max(1, len(c.split())) for c in continuations]

    def hidden(self, prompts: Sequence[str], position: str = "last",
               adapter: Adapter = None) -> list[list[float]]:
        self.paid += len(prompts)
        return [_vec(p) for p in prompts]

    def generate(self, prompts: Sequence[str], params: dict[str, Any] | None = None,
                 adapter: Adapter = None) -> list[str]:
        self.paid += len(prompts)
        return ["ok" for _ in prompts]

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        self.paid += len(texts)
        return [_vec(t) for t in texts]

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        return [max(1, len(t.split())) for t in texts]

    def close(self) -> None:
        pass


class WithAdapters(Minimal):
    """The minimal backend plus the ``adapters`` ability: two adapters that move the scores."""

    BIAS = {"up": {" positive": 1.0}, "down": {" negative": 1.0}}

    @property
    def capabilities(self) -> Capabilities:
        return replace(super().capabilities, adapters=True)

    def list_adapters(self) -> list[str]:
        return sorted(self.BIAS)

    def _shift(self, adapter: Adapter, word: str) -> float:
        spec = normalize_adapter(adapter)
        if spec is None:
            return 0.0
        if isinstance(spec, str):
            spec = {"adapters": [spec], "alpha": [1.0], "beta": [1.0]}
        return sum(b * a * self.BIAS[n].get(word, 0.0)
                   for n, a, b in zip(spec["adapters"], spec["alpha"], spec["beta"], strict=True))


class WithTokens(Minimal):
    """The minimal backend plus ``vocabulary`` and ``token_embeddings``."""

    TOKENS = ["<s>", "ing", *[f" {w}" for w in WORDS], " 42"]

    @property
    def capabilities(self) -> Capabilities:
        return replace(super().capabilities, vocabulary=True, token_embeddings=True)

    def vocabulary(self) -> list[str]:
        return list(self.TOKENS)

    def token_embeddings(self, which: str = "output") -> np.ndarray:
        return np.array([_vec(which + t) for t in self.TOKENS], dtype=np.float32)


def _merge(tmp_path: Path, backend: Minimal, **kw: Any) -> Any:
    data = {"method": "merge", "task": "sst-2", "seed": 5, "user_examples": 8, "test_limit": 10,
            "stage1": {"evaluations": 4, "popsize": 2}, "stage2": {"evaluations": 4,
                                                                 "popsize": 2},
            "output_dir": str(tmp_path / "runs"), "cache_dir": str(tmp_path / "cache"),
            "backend": {"kind": "fake"}, **kw}
    return run_recipe(parse_recipe(data), backend=backend, progress=False)


def _claps(tmp_path: Path, backend: Minimal, **kw: Any) -> Any:
    data = {"method": "search-prompt", "task": "sst-2", "clusters": 4, "embeddings": "input",
            "percentile": 50, "length": 2, "queries": 40, "train_batch": 4, "select_top": 2,
            "test_limit": 8, "output_dir": str(tmp_path / "runs"),
            "cache_dir": str(tmp_path / "cache"), "backend": {"kind": "fake"}, **kw}
    return run_recipe(parse_recipe(data), backend=backend, progress=False)


def _ledger(run_dir: Path) -> list[dict[str, Any]]:
    return [json.loads(x) for x in (run_dir / "ledger.jsonl").read_text().splitlines()]


def _nothing_left(tmp_path: Path) -> bool:
    runs = tmp_path / "runs"
    return not runs.exists() or not any(runs.iterdir())


def test_a_method_needing_a_missing_ability_is_refused_before_paying(tmp_path: Path) -> None:
    b = Minimal()
    with pytest.raises(BbxError) as e:
        _merge(tmp_path, b)
    assert str(e.value) == (
        "merge needs adapters (the adapters it merges); backend 'minimal' has none: use "
        "backend: {kind: local, adapters: DIR} or a bbx serve --adapters DIR server")
    with pytest.raises(BbxError, match=r"^search-prompt needs vocabulary \(token ids: "
                       r"embeddings: input .*\); backend 'minimal' has none: use "
                       r"embeddings: embed \(or auto\)"):
        _claps(tmp_path, b)
    with pytest.raises(BbxError, match="^decode needs vocabulary .* set logprobs_from_hidden: "
                                       "false$"):
        run_recipe(parse_recipe({"method": "decode", "task": "sst-2", "shots": 2,
                                 "logprobs_from_hidden": True, "backend": {"kind": "fake"},
                                 "output_dir": str(tmp_path / "runs")}),
                   backend=b, progress=False)
    with pytest.raises(BbxError, match="^merge needs repository .*white-box"):
        _merge(tmp_path, WithAdapters(), variant="ties")
    assert b.paid == 0 and _nothing_left(tmp_path)  # refused before any query, no run dir


def test_a_backend_declaring_the_ability_runs_and_its_calls_are_metered(tmp_path: Path) -> None:
    b = WithAdapters()
    res = _merge(tmp_path, b)
    s = res.summary
    assert s["adapters"] == ["down", "up"] and s["test"]["n"] == 10
    rows = _ledger(res.run_dir)
    paid = [r for r in rows if not r["cached"]]
    assert {r["verb"] for r in rows} == {"label_logprobs"}
    assert len(paid) == b.paid == s["usage"]["queries"] > 0  # every computed item metered
    # a rerun on the same cache pays for nothing, and says so in its own ledger
    again = _merge(tmp_path, b)
    assert b.paid == len(paid) and again.summary["usage"]["queries"] == 0
    assert all(r["cached"] for r in _ledger(again.run_dir))
    assert again.summary["test"] == s["test"]


def test_claps_reads_the_declared_vocabulary_and_embeddings(tmp_path: Path) -> None:
    b = WithTokens()
    s = _claps(tmp_path, b).summary
    assert s["vocab"]["source"] == "tokenizer" and s["vocab"]["embeddings"] == "input"
    assert s["vocab"]["candidates"] == len(WORDS)  # " 42", "ing", "<s>" are no candidates
    # without the abilities, embeddings: auto falls back to the (metered) embeddings route
    plain = _claps(tmp_path / "plain", Minimal(), embeddings="auto", vocab=WORDS).summary
    assert plain["vocab"]["embeddings"] == "embed" and plain["usage"]["by_verb"]["embed"] > 0


def test_metered_wrapper_forwards_abilities_and_names_a_missing_one(tmp_path: Path) -> None:
    m = MeteredBackend(WithTokens(), ledger_path=tmp_path / "ledger.jsonl")
    assert m.vocabulary() == WithTokens.TOKENS  # free metadata: no ledger row, no query
    assert m.token_embeddings("input").shape == (len(WithTokens.TOKENS), 8)
    assert m.usage.queries == 0
    for call, ability in ((m.list_adapters, "adapters"),
                          (m.adapter_repository, "repository"), (m.model_source, "engine")):
        with pytest.raises(BbxError, match=f"^backend 'minimal' has no {ability} ability"):
            call()
    with pytest.raises(BbxError, match="has no materialize ability"):
        m.materialize_adapter("x", {"adapters": ["a"]})
    # without the rows ability the metered rows verb groups by adapter, item by item metered
    inner = WithAdapters()
    r = MeteredBackend(inner, cache_dir=tmp_path / "cache")
    got = r.label_logprobs_rows(["a", "b", "c"], [" negative", " positive"], ["up", None, "up"])
    assert got[0] == r.label_logprobs(["a"], [" negative", " positive"], "up")[0]
    assert r.usage.queries == inner.paid == 3 and r.usage.cached == 1
    m.close()
    r.close()
    assert (tmp_path / "ledger.jsonl").read_text() == ""  # the free abilities wrote no row


def test_has_and_check_needs() -> None:
    b = Minimal()
    assert has(b, "label_logprobs") and has(b, "embed") and not has(b, "vocabulary")
    assert set(ABILITIES) <= set(Capabilities.__dataclass_fields__)
    check_needs("x", [Need(("vocabulary", "embed"), "any one will do", "-")], b)
    with pytest.raises(BbxError, match="^x needs vocabulary or rows \\(why\\); backend "
                                       "'minimal' has none: do this$"):
        check_needs("x", [Need(("vocabulary", "rows"), "why", "do this")], b)
    no_scores = type("NoScores", (Minimal,), {
        "capabilities": property(lambda self: Capabilities(label_logprobs="none"))})()
    with pytest.raises(BbxError, match="^eval needs label_logprobs"):
        check_needs("eval", parse_recipe({"method": "eval"}).abilities_needed(), no_scores)


def test_cli_refusal_is_one_line_with_exit_code_2(tmp_path: Path) -> None:
    from conftest import bbx

    recipe = tmp_path / "r.yaml"
    recipe.write_text("method: search-prompt\ntask: sst-2\nembeddings: input\nclusters: 4\n"
                      f"backend: {{kind: fake}}\noutput_dir: {tmp_path / 'runs'}\n")
    out = bbx("run", str(recipe), "--no-progress")
    assert out.returncode == 2, out.stderr
    lines = [x for x in out.stderr.splitlines() if x.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: search-prompt needs vocabulary")
    assert "use embeddings: embed" in lines[0] and _nothing_left(tmp_path)


def test_served_new_backend_and_the_remote_backend_declare_what_the_server_offers() -> None:
    from serve_support import running_server

    from blackbox.backends.remote import RemoteBackend
    from blackbox.serve import create_app

    with running_server(create_app(WithAdapters())) as url:
        r = RemoteBackend(base_url=url, api_key_env="BBX_TEST_NO_SUCH_KEY")
        try:
            caps = r.capabilities
            # adapters listed by the served backend's own ability; no tokenizer behind it
            assert caps.adapters and caps.materialize and caps.rows
            assert not caps.vocabulary and not caps.token_embeddings and not caps.engine
            assert MeteredBackend(r).list_adapters() == ["down", "up"]
            assert r.info["model"] == "minimal"
            got = r.label_logprobs(["x"], [" negative", " positive"], "up")
            assert got == WithAdapters().label_logprobs(["x"], [" negative", " positive"], "up")
        finally:
            r.close()
