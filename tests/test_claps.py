"""ClaPS (bbx search-prompt): vocabulary, clustering, pruning, reward, search, baselines,
budget, cache, resume and the CLI. Fake backends; one slow test on the real model."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from conftest import bbx  # tests/ is on sys.path under pytest (rootdir conftest)

from blackbox.api import run_recipe, search_prompt
from blackbox.backends.base import Capabilities
from blackbox.backends.fake import FakeBackend
from blackbox.data import load_split
from blackbox.data.tasks import TASKS
from blackbox.errors import BbxError
from blackbox.methods.claps.cluster import cached_clusters, nearest_to_centroids
from blackbox.methods.claps.prune import (
    influence_scores,
    keep_above_percentile,
    n_kept,
    random_prune,
)
from blackbox.methods.claps.reward import PromptScorer, balanced_subset
from blackbox.methods.claps.vocab import candidate_vocabulary, is_candidate, prompt_text
from blackbox.recipes import parse_recipe

NEUTRAL = ["table", "chair", "water", "river", "stone", "cloud", "green", "blue", "red",
           "happy", "sad", "film", "story", "plot", "actor", "music", "book"]
WORDS = ["magic", "wand", "curse", *NEUTRAL]  # 20 candidates


def oracle(seed: int = 42) -> FakeBackend:
    """A fake model that knows the gold labels: "magic" in the prompt pushes every example
    towards its gold class (+2 nats each), "wand" a little (+1), "curse" away (-2); with no
    prompt the gold class is 0.5 nats behind, so the manual prompt gets every example wrong."""
    task = TASKS["sst-2"]
    gold = {e.text: e.label for split in ("train", "dev", "test")
            for e in load_split(task, split, 16, seed)}

    def fn(prompt: str, label_words: list[str]) -> list[float]:
        head, _, rest = prompt.partition("Review: ")
        g = gold[rest.rsplit("\nSentiment:", 1)[0]]
        ws = head.split()
        s = 2.0 * ws.count("magic") + ws.count("wand") - 2.0 * ws.count("curse") - 0.5
        z = [s if i == g else 0.0 for i in range(len(label_words))]
        lse = math.log(sum(math.exp(v) for v in z))
        return [v - lse - 1.0 for v in z]

    return FakeBackend(fn=fn, model=f"oracle-{seed}")


def recipe(tmp_path: Path, **kw: object) -> dict:
    base = {"method": "search-prompt", "task": "sst-2", "vocab": WORDS, "clusters": 0,
            "percentile": 85, "length": 3, "queries": 2000, "train_batch": 8,
            "select_top": 3, "test_limit": 40, "output_dir": str(tmp_path)}
    return {**base, **kw}


def run(tmp_path: Path, backend: FakeBackend | None = None, run_dir: Path | None = None,
        **kw: object) -> dict:
    res = run_recipe(recipe(tmp_path, **kw), backend=backend or oracle(), progress=False,
                     run_dir=run_dir)
    return {**res.summary, "run_dir": res.run_dir}


# -- vocabulary ----------------------------------------------------------------------------

def test_candidates_are_word_initial_alphabetic_pieces() -> None:
    assert is_candidate(" great") and is_candidate(" Review")
    for piece in ("great", "  great", " great!", " 42", " über", "<|im_start|>", " ", " a b"):
        assert not is_candidate(piece)
    assert prompt_text([" great", " movie"]) == "great movie"

    class Tok:  # a backend that declares its tokenizer pieces, like the local one
        name = "tok"
        capabilities = Capabilities(vocabulary=True)

        def vocabulary(self) -> list[str]:
            return ["<s>", " the", "ing", " The", " 9", " the", " café", " ok"]

    vocab = candidate_vocabulary(None, Tok())  # type: ignore[arg-type]
    assert vocab.texts == (" the", " The", " ok") and vocab.ids == (1, 3, 7)
    builtin = candidate_vocabulary(None, FakeBackend())  # type: ignore[arg-type]
    assert builtin.source == "builtin" and len(builtin) == 2000 and builtin.ids is None


def test_vocab_from_a_file_and_bad_entries(tmp_path) -> None:
    f = tmp_path / "words.txt"
    f.write_text("great\n\nawful\ngreat\n")
    assert candidate_vocabulary(str(f), FakeBackend()).texts == (" great", " awful")  # type: ignore[arg-type]
    with pytest.raises(BbxError, match="not found"):
        candidate_vocabulary(str(tmp_path / "nope.txt"), FakeBackend())  # type: ignore[arg-type]
    with pytest.raises(BbxError, match="without spaces"):
        candidate_vocabulary(["two words"], FakeBackend())  # type: ignore[arg-type]


# -- clustering ----------------------------------------------------------------------------

def test_clustering_keeps_the_one_token_nearest_each_centroid(tmp_path) -> None:
    rng = np.random.default_rng(0)
    centres = np.eye(8)[:5] * 10
    blob = np.repeat(np.arange(5), 12)
    x = centres[blob] + rng.normal(scale=0.5, size=(60, 8))
    reps = nearest_to_centroids(x, k=5, seed=0)
    assert len(reps) == 5 and sorted({int(blob[i]) for i in reps}) == [0, 1, 2, 3, 4]
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    for r in reps:  # the representative is the member nearest its (normalized) blob mean
        members = np.flatnonzero(blob == blob[r])
        centre = unit[members].mean(axis=0)
        assert r == members[np.argmin(((unit[members] - centre) ** 2).sum(axis=1))]
    assert nearest_to_centroids(x[:4], k=10) == [0, 1, 2, 3]  # k >= n keeps everything
    first, hit1 = cached_clusters(x, 5, 0, tmp_path)
    second, hit2 = cached_clusters(x, 5, 0, tmp_path)
    assert first == second == reps and (hit1, hit2) == (False, True)


# -- pruning and the reward ----------------------------------------------------------------

@pytest.mark.parametrize("n,p", [(100, 90), (37, 80), (20, 85), (31586, 90), (7, 0)])
def test_pruning_keeps_exactly_the_tokens_above_the_percentile(n: int, p: float) -> None:
    scores = np.random.default_rng(n).permutation(n).astype(float)
    keep = keep_above_percentile(scores, p)
    threshold = np.percentile(scores, p)
    assert keep == [i for i in range(n) if scores[i] > threshold]
    assert len(keep) == n_kept(n, p)
    rand = random_prune(n, p, np.random.default_rng(0))
    assert len(rand) == n_kept(n, p) and len(set(rand)) == len(rand)


def test_pruning_with_ties_still_leaves_a_space() -> None:
    assert keep_above_percentile(np.zeros(10), 80) == [0, 1]
    assert keep_above_percentile(np.array([0, 0, 0, 0, 5.0]), 50) == [4]


def test_reward_is_the_proper_log_likelihood_and_influence_follows() -> None:
    examples = load_split(TASKS["sst-2"], "train", 16, 42)[:6]
    scorer = PromptScorer(oracle(), TASKS["sst-2"], TASKS["sst-2"].template, examples)
    s = scorer.score(["", "magic", "curse"])
    # one softmax over the label words: log p(gold) = s - log(e^s + 1) with s = -0.5, 1.5
    expect = [-0.5 - math.log(math.exp(-0.5) + 1), 1.5 - math.log(math.exp(1.5) + 1),
              -2.5 - math.log(math.exp(-2.5) + 1)]
    assert np.allclose(s.reward, expect) and np.allclose(s.accuracy, [0, 1, 0])
    empty = type(s)(s.logp[:1], s.gold)
    tokens = type(s)(s.logp[1:], s.gold)
    infl = influence_scores(tokens, empty, "reward")
    assert np.allclose(infl, 6 * (np.array(expect[1:]) - expect[0]))
    kl = influence_scores(tokens, empty, "kl")
    assert (kl > 0).all()


def test_balanced_subset() -> None:
    train = load_split(TASKS["trec"], "train", 16, 42)
    sub = balanced_subset(train, 12, np.random.default_rng(0), 6)
    assert np.bincount([e.label for e in sub], minlength=6).tolist() == [2] * 6
    assert balanced_subset(train, None, np.random.default_rng(0), 6) == train


# -- the method on the oracle fake -------------------------------------------------------

def test_claps_greedy_prunes_to_the_influential_tokens_and_picks_the_argmax(tmp_path) -> None:
    s = run(tmp_path, search="greedy")
    pruning = json.loads((s["run_dir"] / "pruning.json").read_text())
    assert sorted(pruning["kept"]) == [" magic", " wand"]
    assert s["vocab"] == {"source": "recipe", "candidates": 20, "clustered": 20, "pruned": 2}
    assert s["best_prompt"] == "magic magic magic"
    assert s["test"]["accuracy"] == 1.0 and s["dev"]["accuracy"] == 1.0
    # pruning is 21 prompts x 8 examples; greedy is one pass: 3 sweeps of 2 tokens
    assert s["queries"] == {"budget": 2000, "pruning": 168, "search": 48, "train_total": 216}
    trials = [json.loads(x) for x in (s["run_dir"] / "trials.jsonl").read_text().splitlines()]
    assert [t["desc"] for t in trials[:2]] == ["'magic'", "'wand'"]
    assert trials[2]["desc"] == "'magic magic'"  # the argmax of sweep 1 was appended


@pytest.mark.parametrize("search", ["genetic", "pso", "random", "ng:DiscreteOnePlusOne"])
def test_other_searchers_run_through_the_loop(tmp_path, search: str) -> None:
    s = run(tmp_path, search=search, population=8, queries=400)
    assert s["search"]["trials"] == (400 - 168) // 8
    assert s["queries"]["train_total"] <= 400
    assert "magic" in s["best_prompt"].split()
    lines = (s["run_dir"] / "trials.jsonl").read_text().splitlines()
    assert len(lines) == s["search"]["trials"]


def test_baselines(tmp_path) -> None:
    manual = run(tmp_path, search="manual")
    assert manual["best_prompt"] == "" and manual["test"]["accuracy"] == 0.0
    assert manual["queries"]["train_total"] == 8
    rs = run(tmp_path, search="random", prune="none", queries=160)  # full vocabulary
    assert rs["vocab"]["pruned"] == 20 and rs["queries"]["pruning"] == 0
    assert rs["search"]["trials"] == 20
    rp = run(tmp_path, search="genetic", prune="random", queries=160,
             population=8)
    assert rp["vocab"]["pruned"] == n_kept(20, 85) == 3
    kept = json.loads((rp["run_dir"] / "pruning.json").read_text())["kept"]
    assert len(kept) == 3 and rp["queries"]["pruning"] == 0


def test_clustering_then_pruning_on_the_embeddings_route(tmp_path) -> None:
    s = run(tmp_path, search="greedy", clusters=8, prune="none", length=2)
    assert s["vocab"]["clustered"] == s["vocab"]["pruned"] == 8
    assert s["vocab"]["embeddings"] == "embed" and s["vocab"]["clusters_cached"] is False
    again = run(tmp_path, search="genetic", clusters=8, prune="none", length=2,
                population=8, queries=300)
    assert again["vocab"]["clusters_cached"] is True
    assert again["usage"]["by_verb"].get("embed", 0) == 0  # embeddings came from the cache


def test_the_query_budget_is_never_exceeded(tmp_path) -> None:
    # logical budget: pruning + search within `queries`
    s = run(tmp_path, search="genetic", queries=250, population=4)
    assert s["queries"]["train_total"] <= 250 and s["search"]["trials"] == (250 - 168) // 8
    # hard cap on paid calls: the search stops at it with the best prompt so far
    for cap in (100, 200, 260):
        t = run(tmp_path, search="random", prune="none", queries=2000, batch_size=4,
                budget={"max_queries": cap})
        assert t["usage"]["queries"] <= cap, cap
        assert t["stopped"]["search"] == "budget.max_queries reached"
        assert t["search"]["stopped"] == "budget" and t["best_prompt"]
    # ... and in pruning, before any search: the run still ends with a summary
    p = run(tmp_path, backend=FakeBackend(fn=oracle().fn, model="fresh"), search="greedy",
            budget={"max_queries": 100})
    assert p["usage"]["queries"] <= 100 and "pruning" in p["stopped"]
    assert p["best_prompt"] == ""  # nothing searched: the manual prompt, still evaluated
    with pytest.raises(BbxError, match="needs 168 queries but queries=100"):
        run(tmp_path, search="greedy", queries=100)


def test_a_second_run_pays_nothing_and_a_resume_replays(tmp_path) -> None:
    first = run(tmp_path, search="genetic", population=8, queries=400)
    assert first["usage"]["queries"] > 0
    second = run(tmp_path, search="genetic", population=8, queries=400)
    assert second["usage"]["queries"] == 0
    assert second["best_prompt"] == first["best_prompt"]
    again = run(tmp_path, run_dir=first["run_dir"], search="genetic",
                population=8, queries=400)
    assert again["search"]["replayed"] == first["search"]["trials"]
    assert again["usage"]["queries"] == 0 and again["best_prompt"] == first["best_prompt"]


def test_recipe_errors_are_one_line() -> None:
    for bad, msg in (({"search": "nope"}, "unknown search 'nope'"),
                     ({"search": "genetic", "search_options": {"popsize": 3}},
                      "has no option 'popsize'"),
                     ({"template": 9}, "template index 9 out of range"),
                     ({"vocab": []}, "vocab is an empty list")):
        with pytest.raises(BbxError, match=msg) as e:
            parse_recipe({"method": "search-prompt", **bad})
        assert "\n" not in str(e.value)


def test_api_function_and_pruning_that_keeps_too_little(tmp_path) -> None:
    with pytest.raises(BbxError, match="too few to search"):
        search_prompt(search="genetic", budget=500, clusters=0, percentile=99,
                      backend={"kind": "fake"}, vocab=WORDS, train_batch=4, test_limit=10,
                      output_dir=str(tmp_path), progress=False)


# -- the CLI -------------------------------------------------------------------------------

def test_cli_unknown_search_is_one_line_exit_2(tmp_path) -> None:
    proc = bbx("search-prompt", "--search", "nope", "--backend", "fake", "--output-dir",
               str(tmp_path))
    assert proc.returncode == 2, proc.stderr
    lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and "unknown search 'nope'" in lines[0]
    assert "Traceback" not in proc.stderr and not list(tmp_path.iterdir())


def test_cli_runs_and_prints_json(tmp_path) -> None:
    proc = bbx("search-prompt", "--search", "greedy", "--backend", "fake", "--clusters", "20",
               "--percentile", "80", "--budget", "600", "--train-batch", "4", "--length", "2",
               "--test-limit", "10", "--no-progress", "--json", "--output-dir", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["searcher"] == "greedy" and out["vocab"]["pruned"] == n_kept(20, 80)
    assert Path(out["run_dir"], "trials.jsonl").is_file()


# -- the real model --------------------------------------------------------------------------

@pytest.mark.slow
def test_small_search_on_the_real_model(tmp_path) -> None:
    """Tokenizer vocabulary, input-embedding clusters, pruning and greedy on SmolLM2, tiny."""
    s = search_prompt(task="sst-2", search="greedy", budget=200, clusters=12, percentile=50,
                      length=2, train_batch=4, select_top=2, test_limit=16, seed=42,
                      output_dir=str(tmp_path), progress=False)
    summary = s.summary
    assert summary["vocab"]["source"] == "tokenizer"
    assert summary["vocab"]["candidates"] > 20000 and summary["vocab"]["embeddings"] == "input"
    assert summary["vocab"]["clustered"] == 12 and summary["vocab"]["pruned"] == 6
    assert summary["queries"]["train_total"] <= 200
    assert summary["best_prompt"] and 0.0 <= summary["test"]["accuracy"] <= 1.0
    # greedy's first sweep re-scores the pruning's one-token prompts: answered by the cache
    assert summary["usage"]["cached"] >= 6 * 4
