"""The remote backend on chat models: ``api: auto | chat | completions``, label words as the
start of the reply, the logit-bias recovery on chat, both log-prob shapes on both routes,
``label_logprobs: generate`` for servers without log-probs, and ``bbx eval --api chat``.

Servers: a small fake (``tests/fake_openai.py``) where the exact shape or quirk is the
point, and ``bbx serve`` on the tiny test model (its chat route is a real one, with
``top_logprobs`` and no ``logit_bias``); always through the real ``openai`` SDK on loopback.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from blackbox.errors import BbxError

openai = pytest.importorskip("openai")
pytest.importorskip("fastapi")

from fake_openai import VOCAB, FakeOpenAI, log_softmax  # noqa: E402
from serve_support import PROMPTS, build_tiny_model, running_server  # noqa: E402

from blackbox.backends.labels import GENERATE_FLOOR, parse_reply  # noqa: E402

F = GENERATE_FLOOR
P1 = "Review: a fine film\nSentiment:"
# the next-token logits after P1: The > Positive > " positive" > positive > x > ...
LOGITS = {P1: [3.0, 1.5, 1.0, 2.0, 0.0, -0.5, -1.0, -2.0, 0.5, -3.0, -1.5, -4.0]}
LP = dict(zip(VOCAB, log_softmax(LOGITS[P1]), strict=True))
WORDS = [" positive", " negative", " negation"]


def lse(*xs: float) -> float:
    m = max(xs)
    return m + math.log(sum(math.exp(x - m) for x in xs))


def _remote(base: str, **kw):
    from blackbox.backends.remote import RemoteBackend

    return RemoteBackend(base_url=base, api_key_env="BBX_TEST_NO_SUCH_KEY", **kw)


# ---- the label-word rules, without a server ------------------------------------------------

def test_replies_map_to_label_words() -> None:
    words = [" positive", " negative", " very", " very good"]
    assert parse_reply("positive", words) == 0  # exact, the leading space aside
    assert parse_reply("  Negative.\n", words) == 1  # case- and whitespace-insensitive prefix
    assert parse_reply("Very   GOOD indeed", words) == 3  # the longest word that fits wins
    assert parse_reply("very much so", words) == 2
    assert parse_reply("I think it is negative", words) is None  # no prefix: unparsed
    assert parse_reply("", words) is None


# ---- both shapes on both routes --------------------------------------------------------------

@pytest.mark.parametrize("api", ["completions", "chat"])
@pytest.mark.parametrize("shape", ["legacy", "chat"])
def test_both_logprob_shapes_on_both_routes(api: str, shape: str) -> None:
    fake = FakeOpenAI(LOGITS, completions_shape=shape, chat_shape=shape)
    with running_server(fake.app()) as base:
        r = _remote(base, api=api, label_logprobs="topk", top_logprobs=20)
        got = r.label_logprobs([P1], [" positive", " negative", " neutral"])[0]
        r.close()
    if api == "completions":  # the exact text, leading space included
        want = [LP[" positive"], LP[" negative"], LP[" neutral"]]
    else:  # stripped and case-folded: every spelling of the word at the reply's start
        want = [lse(LP[" positive"], LP["positive"], LP["Positive"]),
                lse(LP[" negative"], LP["negative"]), LP[" neutral"]]
    assert got == pytest.approx(want, abs=1e-9)
    [body] = [b for route, b in fake.requests if route == api]  # one request, all words in
    assert body["temperature"] == 0 and body["max_tokens"] == 1
    if api == "chat":
        assert body["logprobs"] is True and body["top_logprobs"] == 20
        assert body["messages"] == [{"role": "user", "content": P1}]
    else:
        assert body["logprobs"] == 20 and body["prompt"] == P1


# ---- the logit-bias recovery on chat -----------------------------------------------------------

@pytest.mark.parametrize("bias_after", [True, False])  # OpenAI's reporting, llama.cpp's
def test_chat_logit_bias_recovers_words_outside_the_top_k(bias_after: bool) -> None:
    fake = FakeOpenAI(LOGITS, bias_after=bias_after)
    with running_server(fake.app()) as base:
        r = _remote(base, api="chat", top_logprobs=3, system="Answer in one word.")
        got = r.label_logprobs([P1], WORDS)[0]
        caps = r.capabilities
        r.close()
        # the top-3 (The, Positive, " positive") hold two spellings of "positive"; "negative"
        # is recovered through its own token, "negation" (neg + ation) through its first
        assert got == pytest.approx([lse(LP["Positive"], LP[" positive"]), LP["negative"],
                                     LP["neg"]], abs=1e-9)
        assert caps.label_logprobs == "topk" and caps.topk == 3
        assert caps.extra["logit_bias"] == "on" and caps.extra["system"] == "Answer in one word."
        biased = [b for route, b in fake.requests if route == "chat" and b.get("logit_bias")]
        assert [b["logit_bias"] for b in biased] == [{str(VOCAB.index("negative")): 30},
                                                     {str(VOCAB.index("neg")): 30}]
        assert biased[0]["messages"] == [{"role": "system", "content": "Answer in one word."},
                                         {"role": "user", "content": P1}]
        # without the bias, or without a tokenize route: the floor, and the capability says so
        top3 = [LP["The"], LP["Positive"], LP[" positive"]]
        floor = min(min(top3), math.log(1 - sum(math.exp(v) for v in top3)))
        plain = _remote(base, api="chat", top_logprobs=3, logit_bias=False)
        assert plain.label_logprobs([P1], WORDS)[0][1:] == pytest.approx([floor, floor])
        plain.close()
    fake.tokenize = False
    with running_server(fake.app()) as base:
        blind = _remote(base, api="chat", top_logprobs=3)
        assert blind.label_logprobs([P1], WORDS)[0][1:] == pytest.approx([floor, floor])
        assert blind.capabilities.extra["logit_bias"].startswith("no tokenize route")
        blind.close()


def test_llama_servers_tokenize_route_reads_content() -> None:
    # llama-server's /tokenize reads "content" and answers {"tokens": []} to vLLM's
    # "prompt": an empty answer is no answer, the next body is tried and then remembered
    fake = FakeOpenAI(LOGITS, bias_after=False, tokenize_reads="content")
    with running_server(fake.app()) as base:
        r = _remote(base, api="chat", top_logprobs=3)
        got = r.label_logprobs([P1], WORDS)[0]
        assert r.tokenize_route == "/tokenize (content)"
        assert r.capabilities.extra["logit_bias"] == "on"
        r.close()
    assert got == pytest.approx([lse(LP["Positive"], LP[" positive"]), LP["negative"],
                                 LP["neg"]], abs=1e-9)
    asked = [b for route, b in fake.requests if route == "tokenize"]
    assert [sorted(b) for b in asked] == [["add_special_tokens", "model", "prompt"],
                                          ["add_special", "content"], ["add_special", "content"]]


def _vocab_tokenizer(folder: Path) -> Path:
    """A Hugging Face tokenizer folder whose tokens are the fake server's VOCAB, same ids."""
    import re

    from tokenizers import Regex, Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel({t: i for i, t in enumerate(VOCAB)}, unk_token="x"))
    # split into VOCAB pieces, the longest first at each place: the fake's longest match
    longest = "|".join(re.escape(t) for t in sorted(VOCAB, key=len, reverse=True))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(longest), behavior="isolated")
    PreTrainedTokenizerFast(tokenizer_object=tok).save_pretrained(folder)
    return folder


