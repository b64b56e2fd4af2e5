"""Identical scoring items are computed once (``blackbox.serve.reuse``): kept results, and
requests that arrive while the same item is in flight wait for it instead of recomputing."""

from __future__ import annotations

import asyncio
import json
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from blackbox.serve.reuse import Reuse


def test_each_distinct_key_is_computed_once_across_concurrent_requests() -> None:
    calls: list[list[str]] = []

    async def main() -> list[list[Any]]:
        reuse = Reuse(entries=8)
        gate = asyncio.Event()

        def compute_for(keys: list[str]) -> Any:
            async def compute(idx: list[int]) -> list[str]:
                calls.append([keys[i] for i in idx])
                await gate.wait()  # every request is in flight before the first finishes
                return [f"r-{keys[i]}" for i in idx]
            return compute

        reqs = [["a", "b", "a"], ["b", "c"], ["a"]]
        tasks = [asyncio.ensure_future(reuse.get(k, compute_for(k))) for k in reqs]
        await asyncio.sleep(0)
        gate.set()
        out = await asyncio.gather(*tasks)
        again = await reuse.get(["c", "a"], compute_for(["c", "a"]))
        assert reuse.stats.as_dict() == {"hits": 2, "joined": 3, "computed": 3}
        return [*out, again]

    out = asyncio.run(main())
    assert out == [["r-a", "r-b", "r-a"], ["r-b", "r-c"], ["r-a"], ["r-c", "r-a"]]
    assert calls == [["a", "b"], ["c"]]  # the third request and the last one computed nothing


def test_a_failed_computation_reaches_its_waiters_and_is_not_kept() -> None:
    async def main() -> None:
        reuse = Reuse()
        gate = asyncio.Event()
        n = 0

        async def failing(idx: list[int]) -> list[str]:
            await gate.wait()
            raise RuntimeError("backend down")

        async def working(idx: list[int]) -> list[str]:
            nonlocal n
            n += 1
            return ["ok" for _ in idx]

        first = asyncio.ensure_future(reuse.get(["k"], failing))
        await asyncio.sleep(0)
        second = asyncio.ensure_future(reuse.get(["k"], working))
        await asyncio.sleep(0)
        gate.set()
        for t in (first, second):
            with pytest.raises(RuntimeError, match="backend down"):
                await t
        assert await reuse.get(["k"], working) == ["ok"]  # computed afresh
        assert n == 1

    asyncio.run(main())


def test_a_cancelled_computation_lets_its_waiters_compute_it() -> None:
    async def main() -> None:
        reuse = Reuse()

        async def slow(idx: list[int]) -> list[str]:
            await asyncio.sleep(60)
            return ["never"]

        async def fast(idx: list[int]) -> list[str]:
            return ["fast"]

        first = asyncio.ensure_future(reuse.get(["k"], slow))
        await asyncio.sleep(0)
        second = asyncio.ensure_future(reuse.get(["k"], fast))
        await asyncio.sleep(0)
        first.cancel()
        assert await second == ["fast"]

    asyncio.run(main())


def test_the_kept_results_are_bounded() -> None:
    async def main() -> int:
        reuse = Reuse(entries=2)
        computed = 0

        async def compute(idx: list[int]) -> list[int]:
            nonlocal computed
            computed += len(idx)
            return list(idx)

        for keys in (["a", "b", "c"], ["c", "b"], ["a"]):  # a was pushed out by c
            await reuse.get(keys, compute)
        return computed

    assert asyncio.run(main()) == 4


def test_a_repeated_prompt_is_scored_once_by_the_server(tmp_path) -> None:
    openai = pytest.importorskip("openai")
    pytest.importorskip("fastapi")
    from serve_support import build_tiny_model, running_server

    from blackbox.backends.local import LocalBackend
    from blackbox.serve import create_app

    model = build_tiny_model(tmp_path / "model")
    backend = LocalBackend(model=str(model), dtype="float32", embed_model="mean")
    with running_server(create_app(backend)) as url:
        client = openai.OpenAI(base_url=url, api_key="unused", max_retries=0, timeout=60)

        def ask(prompt: str) -> Any:
            r = client.completions.create(model="model", prompt=prompt, max_tokens=1,
                                          logprobs=5, temperature=0)
            return r.choices[0].text, r.choices[0].logprobs.top_logprobs

        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(ask, ["hello there"] * 8))
        other = ask("a different prompt")
        with urllib.request.urlopen(url.removesuffix("/v1") + "/health") as r:
            reuse = json.load(r)["reuse"]
    assert all(a == answers[0] for a in answers)
    assert other != answers[0]
    assert reuse["computed"] == 2
    assert reuse["hits"] + reuse["joined"] == 7
