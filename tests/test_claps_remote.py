"""ClaPS through the remote backend against ``bbx serve`` gives the same search as the local
backend: the same candidates (the server's tokenizer, ``GET /v1/vocabulary``), the same
clusters and pruned vocabulary, the same best prompt for the same seed.

The server is the real FastAPI app over the tiny random Llama of ``serve_support``, served
by uvicorn on 127.0.0.1 in this process and stopped when the module ends. A remote backend
cannot read the model's embedding table (the weights stay on the server), so both sides
cluster on the embeddings route (``embeddings: embed``), which the server answers with the
very embedder the local backend uses.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("openai")
pytest.importorskip("fastapi")

from serve_support import build_tiny_model, running_server  # noqa: E402, I001

from blackbox.api import run_recipe  # noqa: E402
from blackbox.backends.fake import FakeBackend  # noqa: E402
from blackbox.methods.claps.vocab import backend_vocabulary, candidate_vocabulary  # noqa: E402

# a small search with every phase: 10 clusters, the top 60% kept (6 tokens: 216 3-token
# prompts, more than the genetic search can try, so its seeded path matters)
BASE: dict[str, Any] = {
    "method": "search-prompt", "task": "sst-2", "seed": 13, "clusters": 10, "percentile": 40,
    "embeddings": "embed", "length": 3, "queries": 300, "train_batch": 4, "select_top": 2,
    "test_limit": 16,
}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # SST-2 sentences take a few hundred pieces of the 320-token tokenizer: a long context
    return build_tiny_model(tmp_path_factory.mktemp("claps-remote") / "model", context=1024)


def _local(model: Path) -> Any:
    from blackbox.backends.local import LocalBackend

    # embed_model="mean": the LM's own hidden states, so no sentence-embedding model loads
    return LocalBackend(model=str(model), dtype="float32", embed_model="mean", batch_size=16)


def _remote(url: str) -> Any:
    from blackbox.backends.remote import RemoteBackend

    return RemoteBackend(base_url=url, api_key_env="BBX_TEST_NO_SUCH_KEY")


@pytest.fixture(scope="module")
def url(tiny: Path) -> Iterator[str]:
    from blackbox.serve import create_app

    with running_server(create_app(_local(tiny), max_wait_ms=5)) as base:
        yield base  # running_server stops uvicorn (and joins its thread) on exit


def _run(tmp_path: Path, backend: Any, label: str, **kw: Any) -> dict[str, Any]:
    # each side gets its own response and cluster cache: nothing computed on one is reused
    # by the other, so equal results mean equal answers
    recipe = {**BASE, **kw, "output_dir": str(tmp_path / label),
              "cache_dir": str(tmp_path / f"cache-{label}")}
    res = run_recipe(recipe, backend=backend, progress=False)
    pruning = json.loads((Path(res.run_dir) / "pruning.json").read_text())
    return {**res.summary, "pruning": pruning}


def test_the_server_lists_the_local_tokenizer(tiny: Path, url: str) -> None:
    local, remote = _local(tiny), _remote(url)
    try:
        assert "vocabulary" in remote.info["extensions"]
        assert remote.capabilities.vocabulary
        assert backend_vocabulary(remote) == (local.vocabulary(), "server")
        v, lv = candidate_vocabulary(None, remote), candidate_vocabulary(None, local)
        assert (v.source, lv.source) == ("server", "tokenizer")
        assert v.texts == lv.texts and v.ids == lv.ids and len(v) >= 10
        # a backend that is not a bbx server keeps the built-in word list
        assert backend_vocabulary(FakeBackend()) is None
        assert candidate_vocabulary(None, FakeBackend()).source == "builtin"
    finally:
        local.close()
        remote.close()


@pytest.mark.parametrize("search, extra", [("greedy", {}), ("genetic", {"population": 8})])
def test_remote_search_gives_the_local_best_prompt(tmp_path: Path, tiny: Path, url: str,
                                                   search: str, extra: dict[str, Any]) -> None:
    local = _run(tmp_path, _local(tiny), "local", search=search, **extra)
    remote = _run(tmp_path, _remote(url), "remote", search=search, **extra)

    assert local["vocab"]["source"] == "tokenizer" and remote["vocab"]["source"] == "server"
    for key in ("candidates", "clustered", "pruned", "embeddings"):
        assert remote["vocab"][key] == local["vocab"][key], key
    assert local["vocab"]["embeddings"] == "embed" and local["vocab"]["clustered"] == 10
    # the same clustered tokens, scored alike, and exactly the same pruned vocabulary
    assert remote["pruning"]["kept"] == local["pruning"]["kept"]
    lt = {s["token"]: s["score"] for s in local["pruning"]["scores"]}
    rt = {s["token"]: s["score"] for s in remote["pruning"]["scores"]}
    assert rt.keys() == lt.keys()
    assert [rt[k] for k in lt] == pytest.approx(list(lt.values()), abs=1e-4)
    # the same search and the same winner, with the same numbers
    assert remote["search"]["trials"] == local["search"]["trials"]
    assert remote["best_prompt"] == local["best_prompt"] and local["best_prompt"]
    assert [c["prompt"] for c in remote["candidates"]] == [c["prompt"] for c in
                                                           local["candidates"]]
    assert remote["train"]["loss"] == pytest.approx(local["train"]["loss"], abs=1e-4)
    for split in ("train", "dev"):
        assert remote[split]["accuracy"] == pytest.approx(local[split]["accuracy"])
    assert remote["test"]["accuracy"] == pytest.approx(local["test"]["accuracy"])
    assert remote["test"]["reward"] == pytest.approx(local["test"]["reward"], abs=1e-4)
    # the same logical work, paid the same way (each side had an empty cache)
    assert remote["queries"] == local["queries"]
    assert remote["usage"]["queries"] == local["usage"]["queries"] > 0