def test_a_named_tokenizer_stands_in_for_a_missing_tokenize_route(tmp_path: Path) -> None:
    # a hosted API has no tokenize route: the user's tokenizer folder gives the ids, so the
    # logit_bias recovery works as with one, and the token list is the vocabulary ability
    folder = _vocab_tokenizer(tmp_path / "tok")
    fake = FakeOpenAI(LOGITS, tokenize=False)
    with running_server(fake.app()) as base:
        r = _remote(base, api="chat", top_logprobs=3, tokenizer=str(folder))
        got = r.label_logprobs([P1], WORDS)[0]
        caps = r.capabilities
        pieces = r.vocabulary()
        counts = r.count_tokens(["negation", " positive"])
        r.close()
    assert got == pytest.approx([lse(LP["Positive"], LP[" positive"]), LP["negative"],
                                 LP["neg"]], abs=1e-9)
    assert caps.extra["logit_bias"] == "on" and caps.extra["tokenizer"] == str(folder)
    assert caps.vocabulary and pieces == VOCAB and counts == [2, 1]
    biased = [b["logit_bias"] for route, b in fake.requests if route == "chat"
              and b.get("logit_bias")]
    assert biased == [{str(VOCAB.index("negative")): 30}, {str(VOCAB.index("neg")): 30}]
    assert not [1 for route, _ in fake.requests if route == "tokenize"]


