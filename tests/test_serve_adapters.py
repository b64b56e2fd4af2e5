"""Adapter mixtures in the engine: the sparsify rule, PEFT equivalence, per-row mixtures in one
batch, and the adapter repository. Runs on a tiny random Llama and a tiny PEFT zoo."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import pytest

from blackbox.errors import BbxError

torch = pytest.importorskip("torch")
pytest.importorskip("peft")

from serve_support import PROMPTS, build_tiny_model, build_zoo  # noqa: E402

WORDS = [" good", " bad", " positive"]


def flat(rows: list[list[float]]) -> list[float]:
    return [x for r in rows for x in r]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("adapters")
    model = build_tiny_model(root / "model")
    return model, build_zoo(model, root / "zoo")


@pytest.fixture(scope="module")
def backend(tiny):
    from blackbox.backends.local import LocalBackend

    model, zoo = tiny
    b = LocalBackend(model=str(model), dtype="float32", embed_model="mean", adapters=str(zoo),
                     batch_size=4)
    yield b
    b.close()


# ---- the sparsify rule ------------------------------------------------------------------

def test_keep_count_is_the_ceiling_without_float_noise() -> None:
    from blackbox.engine.lora import keep_count

    assert keep_count(0.1, 10) == 1  # 0.1 * 10 = 1.0000000000000002 in floats
    assert keep_count(0.3, 10) == 3 and keep_count(0.7, 10) == 7
    assert keep_count(0.31, 10) == 4 and keep_count(1e-9, 10) == 1
    assert keep_count(0.0, 10) == 0 and keep_count(1.0, 10) == 10
    with pytest.raises(BbxError):
        keep_count(1.5, 10)
    with pytest.raises(BbxError):
        keep_count(float("nan"), 10)


def test_sparsify_keeps_exact_counts_by_magnitude_with_stable_ties() -> None:
    from blackbox.engine.lora import keep_count, sparsify

    a = torch.tensor([[1.0, -3.0, 3.0, 2.0], [0.5, -0.5, 0.0, 2.0]])
    assert sparsify(a, 1.0).equal(a)
    assert sparsify(a, 0.0).equal(torch.zeros_like(a))
    # top 1 of 8: |-3| and |3| tie; the earlier entry (row-major) is kept
    assert sparsify(a, 1 / 8).tolist() == [[0, -3.0, 0, 0], [0, 0, 0, 0]]
    # top 3: -3, 3 and then 2 (index 3) before the tying 2 (index 7)
    assert sparsify(a, 3 / 8).tolist() == [[0, -3.0, 3.0, 2.0], [0, 0, 0, 0]]
    # ties among 0.5 / -0.5: 6 kept -> 1, -3, 3, 2, 2 and the first 0.5
    assert sparsify(a, 0.75).tolist() == [[1.0, -3.0, 3.0, 2.0], [0.5, 0, 0, 2.0]]
    g = torch.Generator().manual_seed(0)
    big = torch.randn(8, 77, generator=g)
    for alpha in (0.0, 0.013, 0.1, 0.25, 0.5, 0.9, 1.0):
        k = keep_count(alpha, big.numel())
        kept = sparsify(big, alpha)
        assert int((kept != 0).sum()) == k  # no exact zeros in randn: kept == non-zero
        if 0 < k < big.numel():  # every kept magnitude >= every dropped one
            assert kept.abs()[kept != 0].min() >= big.abs()[kept == 0].max()


def test_sparsify_with_cached_magnitude_ranks_equals_the_plain_rule() -> None:
    from blackbox.engine.lora import sparsify, sparsify_stacks, stack_factors

    g = torch.Generator().manual_seed(1)
    ties = torch.tensor([[1.0, -2.0, 2.0, 0.5], [3.0, 3.0, -3.0, 1.0]])
    factors = {"m1": (torch.randn(4, 6, generator=g), torch.randn(5, 4, generator=g)),
               "m2": (torch.randn(4, 6, generator=g), torch.randn(5, 4, generator=g)),
               "t": (ties, torch.ones(3, 2))}
    stacks = stack_factors(factors)
    cache: dict = {}
    for alpha in (0.0, 0.1, 0.25, 0.5, 0.62, 0.9, 1.0):
        out = sparsify_stacks(stacks, alpha, cache)
        for names, a, _b in out.values():
            for m, a_m in zip(names, a, strict=True):
                assert a_m.equal(sparsify(factors[m][0], alpha)), (m, alpha)
    assert cache  # the ranks were kept for the next alpha


# ---- mixtures equal PEFT / materialized weights ---------------------------------------

def _next_logprobs(model, engine, prompt: str) -> torch.Tensor:
    ids = engine._prompt_ids([prompt])[0]
    with torch.inference_mode():
        logits = model(torch.tensor([ids])).logits
    return torch.log_softmax(logits[0, -1].float(), dim=-1)


def _word_ids(engine) -> list[int]:
    ids = [engine.tokenizer(w, add_special_tokens=False).input_ids for w in WORDS]
    assert all(len(x) == 1 for x in ids)
    return [x[0] for x in ids]


def test_single_adapter_equals_peft_forward_and_merge(backend, tiny) -> None:
    from peft import PeftModel

    _, zoo = tiny
    engine = backend.engine
    wid = _word_ids(engine)
    for name in ("sst2", "trec", "news"):
        peft_model = PeftModel.from_pretrained(copy.deepcopy(engine.model), zoo / name).eval()
        merged = copy.deepcopy(peft_model).merge_and_unload().eval()
        ours = backend.label_logprobs(PROMPTS, WORDS, adapter=name)
        mixture = backend.label_logprobs(
            PROMPTS, WORDS, adapter={"adapters": [name], "alpha": [1.0], "beta": [1.0]})
        for prompt, row, mrow in zip(PROMPTS, ours, mixture, strict=True):
            ref = _next_logprobs(peft_model, engine, prompt)
            ref_merged = _next_logprobs(merged, engine, prompt)
            assert row == pytest.approx([float(ref[i]) for i in wid], abs=1e-4)
            assert row == pytest.approx([float(ref_merged[i]) for i in wid], abs=1e-4)
            assert mrow == pytest.approx(row, abs=1e-5)
    base = backend.label_logprobs(PROMPTS, WORDS)
    assert max(abs(a - b) for r1, r2 in zip(base, ours, strict=True)
               for a, b in zip(r1, r2, strict=True)) > 1e-2  # the adapters do something
    # the base weights were never rewritten
    again = backend.label_logprobs(PROMPTS, WORDS)
    assert flat(again) == pytest.approx(flat(base), abs=1e-6)


def _materialized(engine, repo, spec) -> torch.nn.Module:
    """Reference: W + B*A* written into a copy of the model, A* from a naive sparsify."""
    model = copy.deepcopy(engine.model)
    adapters = [repo.get(n) for n in spec["adapters"]]
    modules = {m for a in adapters for m in a.factors}
    with torch.no_grad():
        for m in modules:
            rank = max(a.factors[m][0].shape[0] for a in adapters if m in a.factors)
            a_sum = b_sum = None
            for ad, al, be in zip(adapters, spec["alpha"], spec["beta"], strict=True):
                if m not in ad.factors:
                    continue
                a, b = ad.factors[m]
                flat = a.flatten().tolist()
                k = math.ceil(al * len(flat) - 1e-9 * max(1.0, al * len(flat)))
                order = sorted(range(len(flat)), key=lambda i: (-abs(flat[i]), i))[:k]
                sparse = torch.zeros(len(flat))
                sparse[order] = torch.tensor([flat[i] for i in order])
                a_pad = torch.zeros(rank, a.shape[1])
                a_pad[:a.shape[0]] = sparse.reshape(a.shape)
                b_pad = torch.zeros(b.shape[0], rank)
                b_pad[:, :b.shape[1]] = b
                a_sum = be * a_pad if a_sum is None else a_sum + be * a_pad
                b_sum = be * b_pad if b_sum is None else b_sum + be * b_pad
            model.get_submodule(m).weight += b_sum @ a_sum
    return model.eval()


MIXTURES = [
    {"adapters": ["sst2", "trec", "news"], "alpha": [0.5, 1.0, 0.2], "beta": [0.7, -0.4, 1.3]},
    {"adapters": ["trec", "news"], "alpha": [0.1, 0.9], "beta": [1.5, 0.5]},
    {"adapters": ["sst2", "sst2"], "alpha": [0.0, 0.3], "beta": [1.0, -1.0]},
]


def test_mixture_equals_materialized_merged_weights(backend) -> None:
    from blackbox.backends.base import normalize_adapter

    engine, repo = backend.engine, backend.repository
    wid = _word_ids(engine)
    for mixture in MIXTURES:
        spec = normalize_adapter(mixture)
        ref_model = _materialized(engine, repo, spec)
        got = backend.label_logprobs(PROMPTS, WORDS, adapter=mixture)
        for prompt, row in zip(PROMPTS, got, strict=True):
            ref = _next_logprobs(ref_model, engine, prompt)
            assert row == pytest.approx([float(ref[i]) for i in wid], abs=1e-4)


def test_different_mixtures_in_one_batch_equal_separate_runs(backend) -> None:
    specs = [None, "sst2", MIXTURES[0], "news", MIXTURES[1], None, MIXTURES[2]]
    prompts = PROMPTS[:len(specs)]
    mixed = backend.call_rows("label_logprobs", (prompts, WORDS), specs)
    for p, s, row in zip(prompts, specs, mixed, strict=True):
        assert row == pytest.approx(backend.label_logprobs([p], WORDS, adapter=s)[0], abs=1e-4)
    # the same through multi-token words, scores, hidden states and greedy generation
    words = [" good", " wonderfulness"]
    mixed = backend.call_rows("label_logprobs", (prompts, words), specs)
    for p, s, row in zip(prompts, specs, mixed, strict=True):
        assert row == pytest.approx(backend.label_logprobs([p], words, adapter=s)[0], abs=1e-4)
    conts = [" good bad"] * len(prompts)
    mixed = backend.call_rows("score", (prompts, conts), specs)
    for p, s, row in zip(prompts, specs, mixed, strict=True):
        assert row == pytest.approx(backend.score([p], [" good bad"], adapter=s)[0], abs=1e-4)
    mixed = backend.call_rows("hidden", (prompts,), specs)
    for p, s, row in zip(prompts, specs, mixed, strict=True):
        assert row == pytest.approx(backend.hidden([p], adapter=s)[0], abs=1e-4)
    gen = backend.call_rows("generate", (prompts,), specs, max_tokens=5)
    assert gen == [backend.generate([p], {"max_tokens": 5}, adapter=s)[0]
                   for p, s in zip(prompts, specs, strict=True)]


@pytest.mark.parametrize("specs", [[None, "sst2", None, "sst2"],
                                   [None, "sst2", MIXTURES[0], "news", MIXTURES[1]]])
def test_masked_and_gathered_row_paths_agree(backend, monkeypatch: pytest.MonkeyPatch,
                                             specs: list) -> None:
    """Few mixtures per batch take the masked path, many the gathered one: same numbers."""
    from blackbox.engine import lora

    prompts = PROMPTS[:len(specs)]
    monkeypatch.setattr(lora, "MASKED_MAX", 99)
    masked = backend.call_rows("label_logprobs", (prompts, WORDS), specs)
    monkeypatch.setattr(lora, "MASKED_MAX", 0)
    gathered = backend.call_rows("label_logprobs", (prompts, WORDS), specs)
    for m, g in zip(masked, gathered, strict=True):
        assert m == pytest.approx(g, abs=1e-5)
    assert masked[0] == pytest.approx(backend.label_logprobs([prompts[0]], WORDS)[0], abs=1e-5)


def test_sparsified_factors_are_cached_per_adapter_and_alpha(backend) -> None:
    repo = backend.repository
    mixture = {"adapters": ["sst2", "trec"], "alpha": [0.25, 0.5], "beta": [1.0, 1.0]}
    # the first request for a pair masks inside the mixing sum: no sparse copy is kept
    fused = repo.factors(mixture)
    assert ("sst2", 0.25) not in repo._sparse
    repo._mixtures.clear()  # the composed mixture only: the pairs stay seen
    # the second one keeps the copy, and the mixture it gives is the same
    cached = repo.factors(mixture)
    assert ("sst2", 0.25) in repo._sparse and ("trec", 0.5) in repo._sparse
    for m, (a, b) in fused.items():
        assert cached[m][0].equal(a) and cached[m][1].equal(b), m
    first = repo._sparse[("sst2", 0.25)][0]
    repo.factors({**mixture, "beta": [0.5, 0.5]})  # new beta, same alphas: no re-sparsify
    assert repo._sparse[("sst2", 0.25)][0] is first
    assert 0 < repo._sparse.bytes <= repo._sparse.max_bytes
    repo.clear_caches()  # and then the next request is a first one again
    repo.factors(mixture)
    assert not repo._sparse


# ---- the repository ---------------------------------------------------------------------

def test_repository_lists_loads_unloads_and_refuses_bad_adapters(backend, tiny,
                                                                 tmp_path: Path) -> None:
    import json
    import shutil

    repo = backend.repository
    assert repo.names() == ["news", "sst2", "trec"]
    with pytest.raises(BbxError, match="unknown adapter 'sst3'.*sst2"):
        backend.label_logprobs(["a"], WORDS, adapter="sst3")
    with pytest.raises(BbxError, match="outside"):
        backend.label_logprobs(["a"], WORDS, adapter={"adapters": ["sst2"], "alpha": [2.0]})
    info = repo.load("copy", tiny[1] / "sst2")
    assert info["r"] == 4 and info["loaded"]
    assert flat(backend.label_logprobs(PROMPTS[:2], WORDS, adapter="copy")) == pytest.approx(
        flat(backend.label_logprobs(PROMPTS[:2], WORDS, adapter="sst2")), abs=1e-6)
    repo.unload("copy")
    with pytest.raises(BbxError, match="unknown adapter"):
        backend.label_logprobs(["a"], WORDS, adapter="copy")
    # an adapter trained on a wider model does not fit this one
    from serve_support import ZOO

    wide_model = build_tiny_model(tmp_path / "wide-model", hidden=48)
    wide = build_zoo(wide_model, tmp_path / "wide")
    with pytest.raises(BbxError, match="does not fit"):
        repo.load("wide", wide / ZOO[0][0])
    # unsupported PEFT features are refused with a reason
    dora = tmp_path / "dora"
    shutil.copytree(tiny[1] / "sst2", dora)
    cfg = json.loads((dora / "adapter_config.json").read_text())
    (dora / "adapter_config.json").write_text(json.dumps({**cfg, "use_dora": True}))
    with pytest.raises(BbxError, match="DoRA"):
        repo.load("dora", dora)
    with pytest.raises(BbxError, match="bad adapter name"):
        repo.load("../evil", dora)
    assert repo.names() == ["news", "sst2", "trec"]


def test_backend_without_a_repository_refuses_adapters(tiny) -> None:
    from blackbox.backends.local import LocalBackend

    with pytest.raises(BbxError, match="does not exist"):
        LocalBackend(model=str(tiny[0]), adapters=str(tiny[1] / "nope"))
    b = LocalBackend(model=str(tiny[0]), dtype="float32")
    assert not b.capabilities.adapters
    with pytest.raises(BbxError, match="no adapter repository"):
        b.score(["a"], [" b"], adapter="sst2")
