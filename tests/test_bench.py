"""``bbx bench`` end to end against a loopback ``bbx serve``: over the fake backend (every
workload; the whole answer in one chunk) and over the tiny random Llama (token streaming,
next-token scoring). Counts and shapes only: no timing assertions."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("openai")
pytest.importorskip("fastapi")

from conftest import bbx  # noqa: E402
from serve_support import build_tiny_model, build_zoo, running_server  # noqa: E402

STREAMED_KEYS = {"ttft_s", "itl_s", "tpot_s", "e2e_s"}
PCTS = {"p50", "p90", "p99", "mean"}


def _rows(run_dir: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run_dir / "requests.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def fake_url():
    from blackbox.backends.fake import FakeBackend
    from blackbox.serve import create_app

    class Wordy(FakeBackend):
        """Five-word answers (the fake counts a word as a token), sent whole."""

        def generate(self, prompts: Any, params: Any = None, adapter: Any = None
                     ) -> list[str]:
            return [f"{t} and four more words" for t in super().generate(prompts, params)]

    backend = Wordy(adapter_bias={"a1": {" sport": 1.0}, "a2": {" business": -1.0}})
    with running_server(create_app(backend)) as url:
        yield url


def test_cli_bench_streams_chat_and_writes_a_run_dir(fake_url: str, tmp_path: Path) -> None:
    out = bbx("bench", "--base-url", fake_url, "--workload", "chat", "--mode", "concurrency",
              "--concurrency", "2", "--requests", "5", "--prompt-words", "12",
              "--slo", "ttft=10s,tpot=10s,e2e=10s", "--output-dir", str(tmp_path), "--json")
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout)
    run_dir = Path(summary["run_dir"])
    assert {p.name for p in run_dir.iterdir()} >= {"recipe.yaml", "manifest.json",
                                                   "summary.json", "requests.jsonl"}
    assert json.loads((run_dir / "summary.json").read_text())["requests"] == 5
    assert (summary["requests"], summary["ok"], summary["failed"]) == (5, 5, 0)
    for key in STREAMED_KEYS:
        assert set(summary[key]) == PCTS and summary[key]["p50"] is not None, key
    for key in ("requests_per_s", "output_tokens_per_s", "duration_s"):
        assert summary[key] > 0
    assert set(summary["fluidity"]) == {"mean", "p10", "prefill_deadline_s",
                                        "decode_deadline_s"}
    assert summary["goodput"]["slo_s"] == {"ttft": 10.0, "tpot": 10.0, "e2e": 10.0}
    assert summary["goodput"]["requests_per_s"] > 0
    assert summary["model"] == "fake-1"
    rows = _rows(run_dir)
    assert sorted(r["index"] for r in rows) == list(range(5))
    # the answer comes whole: its five tokens (the usage total) arrive with the one chunk
    assert all(r["ok"] and r["ttft_s"] <= r["e2e_s"] and len(r["chunk_times_s"]) == 1
               and r["output_tokens"] == 5 and r["itl_s"] == [0.0] * 4 for r in rows)
    assert summary["output_tokens"] == 25
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["server"]["bbx"]["model"] == "fake-1"
    # the readable table
    table = bbx("bench", "--base-url", fake_url, "--requests", "2", "--prompt-words", "5",
                "--output-dir", str(tmp_path))
    assert table.returncode == 0, table.stderr
    assert "TTFT" in table.stdout and "requests/s" in table.stdout


@pytest.mark.parametrize("workload", ["label-logprobs", "score", "hidden-states", "mixture"])
def test_scoring_workloads_on_bbx_routes(fake_url: str, tmp_path: Path, workload: str
                                         ) -> None:
    from blackbox import api

    r = api.bench(fake_url, workload=workload, mode="rate", rate=200.0, seed=1, requests=6,
                  batch=3, prompt_words=8, output_dir=str(tmp_path), slo="e2e=10s")
    s = r.summary
    assert (s["requests"], s["ok"]) == (6, 6), s["errors"]
    assert s["items_per_s"] == pytest.approx(3 * s["requests_per_s"])
    assert set(s["e2e_s"]) == PCTS and "ttft_s" not in s
    assert s["goodput"]["fraction"] == 1.0
    rows = _rows(r.run_dir)
    assert len(rows) == 6 and all(row["items"] == 3 for row in rows)
    if workload == "mixture":
        assert s["mixtures_per_s"] == s["requests_per_s"]
        assert s["mixture_adapters"] == ["a1", "a2"]


def test_repeat_sends_one_prompt(fake_url: str, tmp_path: Path) -> None:
    from blackbox import api

    r = api.bench(fake_url, workload="score", requests=3, batch=2, repeat=True, warmup=2,
                  prompt_words=5, output_dir=str(tmp_path))
    s = r.summary
    assert s["distinct_prompts"] == 1 and s["ok"] == 3 and "notes" not in s
    # the warm-up requests are not results
    assert s["requests"] == 3 and s["warmup"] == 2 and len(_rows(r.run_dir)) == 3
    s = api.bench(fake_url, workload="score", requests=3, prompt_words=5,
                  output_dir=str(tmp_path)).summary
    assert s["distinct_prompts"] > 3


def test_failed_requests_are_counted_not_raised(fake_url: str, tmp_path: Path) -> None:
    from blackbox import api

    # the fake backend has no token log-probs: every next-token request is a 400
    s = api.bench(fake_url, workload="next-token", requests=3, prompt_words=5,
                  output_dir=str(tmp_path)).summary
    assert (s["requests"], s["ok"], s["failed"]) == (3, 0, 3)
    assert list(s["errors"].values()) == [3] and next(iter(s["errors"])).startswith("400")


def test_bad_options_are_one_line_errors(fake_url: str, tmp_path: Path) -> None:
    from blackbox.bench import BenchConfig
    from blackbox.errors import BbxError

    for bad, match in [({"workload": "chatt"}, "did you mean 'chat'"),
                       ({"mode": "rate"}, "--rate"),
                       ({"workload": "score", "slo": "ttft=1s"}, "only e2e"),
                       ({"workload": "chat", "batch": 2}, "--batch"),
                       ({"concurrency": 4}, "--mode concurrency"),
                       ({"rate": 2.0}, "--mode rate")]:
        with pytest.raises(BbxError, match=match):
            BenchConfig(base_url=fake_url, **bad)
    out = bbx("bench", "--base-url", "http://127.0.0.1:9/v1", "--requests", "1",
              "--output-dir", str(tmp_path))
    assert out.returncode == 2 and "does not answer GET /models" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1


@pytest.fixture(scope="module")
def tiny_url(tmp_path_factory: pytest.TempPathFactory):
    pytest.importorskip("torch")
    from blackbox.backends.local import LocalBackend
    from blackbox.serve import create_app

    root = tmp_path_factory.mktemp("bench-tiny")
    model = build_tiny_model(root / "model", context=256)
    backend = LocalBackend(model=str(model), dtype="float32", embed_model="mean",
                           adapters=str(build_zoo(model, root / "zoo")), batch_size=8)
    with running_server(create_app(backend)) as url:
        yield url


@pytest.mark.parametrize("workload", ["chat", "completion"])
def test_streamed_generation_on_the_tiny_llama(tiny_url: str, tmp_path: Path,
                                               workload: str) -> None:
    from blackbox import api

    r = api.bench(tiny_url, workload=workload, mode="concurrency", concurrency=2,
                  requests=4, max_tokens=6, temperature=1.0, prompt_words=4,
                  output_dir=str(tmp_path), slo="ttft=60s,tpot=60s")
    s = r.summary
    assert (s["requests"], s["ok"]) == (4, 4), s["errors"]
    rows = _rows(r.run_dir)
    assert len(rows) == 4
    # the usage totals are the tokens counted (a sampled answer may stop early, at EOS)
    assert s["output_tokens"] == sum(row["usage_tokens"] for row in rows) > 0
    assert all(0 <= row["output_tokens"] <= 6 for row in rows)
    for row in rows:
        times = row["token_times_s"]
        assert len(times) >= len(row["chunk_times_s"]) and times == sorted(times)
        assert len(row["itl_s"]) == max(0, len(times) - 1)
        assert row["fluidity"] is None if not times else 0.0 <= row["fluidity"] <= 1.0
    assert s["goodput"]["fraction"] == 1.0
    assert "notes" not in s or "usage" not in s["notes"]


def test_next_token_scoring_and_mixtures_on_the_tiny_llama(tiny_url: str, tmp_path: Path
                                                           ) -> None:
    from blackbox import api

    s = api.bench(tiny_url, workload="next-token", mode="concurrency", concurrency=2,
                  requests=3, batch=2, prompt_words=4, output_dir=str(tmp_path)).summary
    assert (s["ok"], s["failed"]) == (3, 0), s["errors"]
    m = api.bench(tiny_url, workload="mixture", requests=2, prompt_words=4,
                  output_dir=str(tmp_path)).summary
    assert m["ok"] == 2 and m["mixture_adapters"] == ["news", "sst2", "trec"]


def test_an_offset_starts_at_a_later_text_and_keeps_every_text() -> None:
    from blackbox.bench.prompts import load_prompts

    base = load_prompts("sst-2", 20, templated=True, repeat=False)
    later = load_prompts("sst-2", 20, templated=True, repeat=False, offset=5)
    assert later.texts[0] == base.texts[5]
    assert later.batch(0, 2) == base.texts[5:7]
    assert sorted(later.texts) == sorted(base.texts) and later.distinct == base.distinct
    assert load_prompts("sst-2", 20, True, True, offset=5).texts == [base.texts[5]]