def test_bbx_eval_takes_the_tokenizer_option(tmp_path: Path, capsys, monkeypatch) -> None:
    from fake_openai import SeededLogits
    from test_remote_errors import cli

    monkeypatch.setenv("BBX_CACHE_DIR", str(tmp_path / "cache"))
    folder = _vocab_tokenizer(tmp_path / "tok")
    with running_server(FakeOpenAI(SeededLogits(), tokenize=False).app()) as base:
        code, out, err = cli(capsys, monkeypatch, "eval", "--task", "sst-2", "--limit", "4",
                             "--backend", "remote", "--base-url", base, "--api", "chat",
                             "--tokenizer", str(folder), "--api-key-env",
                             "BBX_TEST_NO_SUCH_KEY", "--no-progress", "--json",
                             "--output-dir", str(tmp_path / "runs"))
    assert code == 0, err
    run_dir = Path(json.loads(out)["run_dir"])
    extra = json.loads((run_dir / "manifest.json").read_text())["backend"]["capabilities"][
        "extra"]
    assert extra["tokenizer"] == str(folder) and extra["logit_bias"] == "on"
    assert f"tokenizer: {folder}" in (run_dir / "recipe.yaml").read_text()


@pytest.mark.parametrize("spec,message", [
    ("tiktoken:o200k_base", "tiktoken encodings are not supported (tiktoken downloads their "
     "data at run time)"),
    ("no/such/folder", "tokenizer 'no/such/folder' is not a folder"),
])
def test_a_bad_tokenizer_is_a_one_line_error_before_any_call(spec: str, message: str) -> None:
    with pytest.raises(BbxError) as e:
        _remote("http://127.0.0.1:9/v1", api="chat", tokenizer=spec)
    assert str(e.value).startswith(message) and "\n" not in str(e.value)


def test_chat_top_logprobs_are_capped_at_twenty() -> None:
    fake = FakeOpenAI(LOGITS)
    with running_server(fake.app()) as base:
        r = _remote(base, api="chat", top_logprobs=50)
        r.label_logprobs([P1], [" positive"])
        assert r.capabilities.topk == 20
        r.close()
    assert [b["top_logprobs"] for route, b in fake.requests if route == "chat"] == [20]


# ---- auto-detection ------------------------------------------------------------------------------

