"""The local engine: batching exactness, label-word scoring, loading, and the local backend.

The exactness tests (``-m exactness``) run on ``$BBX_TEST_DEVICE`` (default cpu) in
``$BBX_TEST_DTYPE`` (default float32): ``scripts/gpu_check.sh`` runs them on cuda in
bfloat16, where batched and one-at-a-time numbers agree to a looser bound (:data:`TOL`).

Fast tests run on a tiny random Llama with a tiny BPE tokenizer built in a temp folder (no
real model needed). ``slow`` tests use the bundled SmolLM2-135M-Instruct, loaded once.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from blackbox.errors import BbxError

torch = pytest.importorskip("torch")

DEVICE = os.environ.get("BBX_TEST_DEVICE", "cpu")
DTYPE = os.environ.get("BBX_TEST_DTYPE", "float32")
# bf16 keeps 8 bits of mantissa: padded batches (another reduction order, other kernels)
# move the tiny model's peaked log-probs by up to a few hundredths of a nat
TOL = 1e-4 if DTYPE in ("float32", "fp32") else 0.1
exactness = pytest.mark.exactness

CORPUS = [
    "the movie was great and the acting was good",
    "the plot was bad and the film was boring",
    "a positive review says good things",
    "a negative review says bad things",
    "positive positive negative negative great good bad",
    "I loved it, I hated it, it was fine, it was okay",
]
PROMPTS = [
    "the movie was",
    "a review: the film was boring and bad. Sentiment:",
    "I loved it",
    "x",
    "the acting was good and the plot was great, a positive review. Overall it was",
    "okay",
    "bad bad bad",
    "it was fine, I hated it, it was okay. The movie was",
    "",
]


def _build_tiny_model(folder: Path) -> None:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=320, special_tokens=["<pad>", "<s>", "</s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(CORPUS * 10, trainer)
    # a BOS on prompts, so the tests see special tokens on prompts and none on label words
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", special_tokens=[("<s>", tok.token_to_id("<s>"))])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>",
                                   pad_token="<pad>")
    fast.save_pretrained(folder)
    config = LlamaConfig(
        vocab_size=len(fast), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
        bos_token_id=1, eos_token_id=2, pad_token_id=0, tie_word_embeddings=False,
        initializer_range=0.3,  # peaked next-token distributions, so differences show
    )
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(folder)


@pytest.fixture(scope="session")
def tiny_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("tiny-llama")
    _build_tiny_model(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_engine(tiny_folder: Path):
    from blackbox.engine.runtime import Engine

    if DEVICE.startswith("cuda") and not torch.cuda.is_available():
        pytest.skip(f"BBX_TEST_DEVICE={DEVICE} but torch has no CUDA")
    return Engine.from_spec(str(tiny_folder), device=DEVICE, dtype=DTYPE, batch_size=4)


def _naive_next_logprobs(engine, prompt: str) -> torch.Tensor:
    """The loop a user would write: one prompt, full logits, log-softmax of the last row."""
    ids = engine._prompt_ids([prompt])[0]
    with torch.inference_mode():
        logits = engine.model(torch.tensor([ids], device=engine.device)).logits
    return torch.log_softmax(logits[0, -1].float(), dim=-1)


# ---- loading ---------------------------------------------------------------------------

def test_missing_model_path_is_a_bbx_error(tmp_path: Path) -> None:
    from blackbox.backends.local import LocalBackend
    from blackbox.engine.loader import load_model

    missing = tmp_path / "no-such-model"
    with pytest.raises(BbxError, match="no-such-model"):
        load_model(str(missing))
    with pytest.raises(BbxError, match="not found"):
        LocalBackend(model=str(missing))


def test_folder_without_config_is_a_bbx_error(tmp_path: Path) -> None:
    from blackbox.engine.loader import resolve_spec

    with pytest.raises(BbxError, match="config.json"):
        resolve_spec(str(tmp_path))
    (tmp_path / "weights.bin").write_bytes(b"x")
    with pytest.raises(BbxError, match="not a .gguf"):
        resolve_spec(str(tmp_path / "weights.bin"))


def test_failed_gguf_conversion_leaves_nothing(tmp_path: Path, monkeypatch) -> None:
    from blackbox.engine.loader import convert_gguf, converted_folder, resolve_spec

    monkeypatch.setenv("BBX_CACHE_DIR", str(tmp_path / "cache"))
    bad = tmp_path / "broken.gguf"
    bad.write_bytes(b"not a gguf file" * 100)
    source = resolve_spec(str(bad))
    with pytest.raises(Exception):  # noqa: B017 - whatever transformers raises
        convert_gguf(source)
    target = converted_folder(source)
    assert not target.exists()
    assert list(target.parent.iterdir()) == []  # no half-written temp folder either


def test_placement_overrides_and_errors() -> None:
    from blackbox.engine.loader import choose_placement

    p = choose_placement("cpu", "bf16")
    assert (p.device, p.dtype) == ("cpu", "bfloat16") and "asked" in p.reason
    assert choose_placement("cpu", "auto").dtype in {"float32", "bfloat16"}
    with pytest.raises(BbxError, match="unknown dtype"):
        choose_placement("cpu", "int3")
    if not torch.cuda.is_available():
        with pytest.raises(BbxError, match="CUDA"):
            choose_placement("cuda", "auto")


def test_auto_dtype_follows_the_cpus_native_bf16_units(monkeypatch: pytest.MonkeyPatch) -> None:
    """bf16 where the CPU has AMX or AVX-512 BF16 (there it is 2-7x the fp32 matmul rate),
    fp32 where bf16 would be emulated (~3x slower than fp32, e.g. Cascade Lake)."""
    from blackbox import machine
    from blackbox.engine import loader

    def info(*flags: str) -> str:
        return f"processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f {' '.join(flags)}\n"

    assert machine.cpu_bf16_units(info("amx_tile", "amx_bf16", "avx512_bf16")) == "amx_bf16"
    assert machine.cpu_bf16_units(info("avx512_bf16", "avx512_vnni")) == "avx512_bf16"
    assert machine.cpu_bf16_units(info("avx512_vnni")) is None  # Cascade Lake
    assert machine.cpu_bf16_units("no flags line here") is None
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(loader, "cpu_bf16_units", lambda: "avx512_bf16")
    p = loader.choose_placement()
    assert (p.device, p.dtype) == ("cpu", "bfloat16") and "avx512_bf16" in p.reason
    monkeypatch.setattr(loader, "cpu_bf16_units", lambda: None)
    p = loader.choose_placement()
    assert (p.device, p.dtype) == ("cpu", "float32") and "emulated" in p.reason
    assert loader.choose_placement("cpu", "float32").dtype == "float32"  # the user decides


def test_importing_blackbox_stays_light() -> None:
    code = ("import sys, blackbox, blackbox.engine, blackbox.backends.local; "
            "print('torch' in sys.modules, 'transformers' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


# ---- engine exactness --------------------------------------------------------------------

@exactness
def test_batched_label_logprobs_equal_one_at_a_time(tiny_engine) -> None:
    words = [" good", " bad", " positive"]
    batched = tiny_engine.label_logprobs(PROMPTS, words)
    single = [tiny_engine.label_logprobs([p], words)[0] for p in PROMPTS]
    assert len(batched) == len(PROMPTS)
    for b, s in zip(batched, single, strict=True):
        assert b == pytest.approx(s, abs=TOL)


@exactness
def test_label_logprobs_match_the_naive_full_forward(tiny_engine) -> None:
    tok = tiny_engine.tokenizer
    words = [" good", " bad"]
    ids = [tok(w, add_special_tokens=False).input_ids for w in words]
    assert all(len(x) == 1 for x in ids)  # the fast path
    got = tiny_engine.label_logprobs(PROMPTS[:4], words)
    for prompt, row in zip(PROMPTS[:4], got, strict=True):
        ref = _naive_next_logprobs(tiny_engine, prompt)
        assert row == pytest.approx([float(ref[x[0]]) for x in ids], abs=TOL)
        assert math.isclose(float(ref.exp().sum()), 1.0, abs_tol=1e-4)  # full vocabulary


@exactness
def test_multi_token_label_word_is_the_sum_of_its_token_logprobs(tiny_engine) -> None:
    tok = tiny_engine.tokenizer
    words = [" good", " wonderfulness", " bad", " hated it"]
    lens = [len(tok(w, add_special_tokens=False).input_ids) for w in words]
    assert lens[0] == 1 and lens[1] > 1 and lens[3] > 1
    got = tiny_engine.label_logprobs(PROMPTS, words)
    fast = tiny_engine.label_logprobs(PROMPTS, [" good", " bad"])
    for i, prompt in enumerate(PROMPTS):
        for j, w in enumerate(words):
            tokens = tiny_engine.score([prompt], [w])[0]
            assert len(tokens) == lens[j]
            assert got[i][j] == pytest.approx(sum(tokens), abs=TOL)
        # single-token words read inside the multi-token path equal the fast path
        assert [got[i][0], got[i][2]] == pytest.approx(fast[i], abs=TOL)


@exactness
def test_small_batch_budgets_give_the_same_numbers(tiny_folder: Path, tiny_engine) -> None:
    from blackbox.engine.runtime import Engine

    tight = Engine(tiny_engine.model, tiny_engine.tokenizer, batch_size=3,
                   max_batch_tokens=40, max_logits=2 * 5 * tiny_engine.model.config.vocab_size)
    conts = [" the movie was good", " bad", " I hated it, it was okay and fine"] * 3
    assert tight.score(PROMPTS, conts) == [
        pytest.approx(r, abs=TOL) for r in tiny_engine.score(PROMPTS, conts)]
    words = [" good", " hated it"]
    assert tight.label_logprobs(PROMPTS, words) == [
        pytest.approx(r, abs=TOL) for r in tiny_engine.label_logprobs(PROMPTS, words)]


@exactness
def test_results_keep_the_callers_order(tiny_engine) -> None:
    words = [" good", " bad"]
    forward = tiny_engine.label_logprobs(PROMPTS, words)
    backward = tiny_engine.label_logprobs(PROMPTS[::-1], words)
    for a, b in zip(forward, backward[::-1], strict=True):
        assert a == pytest.approx(b, abs=TOL)
    scores = tiny_engine.score(PROMPTS, [" good"] * len(PROMPTS))
    assert [s[0] for s in scores] == pytest.approx([r[0] for r in forward], abs=TOL)


@exactness
def test_hidden_states_are_batch_independent(tiny_engine) -> None:
    batched = tiny_engine.hidden(PROMPTS)
    assert all(len(v) == tiny_engine.hidden_size == 32 for v in batched)
    for prompt, vec in zip(PROMPTS, batched, strict=True):
        assert vec == pytest.approx(tiny_engine.hidden([prompt], position="mask")[0], abs=TOL)
    with pytest.raises(BbxError, match="position"):
        tiny_engine.hidden(PROMPTS, position="first")


@exactness
def test_prompt_longer_than_the_context_is_a_bbx_error(tiny_engine) -> None:
    long = "good " * 100
    with pytest.raises(BbxError, match=r"context of 64 tokens"):
        tiny_engine.label_logprobs(["ok", long], [" good"])
    with pytest.raises(BbxError, match="empty"):
        tiny_engine.label_logprobs(["ok"], [""])


@exactness
def test_generate_greedy_is_batch_independent_and_sampling_is_seeded(tiny_engine) -> None:
    batched = tiny_engine.generate(PROMPTS[:5], max_tokens=6)
    single = [tiny_engine.generate([p], max_tokens=6)[0] for p in PROMPTS[:5]]
    assert batched == single
    a = tiny_engine.generate(PROMPTS[:3], max_tokens=6, temperature=1.0, seed=3)
    b = tiny_engine.generate(PROMPTS[2::-1], max_tokens=6, temperature=1.0, seed=3)
    assert a == b[::-1]
    assert tiny_engine.generate(["the"], max_tokens=0) == [""]


@exactness
def test_rows_joining_and_leaving_a_running_decode_batch_get_their_tokens_alone(
        tiny_engine) -> None:
    from blackbox.engine.decode import DecodeBatch, new_row

    prompts = PROMPTS[:5]
    ids = tiny_engine._prompt_ids(prompts)

    def rows(max_tokens: list[int]) -> list:
        return [new_row(x, p, m, tiny_engine.max_length, stream=True)
                for x, p, m in zip(ids, prompts, max_tokens, strict=True)]

    alone = []
    for r in rows([9, 4, 12, 7, 10]):
        b = DecodeBatch(tiny_engine)
        b.admit([r])
        while b.rows:
            b.step()
        alone.append(r.new)
    # rows of other lengths join at step boundaries (wider and narrower than the batch),
    # others leave mid-way (their max_tokens): each row's tokens stay its own
    b = DecodeBatch(tiny_engine)
    rs = rows([9, 4, 12, 7, 10])
    pieces: dict[int, str] = {}
    for joining in [rs[:1], rs[1:3], [], rs[3:]] + [[]] * 12:
        b.admit(joining)
        b.step()
        for r in rs:
            pieces[id(r)] = pieces.get(id(r), "") + r.take_text()
    assert [r.new for r in rs] == alone
    assert b.stats.max_rows >= 3 and b.stats.prefills == 3
    # the streamed pieces join to each row's text
    assert [pieces[id(r)] for r in rs] == [r.text for r in rs]
    assert all(r.text == tiny_engine._decode(r.new) for r in rs)


def test_the_fair_lock_serves_waiters_in_the_order_they_came() -> None:
    import threading

    from blackbox.engine.locks import FairRLock

    lock, order = FairRLock(), []
    lock.acquire()
    lock.acquire()  # reentrant

    def worker(name: str) -> None:
        with lock:
            order.append(name)

    threads = []
    for i, name in enumerate(["a", "b"]):
        threads.append(threading.Thread(target=worker, args=(name,)))
        threads[-1].start()
        deadline = time.monotonic() + 10
        while lock._next < i + 2 and time.monotonic() < deadline:  # it waits for the lock
            time.sleep(0.001)
    lock.release()
    lock.release()
    with lock:  # asking again at once: behind the two that waited (a plain RLock: first)
        order.append("again")
    for t in threads:
        t.join(timeout=10)
    assert order == ["a", "b", "again"]


def test_count_tokens_counts_what_the_model_sees(tiny_engine) -> None:
    counts = tiny_engine.count_tokens(["the movie was", ""])
    assert counts[1] == 1  # the BOS only
    assert counts[0] == 1 + len(tiny_engine.tokenizer("the movie was",
                                                      add_special_tokens=False).input_ids)


def test_local_backend_on_a_folder(tiny_folder: Path) -> None:
    from blackbox.backends.base import Backend
    from blackbox.backends.local import LocalBackend

    b = LocalBackend(model=str(tiny_folder), dtype="float32", embed_model="mean")
    assert isinstance(b, Backend)
    fp = b.fingerprint
    assert fp.startswith("local:") and b._engine is None  # fingerprint does not load
    assert b.capabilities.label_logprobs == "exact" and not b.capabilities.adapters
    lp = b.label_logprobs(PROMPTS[:3], [" good", " bad"])
    assert len(lp) == 3 and all(len(r) == 2 and max(r) < 0 for r in lp)
    assert len(b.score(["a"], [" good bad"])[0]) >= 2
    vecs = b.embed(["the movie was good", "bad"])
    assert all(abs(sum(x * x for x in v) - 1) < 1e-4 for v in vecs)
    assert len(b.generate(["the"], {"max_tokens": 3})) == 1
    with pytest.raises(BbxError, match="no adapter repository"):
        b.label_logprobs(["a"], [" good"], adapter="sst2-lora")
    with pytest.raises(BbxError, match="unknown generation parameter"):
        b.generate(["a"], {"max_new_tokens": 3})
    assert LocalBackend(model=str(tiny_folder), dtype="bf16").fingerprint != fp
    b.close()


# ---- the real bundled model (slow) --------------------------------------------------------

SST2_TEMPLATE = "Review: {text}\nSentiment:"
REVIEWS = [
    "A wonderful, moving film with superb acting.",
    "Dull, lifeless and far too long; I wanted my money back.",
    "an engrossing portrait of a family coming apart",
    "the jokes fall flat and the plot makes no sense",
]


@pytest.fixture(scope="session")
def real_backend():
    from blackbox.backends.local import LocalBackend

    b = LocalBackend()  # default model, auto device and dtype
    assert b.engine is not None  # load (and convert on the first run ever) once per session
    yield b
    b.close()


@pytest.mark.slow
def test_real_model_orders_sentiment_labels(real_backend) -> None:
    prompts = [SST2_TEMPLATE.format(text=t) for t in REVIEWS[:2]]
    (pos_neg, pos_pos), (neg_neg, neg_pos) = real_backend.label_logprobs(
        prompts, [" negative", " positive"])
    assert pos_pos > pos_neg
    assert neg_neg > neg_pos


@pytest.mark.slow
@exactness
# bf16 rounds the residual stream through 30 layers: up to 0.18 nats off the fp32 numbers
# over 40 SST-2 prompts (the LM head in fp32 does not help), hence the looser bound. The
# bf16 engine runs on $BBX_TEST_DEVICE (cuda in scripts/gpu_check.sh), the reference on cpu.
@pytest.mark.parametrize("dtype,tol", [("float32", 2e-3), ("bfloat16", 0.3)])
def test_real_engine_agrees_with_the_naive_fp32_loop(dtype: str, tol: float) -> None:
    from blackbox.engine.runtime import Engine

    # an fp32 model of its own, whatever "auto" picks on this machine (bf16 on CPUs with
    # native bf16): the naive reference loop is fp32 by definition
    ref_engine = Engine.from_spec("default", device="cpu", dtype="float32")
    model = ref_engine.model
    prompts = [SST2_TEMPLATE.format(text=t) for t in REVIEWS]
    words = [" negative", " positive"]
    word_ids = [ref_engine.tokenizer(w, add_special_tokens=False).input_ids[0] for w in words]
    naive = [[float(_naive_next_logprobs(ref_engine, p)[i]) for i in word_ids] for p in prompts]
    if dtype == "float32":
        got = ref_engine.label_logprobs(prompts, words)
    else:
        import copy

        if DEVICE.startswith("cuda") and not torch.cuda.is_available():
            pytest.skip(f"BBX_TEST_DEVICE={DEVICE} but torch has no CUDA")
        low = copy.deepcopy(model).to(DEVICE, torch.bfloat16)
        got = Engine(low, ref_engine.tokenizer, DEVICE, torch.bfloat16).label_logprobs(
            prompts, words)
    for g, n in zip(got, naive, strict=True):
        assert g == pytest.approx(n, abs=tol)


@pytest.mark.slow
def test_real_hidden_and_embeddings(real_backend) -> None:
    vecs = real_backend.hidden(["Review: great fun\nSentiment:", "hi"])
    assert [len(v) for v in vecs] == [576, 576]
    emb = real_backend.embed(["a great movie", "a terrible movie", "stock markets fell"])
    assert [len(v) for v in emb] == [384] * 3
    assert all(abs(sum(x * x for x in v) - 1) < 1e-4 for v in emb)

    def cos(a, b):
        return sum(x * y for x, y in zip(a, b, strict=True))

    assert cos(emb[0], emb[1]) > cos(emb[0], emb[2])


@pytest.mark.slow
def test_real_second_load_reuses_the_converted_cache(real_backend) -> None:
    from blackbox.engine.loader import converted_folder, load_model, resolve_spec

    folder = converted_folder(resolve_spec("default"))
    assert (folder / "model.safetensors").is_file()
    before = folder.stat().st_mtime_ns
    t0 = time.perf_counter()
    loaded = load_model("default", device="cpu", dtype="float32")
    elapsed = time.perf_counter() - t0
    assert loaded.folder == folder and folder.stat().st_mtime_ns == before
    assert elapsed < 5.0  # ~0.5 s here; converting again would take ~30 s
