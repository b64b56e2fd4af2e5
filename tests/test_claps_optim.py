"""The discrete searchers ClaPS uses (blackbox.optim.discrete): greedy, genetic, pso."""

from __future__ import annotations

import numpy as np
import pytest

from blackbox.errors import BbxError
from blackbox.optim import BoxSpace, DiscreteSpace, make_optimizer, run_search

TARGET = [3, 7, 1, 9, 4]


def _mismatches(values: list[list[int]]) -> list[float]:
    return [float(sum(a != b for a, b in zip(v, TARGET, strict=True))) for v in values]


def test_greedy_with_blank_appends_the_argmax_token_each_sweep() -> None:
    # an additive table: the best token at position i is argmin of table[i]
    rng = np.random.default_rng(0)
    table = rng.normal(size=(3, 6))
    blank = 6

    def loss(v: list[int]) -> float:
        return float(sum(table[i, t] for i, t in enumerate(v) if t != blank))

    opt = make_optimizer("greedy", DiscreteSpace(3, 7), seed=0, batch_size=6, blank=blank)
    assert opt.sweep_size == 6 and opt.total_trials == 18
    first = opt.ask(6)
    assert [c.value for c in first] == [[t, blank, blank] for t in range(6)]
    opt.tell(first, [loss(c.value) for c in first])
    second = opt.ask(6)
    best0 = int(np.argmin(table[0]))
    assert all(c.value[0] == best0 and c.value[2] == blank for c in second)
    opt.tell(second, [loss(c.value) for c in second])
    third = opt.ask(6)
    opt.tell(third, [loss(c.value) for c in third])
    assert opt.recommend().value == [int(np.argmin(table[i])) for i in range(3)]


def test_greedy_appends_even_when_the_token_hurts() -> None:
    # ClaPS's greedy always appends the best token of the sweep; the best prompt overall is
    # still the lowest loss seen (here the one-token prompt)
    blank = 2
    losses = {(0, blank): 1.0, (1, blank): 2.0, (0, 0): 5.0, (0, 1): 4.0}
    opt = make_optimizer("greedy", DiscreteSpace(2, 3), seed=0, batch_size=2, blank=blank)
    res = run_search(lambda vs: [losses[tuple(v)] for v in vs], opt, max_trials=4,
                     batch_size=2, progress=False)
    assert opt.settings()["current"] == [0, 1]
    assert res.best_value == [0, blank] and res.best_loss == 1.0


def test_greedy_without_blank_is_coordinate_descent() -> None:
    opt = make_optimizer("greedy", DiscreteSpace(5, 10), seed=3, batch_size=10)
    res = run_search(_mismatches, opt, max_trials=opt.total_trials, batch_size=10,
                     progress=False)
    assert res.best_value == TARGET and res.best_loss == 0.0


def test_greedy_refuses_to_skip_a_sweep() -> None:
    opt = make_optimizer("greedy", DiscreteSpace(2, 4), seed=0, batch_size=4, blank=3)
    opt.ask(3)
    with pytest.raises(RuntimeError, match="tell the current sweep"):
        opt.ask(1)


@pytest.mark.parametrize("name", ["genetic", "pso"])
def test_population_searchers_are_deterministic_and_stay_in_the_space(name: str) -> None:
    def run(seed: int) -> list[list[int]]:
        opt = make_optimizer(name, DiscreteSpace(5, 30), seed=seed, batch_size=20,
                             population=20)
        out = []
        for _ in range(6):
            cands = opt.ask(20)
            opt.tell(cands, _mismatches([c.value for c in cands]))
            out += [c.value for c in cands]
        return out

    a, b = run(1), run(1)
    assert a == b and a != run(2)
    assert all(len(v) == 5 and all(0 <= x < 30 for x in v) for v in a)


def test_genetic_finds_a_planted_sequence_and_beats_random() -> None:
    results = {}
    for name, kw in (("genetic", {"population": 40}), ("random", {})):
        best = []
        for seed in range(3):
            opt = make_optimizer(name, DiscreteSpace(5, 30), seed=seed, batch_size=40, **kw)
            best.append(run_search(_mismatches, opt, max_trials=600, batch_size=40,
                                   progress=False).best_loss)
        results[name] = best
    assert results["genetic"] == [0.0, 0.0, 0.0]
    assert min(results["random"]) > 0


def test_genetic_children_are_new_and_come_from_the_elites() -> None:
    opt = make_optimizer("genetic", DiscreteSpace(5, 30), seed=0, batch_size=10,
                         population=10, elite=0.2, crossover=0.0)
    first = opt.ask(10)
    opt.tell(first, _mismatches([c.value for c in first]))
    elites = [tuple(v) for _, _, v in opt._elites]
    assert len(elites) == 2
    children = opt.ask(10)
    seen = {tuple(c.value) for c in first}
    for c in children:
        assert tuple(c.value) not in seen  # never a copy of something already asked
        # a mutant differs from some elite in at least one and usually few positions
        assert min(sum(a != b for a, b in zip(c.value, e, strict=True)) for e in elites) >= 1


def test_pso_improves_over_its_random_start() -> None:
    opt = make_optimizer("pso", DiscreteSpace(5, 30), seed=0, batch_size=40, population=40)
    res = run_search(_mismatches, opt, max_trials=opt.total_trials, batch_size=40,
                     progress=False)
    assert res.best_loss < min(res.history[:40])
    assert opt.total_trials == 40 * 31


@pytest.mark.parametrize("name", ["greedy", "genetic", "pso"])
def test_discrete_searchers_refuse_box_spaces_and_bad_options(name: str) -> None:
    with pytest.raises(BbxError, match="discrete"):
        make_optimizer(name, BoxSpace(dim=2), seed=0)
    with pytest.raises(BbxError, match="has no option 'popsize'"):
        make_optimizer(name, DiscreteSpace(2, 3), seed=0, popsize=3)


def test_searchers_resume_by_replay(tmp_path) -> None:
    # the loop rebuilds a searcher by replaying trials.jsonl: proposals must repeat exactly
    for name, kw, batch in (("genetic", {"population": 12}, 12), ("pso", {"population": 12}, 12),
                            ("greedy", {"blank": 9}, 9)):
        path = tmp_path / f"{name}.jsonl"
        full = run_search(_mismatches, make_optimizer(name, DiscreteSpace(5, 10), seed=4,
                                                      batch_size=batch, **kw),
                          max_trials=4 * batch, batch_size=batch, progress=False)
        run_search(_mismatches, make_optimizer(name, DiscreteSpace(5, 10), seed=4,
                                               batch_size=batch, **kw),
                   max_trials=2 * batch, batch_size=batch, trials_path=path, progress=False)
        resumed = run_search(_mismatches, make_optimizer(name, DiscreteSpace(5, 10), seed=4,
                                                         batch_size=batch, **kw),
                             max_trials=4 * batch, batch_size=batch, trials_path=path,
                             progress=False)
        assert resumed.n_replayed == 2 * batch
        assert resumed.history == full.history