def test_auto_picks_chat_when_the_completions_route_refuses_the_model(tmp_path: Path) -> None:
    from blackbox.backends.metered import MeteredBackend

    fake = FakeOpenAI(LOGITS, refuse_completions=True)
    with running_server(fake.app()) as base:
        r = _remote(base)
        caps = r.capabilities
        assert caps.extra["api"] == "chat" and "refused the model" in caps.extra["api_decided"]
        assert "This is a chat model" in caps.extra["api_decided"]
        assert caps.label_logprobs == "topk" and not caps.score
        assert r.fingerprint == f"remote:{base}:fake-chat:chat:topk20"
        assert r.label_logprobs([P1], [" positive"])[0] == pytest.approx(
            [lse(LP[" positive"], LP["positive"], LP["Positive"])], abs=1e-9)
        with pytest.raises(BbxError, match="completions route"):
            r.score([P1], [" positive"])
        again = _remote(base)  # decided once per server and model: no second probe
        assert again.capabilities.extra["api"] == "chat"
        r.close()
        again.close()
    assert sum(route == "completions" for route, _ in fake.requests) == 1
    # a server whose completions route answers stays on completions; the cache tells apart
    fake = FakeOpenAI(LOGITS)
    with running_server(fake.app()) as base:
        auto = _remote(base)
        assert auto.capabilities.extra["api"] == "completions"
        assert auto.capabilities.extra["api_decided"] == "auto: /v1/completions answered"
        assert auto.fingerprint == f"remote:{base}:fake-chat:topk"  # as before chat existed
        chat = _remote(base, api="chat")
        assert chat.capabilities.extra["api_decided"] == "set"
        cache = tmp_path / "cache"
        first = MeteredBackend(auto, cache_dir=cache)
        assert first.label_logprobs([P1], [" positive"])[0] == pytest.approx([LP[" positive"]])
        first.close()
        second = MeteredBackend(chat, cache_dir=cache)
        assert second.label_logprobs([P1], [" positive"])[0] == pytest.approx(
            [lse(LP[" positive"], LP["positive"], LP["Positive"])])
        assert second.usage.cached == 0 and second.usage.queries == 1
        second.close()


def test_chat_refuses_what_only_completions_can_do() -> None:
    fake = FakeOpenAI(LOGITS)
    with running_server(fake.app()) as base:
        with pytest.raises(BbxError, match="echo needs the completions route"):
            _ = _remote(base, api="chat", label_logprobs="echo").capabilities
        with pytest.raises(BbxError, match="system is a chat message"):
            _ = _remote(base, api="completions", system="Be brief.").capabilities
    with pytest.raises(BbxError, match="unknown api"):
        _remote("http://127.0.0.1:9/v1", api="chatty")


# ---- generate mode -------------------------------------------------------------------------------

REPLIES = {"a": ["Positive."], "b": [" negative"], "c": ["I think it is negative"],
           "d": ["positive", "negative", "Positive!", "meh"]}


@pytest.mark.parametrize("api", ["chat", "completions"])
def test_generate_mode_on_a_server_without_logprobs(api: str) -> None:
    fake = FakeOpenAI({}, logprobs=False, replies=REPLIES)
    words = [" positive", " negative", " neutral"]
    with running_server(fake.app()) as base:
        with pytest.raises(BbxError, match="use label_logprobs: generate"):
            _remote(base, api=api, label_logprobs="topk").label_logprobs(["a"], words)
        one = _remote(base, api=api, label_logprobs="generate")
        assert one.label_logprobs(["a", "b", "c"], words) == [[0.0, F, F], [F, 0.0, F],
                                                               [F, F, F]]
        caps = one.capabilities
        assert caps.label_logprobs == "generate" and caps.extra["label_mode"] == "generate"
        assert caps.extra["generate"] == {"max_tokens": 8, "samples": 1, "temperature": 0.0}
        assert one.generate_stats == {"replies": 3, "unparsed": 1, "short_of_n": 0}
        assert one.fingerprint.endswith("generate-m8")
        many = _remote(base, api=api, label_logprobs="generate", samples=4)
        assert many.label_logprobs(["d"], words)[0] == pytest.approx(
            [math.log(2 / 4), math.log(1 / 4), F])
        assert many.fingerprint.endswith("generate-m8-n4-t1")
        for b in (one, many):
            b.close()
    sent = [b for route, b in fake.requests if route == api and b.get("max_tokens") == 8]
    assert [(b["temperature"], b.get("n"), b.get("seed")) for b in sent] == \
        [(0.0, None, None)] * 3 + [(1.0, 4, 0)]
    fake.n_supported = False  # a server that ignores n sends one reply: its label is the answer
    with running_server(fake.app()) as base:
        few = _remote(base, api=api, label_logprobs="generate", samples=4)
        assert few.label_logprobs(["d"], words) == [[0.0, F, F]]
        assert few.generate_stats["short_of_n"] == 1
        few.close()


