"""bbx merge on a tiny random Llama and a tiny PEFT zoo: a population in one forward pass,
an end-to-end merge, the materialized adapter, TIES/DARE, and remote == local."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("peft")

from serve_support import build_tiny_model, build_zoo, running_server  # noqa: E402

SMALL = {"user_examples": 6, "test_limit": 8,
         "stage1": {"evaluations": 8, "popsize": 4}, "stage2": {"evaluations": 8, "popsize": 4}}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("merge")
    model = build_tiny_model(root / "model", context=1024)
    return model, build_zoo(model, root / "zoo")


def _local_cfg(tiny) -> dict:
    return {"kind": "local", "model": str(tiny[0]), "adapters": str(tiny[1]),
            "dtype": "float32", "batch_size": 32}


def _merge(tmp_path: Path, backend_cfg: dict, **fields):
    from blackbox.api import merge

    return merge(task="sst-2", seed=3, backend=backend_cfg, progress=False,
                 output_dir=str(tmp_path / "runs"), **{**SMALL, **fields})


def test_a_population_is_one_forward_pass(tiny) -> None:
    from blackbox.backends.local import LocalBackend
    from blackbox.backends.metered import MeteredBackend
    from blackbox.methods.merge.objective import MixtureLoss, mixture

    local = LocalBackend(model=str(tiny[0]), adapters=str(tiny[1]), dtype="float32",
                         batch_size=64)
    names = ["news", "sst2", "trec"]
    specs = [mixture(names, [1.0, 0.5 + 0.1 * k, 0.3], [0.5, -0.2 * k, 1.0]) for k in range(5)]
    prompts = [f"review {i}: the film was good" for i in range(8)]
    loss = MixtureLoss(MeteredBackend(local), prompts, torch.zeros(8, dtype=torch.long).numpy(),
                       [" negative", " positive"])
    calls = []
    handle = local.engine.model.register_forward_pre_hook(lambda *a: calls.append(1))
    try:
        together = loss.scores(specs)
    finally:
        handle.remove()
    assert len(calls) == 1  # 5 mixtures x 8 prompts = 40 rows, one batched forward pass
    for k, spec in enumerate(specs):  # ... and each row got its own mixture
        alone = local.label_logprobs(prompts, [" negative", " positive"], adapter=spec)
        assert together[k].ravel().tolist() == pytest.approx(
            [x for r in alone for x in r], abs=1e-4)
    local.close()


def test_end_to_end_merge_with_materialized_adapter(tiny, tmp_path: Path) -> None:
    from blackbox.backends.local import LocalBackend

    res = _merge(tmp_path, _local_cfg(tiny), materialize=True)
    s = res.summary
    assert s["adapters"] == ["news", "sst2", "trec"]
    assert s["stages"]["stage1"]["evaluations"] == 8 and s["stages"]["stage2"]["evaluations"] == 8
    assert s["test"]["n"] == 8 and s["user"]["n"] == 6
    mix = json.loads((res.run_dir / "mixture.json").read_text())["adapter"]
    # the materialized PEFT adapter answers exactly what the mixture answered
    out = Path(s["materialized"]["path"])
    assert (out / "adapter_config.json").is_file() and (out / "adapter_model.safetensors").is_file()
    local = LocalBackend(model=str(tiny[0]), adapters=str(tiny[1]), dtype="float32")
    local.repository.load("found", out)
    prompts = ["the movie was great", "a bad film, boring"]
    words = [" negative", " positive"]
    got = local.label_logprobs(prompts, words, adapter="found")
    want = local.label_logprobs(prompts, words, adapter=mix)
    assert [x for r in got for x in r] == pytest.approx([x for r in want for x in r], abs=1e-5)
    # and peft itself loads it
    from peft import PeftModel

    PeftModel.from_pretrained(local.engine.model, str(out))
    local.close()


@pytest.mark.parametrize("kind", ["ties", "dare"])
def test_white_box_references_run_server_side(tiny, tmp_path: Path, kind: str) -> None:
    s = _merge(tmp_path, _local_cfg(tiny), variant=kind).summary
    assert s["merged_adapter"].startswith(f"{kind}-") and s["test"]["n"] == 8


def test_remote_equals_local_same_seed_same_mixture(tiny, tmp_path: Path) -> None:
    from blackbox.backends.local import LocalBackend
    from blackbox.serve import create_app

    local = _merge(tmp_path, _local_cfg(tiny)).summary
    served = LocalBackend(model=str(tiny[0]), adapters=str(tiny[1]), dtype="float32",
                          batch_size=32)
    with running_server(create_app(served, max_wait_ms=20)) as url:
        remote = _merge(tmp_path, {"kind": "remote", "base_url": url}, materialize=True).summary
        from blackbox.backends.remote import RemoteBackend
        from blackbox.errors import BbxError

        client = RemoteBackend(base_url=url)
        with pytest.raises(BbxError, match="409.*already exists"):
            client.materialize_adapter(remote["materialized"]["server_adapter"],
                                       remote["adapter"])
        with pytest.raises(BbxError, match="400.*mixture"):
            client.materialize_adapter("x", "sst2")
    # materialized server-side: a new adapter in the server's repository, same answers
    name = remote["materialized"]["server_adapter"]
    assert name in served.repository.names()
    prompts, words = ["the movie was great", "bad"], [" negative", " positive"]
    got = served.label_logprobs(prompts, words, adapter=name)
    want = served.label_logprobs(prompts, words, adapter=remote["adapter"])
    assert [x for r in got for x in r] == pytest.approx([x for r in want for x in r], abs=1e-5)
    assert remote["adapters"] == local["adapters"]
    for key in ("alpha", "beta"):
        assert remote["adapter"][key] == pytest.approx(local["adapter"][key], abs=1e-6)
    assert remote["test"]["accuracy"] == local["test"]["accuracy"]
    assert remote["test"]["loss"] == pytest.approx(local["test"]["loss"], abs=1e-4)
    assert remote["usage"]["queries"] == local["usage"]["queries"]
