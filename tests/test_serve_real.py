"""``bbx serve`` on the real bundled SmolLM2-135M (slow): the server as a user starts it (CLI
defaults: the MiniLM embedder) answers the OpenAI routes, the remote backend agrees with the
local one through the server, and per-row LoRA mixtures on the real model equal separate
runs and PEFT's own forward."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("peft")
pytest.importorskip("fastapi")

from serve_support import cli_server, running_server  # noqa: E402

TEMPLATE = "Review: {text}\nSentiment:"
REVIEWS = [
    "A wonderful, moving film with superb acting.",
    "Dull, lifeless and far too long; I wanted my money back.",
    "an engrossing portrait of a family coming apart",
    "the jokes fall flat and the plot makes no sense",
]
WORDS = [" negative", " positive", " neutral"]


@pytest.fixture(scope="module")
def real_zoo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two random LoRA adapters (r=4) on SmolLM2's attention projections."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from blackbox.engine.loader import convert_gguf, resolve_spec

    folder = convert_gguf(resolve_spec("default"))
    zoo = tmp_path_factory.mktemp("real-zoo")
    for i, targets in enumerate([["q_proj", "v_proj"], ["o_proj", "down_proj"]]):
        base = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
        torch.manual_seed(i)
        model = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules=targets,
                                                init_lora_weights=False))
        with torch.no_grad():
            for name, p in model.named_parameters():
                if "lora_" in name:
                    p.copy_(torch.randn_like(p) * 0.05)
        model.save_pretrained(zoo / f"a{i}")
    return zoo


@pytest.fixture(scope="module")
def real_local(real_zoo):
    from blackbox.backends.local import LocalBackend

    b = LocalBackend(dtype="float32", adapters=str(real_zoo))
    yield b
    b.close()


@pytest.mark.slow
def test_bbx_serve_with_its_defaults_answers_embeddings() -> None:
    # `bbx serve` with no options embeds with MiniLM: every /v1/embeddings used to be a 500
    openai = pytest.importorskip("openai")
    from blackbox.engine.embed import SentenceEmbedder

    texts = ["hello", "an engrossing portrait of a family coming apart"]
    with cli_server() as url:
        client = openai.OpenAI(base_url=url, api_key="unused", max_retries=0, timeout=120)
        model_id = client.models.list().data[0].id
        res = client.embeddings.create(model=model_id, input=texts)
        one = client.embeddings.create(model=model_id, input="hello")
    assert [d.index for d in res.data] == [0, 1] and res.model == model_id
    want = SentenceEmbedder().embed(texts)
    assert [len(d.embedding) for d in res.data] == [384, 384]
    for d, w in zip(res.data, want, strict=True):
        assert d.embedding == pytest.approx(w, abs=1e-5)
    assert one.data[0].embedding == pytest.approx(want[0], abs=1e-5)
    assert res.usage.prompt_tokens > 0


@pytest.mark.slow
def test_real_remote_through_bbx_serve_equals_local(real_local, real_zoo) -> None:
    from blackbox.backends.local import LocalBackend
    from blackbox.backends.remote import RemoteBackend
    from blackbox.serve import create_app

    prompts = [TEMPLATE.format(text=t) for t in REVIEWS]
    mix = {"adapters": ["a0", "a1"], "alpha": [0.6, 1.0], "beta": [0.7, -0.4]}
    server_backend = LocalBackend(dtype="float32", adapters=str(real_zoo))
    with running_server(create_app(server_backend)) as url:
        remote = RemoteBackend(base_url=url, api_key_env="BBX_TEST_NO_SUCH_KEY", timeout=120)
        for adapter in (None, mix):
            got = remote.label_logprobs(prompts, WORDS, adapter=adapter)
            want = real_local.label_logprobs(prompts, WORDS, adapter=adapter)
            for g, w in zip(got, want, strict=True):
                assert g == pytest.approx(w, abs=1e-4)
        topk = RemoteBackend(base_url=url, api_key_env="BBX_TEST_NO_SUCH_KEY",
                             label_logprobs="topk", timeout=120)
        got = topk.label_logprobs(prompts[:2], WORDS)
        want = real_local.label_logprobs(prompts[:2], WORDS)
        for g, w in zip(got, want, strict=True):
            assert g == pytest.approx(w, abs=2e-3)  # top-20 + logit_bias recovery
        remote.close()
        topk.close()


@pytest.mark.slow
def test_real_mixtures_in_one_batch_equal_separate_runs_and_peft(real_local, real_zoo) -> None:
    from peft import PeftModel

    prompts = [TEMPLATE.format(text=t) for t in REVIEWS]
    specs = [None, "a0", {"adapters": ["a0", "a1"], "alpha": [0.3, 0.8], "beta": [1.2, 0.5]},
             "a1"]
    mixed = real_local.call_rows("label_logprobs", (prompts, WORDS), specs)
    for p, s, row in zip(prompts, specs, mixed, strict=True):
        assert row == pytest.approx(real_local.label_logprobs([p], WORDS, adapter=s)[0],
                                    abs=1e-4)
    engine = real_local.engine
    peft_model = PeftModel.from_pretrained(copy.deepcopy(engine.model), real_zoo / "a0").eval()
    ids = [engine.tokenizer(w, add_special_tokens=False).input_ids[0] for w in WORDS]
    for p, row in zip(prompts, real_local.label_logprobs(prompts, WORDS, adapter="a0"),
                      strict=True):
        with torch.inference_mode():
            logits = peft_model(torch.tensor([engine._prompt_ids([p])[0]])).logits[0, -1]
        ref = torch.log_softmax(logits.float(), -1)
        assert row == pytest.approx([float(ref[i]) for i in ids], abs=2e-3)


@pytest.mark.slow
def test_bbx_serve_answers_a_json_schema_request_with_a_matching_document() -> None:
    # structured output on the real model, served as a user starts it
    import json

    openai = pytest.importorskip("openai")
    schema = {"type": "object", "additionalProperties": False,
              "required": ["sentiment", "confidence"],
              "properties": {"sentiment": {"enum": ["positive", "negative"]},
                             "confidence": {"type": "integer"}}}
    fmt = {"type": "json_schema", "json_schema": {"name": "review", "schema": schema}}
    # numeric bounds are not enforced by the grammar (a "maximum": 100 once came out as
    # 1000): such a schema is a 400 naming the keyword, not a document that breaks it
    bounded = {**schema, "properties": {**schema["properties"], "confidence": {
        "type": "integer", "minimum": 0, "maximum": 100}}}
    messages = [{"role": "user", "content": "Classify the review as JSON: " + REVIEWS[0]}]
    with cli_server() as url:
        client = openai.OpenAI(base_url=url, api_key="unused", max_retries=0, timeout=120)
        model_id = client.models.list().data[0].id
        res = client.chat.completions.create(model=model_id, messages=messages,
                                             max_tokens=60, temperature=0,
                                             response_format=fmt)
        free = client.chat.completions.create(model=model_id, messages=messages,
                                              max_tokens=60, temperature=0)
        with pytest.raises(openai.BadRequestError) as refused:
            client.chat.completions.create(
                model=model_id, messages=messages, max_tokens=60, temperature=0,
                response_format={"type": "json_schema",
                                 "json_schema": {"name": "review", "schema": bounded}})
    assert "'minimum' at properties.confidence, 'maximum' at properties.confidence" in str(
        refused.value)
    choice = res.choices[0]
    assert choice.finish_reason == "stop"
    doc = json.loads(choice.message.content)
    assert set(doc) == {"sentiment", "confidence"}
    assert doc["sentiment"] in ("positive", "negative")
    assert isinstance(doc["confidence"], int)
    assert free.choices[0].message.content != choice.message.content  # the grammar acted