# ---- bbx serve's chat route --------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_url(tmp_path_factory: pytest.TempPathFactory):
    pytest.importorskip("torch")
    from blackbox.backends.local import LocalBackend
    from blackbox.serve import create_app

    model = build_tiny_model(tmp_path_factory.mktemp("chat") / "model", context=1024)
    backend = LocalBackend(model=str(model), dtype="float32", embed_model="mean")
    with running_server(create_app(backend, max_wait_ms=10)) as base:
        yield base


def _chat_top(client, model: str, messages: list[dict[str, str]]) -> list[tuple[str, float]]:
    res = client.chat.completions.create(model=model, messages=messages, max_tokens=1,
                                         temperature=0, logprobs=True, top_logprobs=20)
    content = res.choices[0].logprobs.content
    return [(t.token, t.logprob) for t in content[0].top_logprobs] if content else []


def test_chat_mode_equals_the_chat_routes_top_logprobs(tiny_url: str) -> None:
    client = openai.OpenAI(base_url=tiny_url, api_key="x", max_retries=0)
    model = client.models.list().data[0].id
    words = [" the", "lo", " He", " great", " positive"]
    for system in (None, "Answer in one word."):
        head = [{"role": "system", "content": system}] if system else []
        r = _remote(tiny_url, api="chat", system=system)
        got = r.label_logprobs(PROMPTS, words)
        seen = {"in top-k": 0, "floor": 0}
        for prompt, row in zip(PROMPTS, got, strict=True):
            top = _chat_top(client, model, [*head, {"role": "user", "content": prompt}])
            total = sum(math.exp(v) for _, v in top)
            floor = min(min(v for _, v in top), math.log(1 - total)) if top else 0.0
            for w, value in zip(words, row, strict=True):
                hits = [v for t, v in top if t.strip().lower() == w.strip().lower()]
                # batched on the server with other prompts: float32 rounding, no more
                assert value == pytest.approx(lse(*hits) if hits else floor, abs=1e-5), (
                    prompt, w)
                seen["in top-k" if hits else "floor"] += 1
        assert seen["in top-k"] >= 5 and seen["floor"] >= 5, seen  # both rules exercised
        caps = r.capabilities
        # bbx serve's chat route refuses logit_bias (400): noted once, missing words floored
        assert caps.extra["logit_bias"].startswith("logit_bias refused by the server (400)")
        assert caps.extra["api"] == "chat" and caps.extra["bbx_server"]
        # generate is the chat route's reply to the same messages
        msgs = [*head, {"role": "user", "content": PROMPTS[0]}]
        want = client.chat.completions.create(model=model, messages=msgs, max_tokens=4,
                                              temperature=0).choices[0].message.content
        assert r.generate([PROMPTS[0]], {"max_tokens": 4}) == [want]
        r.close()
    # auto on a bbx server keeps the completions route and its exact extension
    auto = _remote(tiny_url)
    assert auto.capabilities.extra["api"] == "completions"
    assert auto.capabilities.label_logprobs == "exact"
    auto.close()


def test_generate_mode_with_n_on_a_bbx_server_without_logprobs() -> None:
    from blackbox.backends.fake import FakeBackend
    from blackbox.serve import create_app

    # a served fake backend: bbx serve answers its chat route with no log-probs (400 when
    # asked) and generates "fake-<digits>" replies, n of them when sampling
    with running_server(create_app(FakeBackend())) as base:
        with pytest.raises(BbxError, match="answered 400"):
            _remote(base, api="chat", label_logprobs="topk").label_logprobs(["x"], [" fake"])
        one = _remote(base, api="chat", label_logprobs="generate")
        assert one.label_logprobs(["x", "y"], [" real", " fake"]) == [[F, 0.0], [F, 0.0]]
        many = _remote(base, api="chat", label_logprobs="generate", samples=3)
        assert many.label_logprobs(["x"], [" real", " fake"]) == [[F, 0.0]]
        assert many.generate_stats == {"replies": 3, "unparsed": 0, "short_of_n": 0}
        for b in (one, many):
            b.close()


# ---- the CLI, end to end -------------------------------------------------------------------------

