"""The remote backend's transport: the adaptive per-endpoint limit, faults retried by the
SDK alone (an evaluation under 429s, 500s, dropped connections and stalls equals a clean
one, with one ledger row per logical call), several endpoints of one model (load spread,
one killed mid-run, the same-model check) and the fingerprint of a list.

Servers: ``tests/fake_openai.py`` behind ``tests/loopback.py`` (seeded faults, a kill
switch) on 127.0.0.1, through the real ``openai`` SDK; nothing here asserts on time.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from blackbox.errors import BbxError

pytest.importorskip("openai")
pytest.importorskip("fastapi")

from fake_openai import FakeOpenAI, SeededLogits  # noqa: E402
from loopback import Faults, LoopbackServer  # noqa: E402

from blackbox.backends.endpoints import EndpointPool  # noqa: E402

WORDS = [" positive", " negative"]
PROMPTS = [f"Review: item {i}\nSentiment:" for i in range(60)]


def _remote(base, **kw):
    from blackbox.backends.remote import RemoteBackend

    return RemoteBackend(base_url=base, api_key_env="BBX_TEST_NO_SUCH_KEY", **kw)


def _ledger(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines()]


# ---- the pool alone ---------------------------------------------------------------------

class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_the_limit_halves_once_per_round_on_429_and_grows_back() -> None:
    pool = EndpointPool(["http://a"], 8, make_client=lambda ep: None)
    [ep] = pool.endpoints
    with pool.lease():
        pool.observe(ep, 429)  # leased before any halving: halves
    assert ep.limit == 4
    with pool.lease():
        pool.observe(ep, 429)  # a new round: halves again
        pool.observe(ep, 429)  # the same request's retry, same round: no second halving
    assert ep.limit == 2 and ep.throttled == 3
    for _ in range(2):
        pool.observe(ep, 200)  # a round of `limit` answers: one more
    assert ep.limit == 3
    for _ in range(3 + 4 + 5 + 6 + 7):
        pool.observe(ep, 200)
    assert ep.limit == 8  # never past the bound
    for _ in range(20):
        pool.observe(ep, 500)  # one endpoint is never taken out: nowhere else to go
    assert ep.taken_out == 0 and ep.down_until == 0.0


def test_failing_endpoints_are_taken_out_and_come_back_half_open() -> None:
    clock = Clock()
    pool = EndpointPool(["http://a", "http://b"], 4, make_client=lambda ep: None,
                        clock=clock)
    a, b = pool.endpoints
    for _ in range(2):
        pool.observe(a, 502)
    pool.observe(a, 200)  # an answer ends the streak
    for _ in range(3):
        pool.observe(a, 503)  # three in a row: out
    assert a.taken_out == 1 and a.down_until == 2.0 and a.limit == 1
    assert pool._pick((), None) is b  # a is skipped while it is out
    clock.t = 2.5  # the cooldown is over: a is back, with one slot
    assert pool._pick((), None) is a  # the fewest in flight (ties: the first)
    a.in_flight = 1
    assert pool._pick((), None) is b  # a's one slot is taken
    a.in_flight = 0
    pool.observe(a, None)
    assert pool.refused(a) is False  # refused outside a call: no call to send elsewhere
    assert a.taken_out == 2 and a.down_until == 2.5 + 4.0  # the cooldown doubled
    clock.t = 3.0
    for _ in range(3):
        pool.observe(b, None)  # both out: a call still goes to the one back soonest
    assert b.down_until == 5.0 and pool._pick((), None) is b


# ---- faults, retried inside the SDK -----------------------------------------------------------

def _eval(base: str, tmp: Path, name: str, **backend):
    from blackbox.api import run_recipe

    recipe = {"method": "eval", "task": "sst-2", "split": "test", "limit": 24, "seed": 1,
              "output_dir": str(tmp / name), "cache_dir": str(tmp / name / "cache"),
              "backend": {"kind": "remote", "api_key_env": "BBX_TEST_NO_SUCH_KEY",
                          "base_url": base, "label_logprobs": "topk", **backend}}
    result = run_recipe(recipe, progress=False)
    preds = [json.loads(x) for x in (result.run_dir / "predictions.jsonl").read_text()
             .splitlines()]
    return result, preds


def test_an_eval_under_faults_equals_a_clean_one_and_pays_each_call_once(
        tmp_path: Path) -> None:
    fake = FakeOpenAI(SeededLogits())
    with LoopbackServer(fake.app()) as base:
        clean, clean_preds = _eval(base, tmp_path, "clean")
    # 20% answered 429 or 500 (retry-after 20 ms), 5% dropped without an answer, 2% stalled
    # past the client's timeout; seeded, so the same schedule every run
    faults = Faults(rate_429=0.12, rate_500=0.08, drop=0.05, stall=0.02, stall_s=0.6,
                    retry_after_s=0.02, seed=8)
    server = LoopbackServer(FakeOpenAI(SeededLogits()).app(), faults)
    with server as base:
        faulty, faulty_preds = _eval(base, tmp_path, "faulty", max_retries=10, timeout=0.3,
                                     max_concurrency=4)
    c = server.counts
    assert c.r429 > 0 and c.r500 > 0 and c.drops > 0 and c.stalls > 0, c
    assert c.requests > 25  # the retries happened (inside the SDK)
    assert faulty_preds == clean_preds
    assert faulty.summary["accuracy"] == clean.summary["accuracy"]
    for run in (clean, faulty):
        rows = _ledger(run.run_dir / "ledger.jsonl")
        assert len(rows) == 24 and not any(r["cached"] for r in rows)  # one row per item
        assert run.summary["usage"]["queries"] == 24


def test_429s_lower_the_limit_the_run_is_held_to() -> None:
    fake = FakeOpenAI(SeededLogits())
    server = LoopbackServer(fake.app(), Faults(rate_429=0.3, retry_after_s=0.01, seed=3))
    with server as base:
        r = _remote(base, max_concurrency=8, max_retries=20)
        lowest = [8]
        [ep] = r.endpoints.endpoints
        observe = r.endpoints.observe

        def spy(e, status):  # records the lowest limit the endpoint was held to
            observe(e, status)
            lowest[0] = min(lowest[0], e.limit)

        r.endpoints.observe = spy  # type: ignore[method-assign]
        got = r.label_logprobs(PROMPTS, WORDS)
        r.close()
    with LoopbackServer(FakeOpenAI(SeededLogits()).app()) as base:
        clean = _remote(base)
        assert got == clean.label_logprobs(PROMPTS, WORDS)
        clean.close()
    assert server.counts.r429 > 0 and ep.throttled == server.counts.r429
    assert lowest[0] < 8


# ---- several endpoints ----------------------------------------------------------------------

def test_three_endpoints_one_killed_mid_run(tmp_path: Path) -> None:
    from blackbox.backends.metered import MeteredBackend

    servers = [LoopbackServer(FakeOpenAI(SeededLogits()).app(), kill_after=k)
               for k in (None, 12, None)]
    bases = [s.__enter__() for s in servers]
    try:
        r = _remote(bases, max_concurrency=2, max_retries=2, timeout=5.0)
        assert r.fingerprint == "remote:endpoints:fake-chat:topk"
        assert r.capabilities.extra["base_url"] == bases
        metered = MeteredBackend(r, cache_dir=tmp_path / "cache",
                                 ledger_path=tmp_path / "ledger.jsonl")
        got = [row for i in range(0, len(PROMPTS), 20)
               for row in metered.label_logprobs(PROMPTS[i:i + 20], WORDS)]
        stats = r.endpoints.stats()
        metered.close()
    finally:
        for s in servers:
            s.__exit__(None, None, None)
    assert servers[1].killed
    served = [s.counts.by_path.get("/v1/completions", 0) for s in servers]
    assert served[0] > 0 and served[2] > 0  # the live ones shared the load
    assert served[1] <= 12 and stats[1]["taken_out"] >= 1
    assert sum(e["answered"] for e in stats) >= len(PROMPTS)
    rows = _ledger(tmp_path / "ledger.jsonl")
    assert len(rows) == len(PROMPTS) and not any(x["cached"] for x in rows)
    with LoopbackServer(FakeOpenAI(SeededLogits()).app()) as base:
        one = _remote(base)
        assert got == one.label_logprobs(PROMPTS, WORDS)  # the same answers as one server
        one.close()


def test_endpoints_must_serve_the_same_model() -> None:
    with LoopbackServer(FakeOpenAI({}).app()) as a, \
            LoopbackServer(FakeOpenAI({}, model_id="other").app()) as b:
        with pytest.raises(BbxError, match=r"\(one of 2 endpoints\) does not serve model "
                                           r"'fake-chat' \(it lists: other\)") as e:
            _ = _remote(f"{a},{b}").capabilities
        assert "\n" not in str(e.value)
        with pytest.raises(BbxError, match="lists .* twice"):
            _remote([a, a + "/"])


def test_base_url_lists_in_recipes_and_on_the_command_line() -> None:
    from blackbox.cli.common import backend_config
    from blackbox.recipes.schema import RemoteBackendConfig

    assert RemoteBackendConfig(base_url="http://a/v1").base_url == "http://a/v1"
    assert RemoteBackendConfig(base_url="http://a/v1, http://b/v1/").base_url == [
        "http://a/v1", "http://b/v1"]
    assert RemoteBackendConfig(base_url=["http://a/v1"]).base_url == "http://a/v1"
    assert backend_config("remote", base_url=["http://a/v1"])["base_url"] == "http://a/v1"
    assert backend_config("remote", base_url=["http://a/v1,http://b/v1", "http://c/v1"])[
        "base_url"] == ["http://a/v1", "http://b/v1", "http://c/v1"]


def test_a_call_fails_only_when_every_endpoint_failed_it() -> None:
    servers = [LoopbackServer(FakeOpenAI(SeededLogits()).app(), kill_after=k) for k in (4, 6)]
    bases = [s.__enter__() for s in servers]
    try:
        r = _remote(bases, max_concurrency=2, max_retries=1, timeout=5.0)
        _ = r.capabilities
        with pytest.raises(BbxError, match=r"^all 2 endpoints failed the call; the last, "
                                           r"cannot reach http://127\.0\.0\.1:\d+/v1 ") as e:
            r.label_logprobs(PROMPTS[:20], WORDS)
        assert "start the server" in str(e.value) and "\n" not in str(e.value)
        r.close()
    finally:
        for s in servers:
            s.__exit__(None, None, None)


def test_bbx_eval_over_two_endpoints(tmp_path: Path, capsys, monkeypatch) -> None:
    from test_remote_errors import cli

    monkeypatch.setenv("BBX_CACHE_DIR", str(tmp_path / "cache"))
    servers = [LoopbackServer(FakeOpenAI(SeededLogits()).app()) for _ in range(2)]
    a, b = (s.__enter__() for s in servers)
    try:
        code, out, err = cli(capsys, monkeypatch, "eval", "--task", "sst-2", "--limit", "12",
                             "--backend", "remote", "--base-url", a, "--base-url", b,
                             "--api-key-env", "BBX_TEST_NO_SUCH_KEY", "--no-progress",
                             "--json", "--output-dir", str(tmp_path / "runs"))
    finally:
        for s in servers:
            s.__exit__(None, None, None)
    assert code == 0, err
    summary = json.loads(out)
    manifest = json.loads((Path(summary["run_dir"]) / "manifest.json").read_text())
    assert manifest["backend"]["fingerprint"] == "remote:endpoints:fake-chat:topk"
    assert manifest["backend"]["capabilities"]["extra"]["base_url"] == [a, b]
    served = [s.counts.by_path.get("/v1/completions", 0) for s in servers]
    assert summary["usage"]["queries"] == 12 and min(served) > 0 and sum(served) == 12 + 1