def test_bbx_eval_through_a_chat_route(tiny_url: str, tmp_path: Path) -> None:
    import numpy as np

    from blackbox.data import load_split
    from blackbox.data.datasets import seeded_subset
    from blackbox.data.tasks import TASKS, render
    from blackbox.methods.scoring import class_log_probs
    from tests.conftest import bbx

    args = ("eval", "--task", "sst-2", "--limit", "4", "--backend", "remote", "--base-url",
            tiny_url, "--api", "chat", "--api-key-env", "BBX_TEST_NO_SUCH_KEY", "--json",
            "--no-progress", "--output-dir", str(tmp_path / "runs"))
    proc = bbx(*args)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["n"] == 4 and summary["usage"]["queries"] == 4
    run_dir = Path(summary["run_dir"])
    manifest = json.loads((run_dir / "manifest.json").read_text())
    caps = manifest["backend"]["capabilities"]
    assert caps["extra"]["api"] == "chat" and caps["extra"]["api_decided"] == "set"
    assert caps["label_logprobs"] == "topk" and ":chat:topk20" in manifest["backend"][
        "fingerprint"]
    # the run's probabilities are those of the chat-mode scores of the same items
    task = TASKS["sst-2"]
    items = seeded_subset(load_split(task, "test", 16, 42), 4, 0)
    prompts = [render(task.templates[0], e.text, "", task.max_words) for e in items]
    r = _remote(tiny_url, api="chat")
    want = np.round(np.exp(class_log_probs(np.array(r.label_logprobs(prompts,
                                                                     task.label_words)))), 4)
    r.close()
    rows = [json.loads(x) for x in (run_dir / "predictions.jsonl").read_text().splitlines()]
    assert [row["probs"] for row in rows] == want.tolist()
    again = json.loads(bbx(*args).stdout)  # the same answers, from the response cache
    assert again["usage"]["queries"] == 0 and again["accuracy"] == summary["accuracy"]


def test_every_method_command_takes_api_and_recipes_carry_it() -> None:
    import typer

    from blackbox.api import make_backend
    from blackbox.cli.common import backend_config
    from blackbox.cli.main import app
    from blackbox.recipes.schema import RemoteBackendConfig

    root = typer.main.get_command(app)
    for command in (["eval"], ["search-prompt"], ["decode", "fit"], ["distill"], ["merge"]):
        cmd = root
        for name in command:
            cmd = cmd.commands[name]  # type: ignore[attr-defined]
        [opt] = [p for p in cmd.params if p.name == "api"]
        assert opt.opts == ["--api"] and opt.default is None, command  # the recipe's: auto
    cfg = backend_config("remote", "gpt-x", "http://127.0.0.1:9/v1", "MY_KEY", "chat")
    assert cfg == {"kind": "remote", "base_url": "http://127.0.0.1:9/v1",
                   "api_key_env": "MY_KEY", "model": "gpt-x", "api": "chat"}
    backend = make_backend(RemoteBackendConfig(**{k: v for k, v in cfg.items() if k != "kind"},
                                               system="One word.", label_logprobs="generate",
                                               samples=5))
    assert (backend.api, backend.system, backend.mode, backend.samples) == (
        "chat", "One word.", "generate", 5)


@pytest.mark.parametrize("mode", ["topk", "generate"])
def test_a_run_notes_what_its_method_loses_without_exact_scores(tmp_path: Path,
                                                                mode: str) -> None:
    from collections import defaultdict

    from fake_openai import SeededLogits

    from blackbox.api import run_recipe
    from blackbox.methods.eval.recipe import EvalRecipe

    fake = FakeOpenAI(SeededLogits(), replies=defaultdict(lambda: ["positive"]))
    with running_server(fake.app()) as base:
        r = _remote(base, api="chat", label_logprobs=mode)
        s = run_recipe({"method": "eval", "task": "sst-2", "limit": 3,
                        "output_dir": str(tmp_path), "cache_dir": str(tmp_path / "c")},
                       backend=r, progress=False).summary
    assert s["notes"]["label_scores"] == f"{mode}: {EvalRecipe.score_losses[mode]}"
