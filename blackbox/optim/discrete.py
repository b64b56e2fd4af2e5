"""Discrete searchers over a :class:`DiscreteSpace`: greedy, genetic and particle swarm.

They follow ClaPS's official code (cambridgeltl/ClaPS, ``algs/``) in the ask/tell form every
optimizer of bbx speaks, so that the one search loop owns budget, progress and
``trials.jsonl``:

* :class:`GreedySearch` — coordinate-wise: sweep every choice at position 0, keep the best,
  then position 1, ... With a ``blank`` choice (the "no token" index) the first pass is
  ClaPS's greedy: start from the empty prompt and append the best token ``length`` times.
* :class:`GeneticSearch` — elitist GA: a random population, then children of the top
  ``elite`` fraction, half by per-position mutation and half by uniform crossover.
* :class:`ParticleSwarm` — the discrete PSO ClaPS borrows from word-level attacks: each
  particle turns positions towards its own best and the swarm's best with sigmoid(velocity)
  probabilities, and mutates one position now and then.

All are seeded (one numpy ``Generator``), deterministic given what they are told, and never
pickle state, so a resumed search rebuilds them by replaying ``trials.jsonl``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from blackbox.errors import BbxError
from blackbox.optim.base import BaseOptimizer, Candidate, DiscreteSpace, Space


def _discrete(space: Space, name: str) -> DiscreteSpace:
    if not isinstance(space, DiscreteSpace):
        raise BbxError(f"optimizer '{name}' searches discrete spaces only (token sequences); "
                       "use cma, random or ng:<Name> for continuous ones")
    return space


def _fraction(name: str, value: float, lo_open: bool = False) -> float:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and (
        0 < value <= 1 if lo_open else 0 <= value <= 1)
    if not ok:
        raise BbxError(f"{name} must be a number in {'(0, 1]' if lo_open else '[0, 1]'}, "
                       f"got {value!r}")
    return float(value)


def _positive(name: str, value: Any, allow_none: bool = False) -> Any:
    if allow_none and value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise BbxError(f"{name} must be a positive integer, got {value!r}")
    return value


class GreedySearch(BaseOptimizer):
    """Coordinate-wise greedy search (ClaPS's greedy when ``blank`` is given).

    A *sweep* evaluates every choice at one position with the other positions fixed at the
    current best; when all of it is told, the position keeps its best choice and the next
    position is swept. One *pass* sweeps positions ``0..length-1``.

    ``blank`` is the index meaning "no token": the search starts from all-blank and the
    first pass never proposes blank, so sweep ``i`` appends the best ``i``-th token whatever
    it scores (the paper's "append the best token L times"). Later passes, and searches
    without a blank (which start from a seeded random sequence), only accept a change that
    lowers the loss. ``passes`` sets :attr:`total_trials`, the natural length of the search.

    ``ask(n)`` hands out at most ``n`` candidates *of the current sweep*: the next sweep's
    base is unknown until this one is told. Use a batch size that divides the sweep size
    (:attr:`sweep_size`) so each batch is exactly ``n`` (the search loop's replay expects it).
    """

    name = "greedy"

    def __init__(self, space: Space, seed: int, batch_size: int = 1, budget: int | None = None,
                 blank: int | None = None, passes: int = 1) -> None:
        super().__init__(space, seed, batch_size, budget)
        sp = _discrete(space, self.name)
        if blank is not None and not (isinstance(blank, int) and 0 <= blank < sp.n_choices):
            raise BbxError(f"greedy blank must be an index in 0..{sp.n_choices - 1}, got {blank!r}")
        if blank is not None and sp.n_choices < 2:
            raise BbxError("greedy with a blank needs at least one other choice")
        self.blank = blank
        self.passes = _positive("greedy passes", passes)
        self._rng = np.random.default_rng(self.seed)
        if blank is None:
            self._current = [int(v) for v in self._rng.integers(0, sp.n_choices, sp.length)]
        else:
            self._current = [blank] * sp.length
        self._current_loss = math.inf
        self._sweep_no = 0  # pass * length + position
        self._sweep: list[list[int]] = self._make_sweep()
        self._next = 0
        self._losses: dict[int, float] = {}

    @property
    def sweep_size(self) -> int:
        """Candidates per sweep (the same for every sweep): ``n_choices - 1``, or
        ``n_choices`` for the first pass of a search without a blank."""
        sp = self.space
        assert isinstance(sp, DiscreteSpace)
        return sp.n_choices - 1 if self.blank is not None else sp.n_choices

    @property
    def total_trials(self) -> int:
        """Trials in ``passes`` full passes."""
        sp = self.space
        assert isinstance(sp, DiscreteSpace)
        return self.passes * sp.length * self.sweep_size

    def _make_sweep(self) -> list[list[int]]:
        sp = self.space
        assert isinstance(sp, DiscreteSpace)
        pos = self._sweep_no % sp.length
        first_pass = self._sweep_no < sp.length
        if first_pass and self.blank is not None:
            choices = [v for v in range(sp.n_choices) if v != self.blank]
        elif first_pass:
            # the random start was never evaluated, so its own value is part of the sweep
            choices = list(range(sp.n_choices))
        else:
            choices = [v for v in range(sp.n_choices) if v != self._current[pos]]
        if self.blank is None and not first_pass:
            # every sweep keeps the same size so that batches stay aligned with sweeps; the
            # incumbent is re-proposed last (its answers are cached, so it costs no call)
            choices.append(self._current[pos])
        out = []
        for v in choices:
            value = list(self._current)
            value[pos] = v
            out.append(value)
        return out

    def _ask(self, n: int) -> list[Candidate]:
        if self._next >= len(self._sweep):
            raise RuntimeError("greedy: tell the current sweep before asking for more")
        end = min(self._next + n, len(self._sweep))
        out = [Candidate(list(self._sweep[j]), handle=(self._sweep_no, j))
               for j in range(self._next, end)]
        self._next = end
        return out

    def _tell(self, candidates: list[Candidate], losses: list[float]) -> None:
        for c, loss in zip(candidates, losses, strict=True):
            if not (isinstance(c.handle, tuple) and c.handle[0] == self._sweep_no):
                raise ValueError("greedy can only be told candidates of its current sweep")
            self._losses[c.handle[1]] = loss if math.isfinite(loss) else math.inf
        if len(self._losses) < len(self._sweep):
            return
        # the whole sweep is told: keep the best choice (first on ties), then move on
        best_j = min(range(len(self._sweep)), key=lambda j: (self._losses[j], j))
        best_loss = self._losses[best_j]
        sp = self.space
        assert isinstance(sp, DiscreteSpace)
        append = self.blank is not None and self._sweep_no < sp.length
        if append or best_loss < self._current_loss:
            self._current = list(self._sweep[best_j])
            self._current_loss = best_loss
        self._sweep_no += 1
        self._sweep = self._make_sweep()
        self._next = 0
        self._losses = {}

    def settings(self) -> dict[str, Any]:
        return {"optimizer": "greedy", "blank": self.blank, "passes": self.passes,
                "sweep_size": self.sweep_size, "current": list(self._current)}


class GeneticSearch(BaseOptimizer):
    """Elitist genetic algorithm (ClaPS defaults: population 128, top 10% survive, per-token
    mutation 0.1, half the children by crossover).

    The first ``population`` candidates asked are uniform random sequences. Every later one
    is a child of the *elites*, the ``round(elite * population)`` best distinct sequences
    told so far: with probability ``crossover`` a uniform crossover of two different elites
    (each position from either parent), otherwise a mutant of one elite (each position
    redrawn with probability ``mutation``). Deterministic losses make "top of everything told"
    the same as the paper's generational elitism, and let ``ask`` hand out any number of
    children without waiting for a generation boundary. Two deliberate departures, both to
    spend no budget on copies: a mutant that changed nothing gets one position redrawn, and a
    child equal to a sequence already asked is redrawn (up to ``retries`` times). The official
    code's "crossover" returns one parent whole; this one mixes positions.

    ``generations`` sets :attr:`total_trials` (``population * generations``, the paper: 30).
    """

    name = "genetic"

    def __init__(self, space: Space, seed: int, batch_size: int = 1, budget: int | None = None,
                 population: int = 128, elite: float = 0.1, mutation: float = 0.1,
                 crossover: float = 0.5, generations: int | None = 30,
                 retries: int = 20) -> None:
        super().__init__(space, seed, batch_size, budget)
        self.sp = _discrete(space, self.name)
        self.population = _positive("genetic population", population)
        self.elite = _fraction("genetic elite", elite, lo_open=True)
        self.mutation = _fraction("genetic mutation", mutation)
        self.crossover = _fraction("genetic crossover", crossover)
        self.generations = _positive("genetic generations", generations, allow_none=True)
        self.retries = max(0, int(retries))
        self.n_elite = max(1, round(self.elite * self.population))
        self._rng = np.random.default_rng(self.seed)
        self._asked: set[tuple[int, ...]] = set()
        self._elites: list[tuple[float, int, tuple[int, ...]]] = []  # (loss, order, value)
        self._n_random = 0
        self._n_seen = 0

    @property
    def total_trials(self) -> int | None:
        """``population * generations`` (None: no natural end)."""
        return None if self.generations is None else self.population * self.generations

    def _random(self) -> tuple[int, ...]:
        return tuple(int(v) for v in self._rng.integers(0, self.sp.n_choices, self.sp.length))

    def _mutant(self, parent: tuple[int, ...]) -> tuple[int, ...]:
        child = list(parent)
        n = self.sp.n_choices
        if n < 2:
            return tuple(child)
        hit = self._rng.random(len(child)) < self.mutation
        if not hit.any():
            hit[int(self._rng.integers(len(child)))] = True
        for i in np.flatnonzero(hit):
            # another choice than the parent's: draw from n-1 and skip over the current one
            v = int(self._rng.integers(n - 1))
            child[i] = v + 1 if v >= child[i] else v
        return tuple(child)

    def _child(self) -> tuple[int, ...]:
        if self._n_random < self.population or not self._elites:
            self._n_random += 1
            return self._random()
        elites = [e[2] for e in self._elites]
        if len(elites) >= 2 and self._rng.random() < self.crossover:
            i, j = self._rng.choice(len(elites), size=2, replace=False)
            take = self._rng.random(self.sp.length) < 0.5
            return tuple(a if t else b
                         for a, b, t in zip(elites[i], elites[j], take, strict=True))
        return self._mutant(elites[int(self._rng.integers(len(elites)))])

    def _ask(self, n: int) -> list[Candidate]:
        out: list[Candidate] = []
        for _ in range(n):
            child = self._child()
            for _ in range(self.retries):
                if child not in self._asked:
                    break
                child = self._child()
            self._asked.add(child)
            out.append(Candidate(list(child)))
        return out

    def _tell(self, candidates: list[Candidate], losses: list[float]) -> None:
        known = {e[2] for e in self._elites}
        for c, loss in zip(candidates, losses, strict=True):
            value = tuple(int(v) for v in c.value)
            self._n_seen += 1
            if math.isfinite(loss) and value not in known:
                self._elites.append((loss, self._n_seen, value))
                known.add(value)
        self._elites.sort()
        del self._elites[self.n_elite:]

    def settings(self) -> dict[str, Any]:
        return {"optimizer": "genetic", "population": self.population, "elite": self.elite,
                "n_elite": self.n_elite, "mutation": self.mutation, "crossover": self.crossover,
                "generations": self.generations}


class ParticleSwarm(BaseOptimizer):
    """Discrete particle swarm (ClaPS's ``particle_swarm.py``: population 128, 30 epochs).

    The first ``population`` candidates are the particles' random starting points. After that
    particles move in turn: each position's velocity ``v = w*v + (1-w)*(e(x, pbest) +
    e(x, gbest))`` (``e`` is -3 where they agree, +3 where they differ); with probability
    ``c1`` positions turn to the particle's own best, each with probability ``sigmoid(v)``,
    and with probability ``c2`` to the swarm's best. Inertia ``w`` falls from 0.8 to 0.2 over
    the ``epochs``, ``c1`` from 0.8 to 0.2, ``c2`` rises from 0.2 to 0.8. With probability
    ``mutation`` one random position is redrawn. The official code scores a particle after
    the move and again after a mutation; here the mutation comes before the one evaluation,
    which saves that second query.
    """

    name = "pso"

    def __init__(self, space: Space, seed: int, batch_size: int = 1, budget: int | None = None,
                 population: int = 128, epochs: int = 30, mutation: float = 0.1) -> None:
        super().__init__(space, seed, batch_size, budget)
        self.sp = _discrete(space, self.name)
        self.population = _positive("pso population", population)
        self.epochs = _positive("pso epochs", epochs)
        self.mutation = _fraction("pso mutation", mutation)
        self._rng = np.random.default_rng(self.seed)
        p, d = self.population, self.sp.length
        self._x = self._rng.integers(0, self.sp.n_choices, size=(p, d))
        self._v = np.repeat(self._rng.uniform(-3, 3, size=(p, 1)), d, axis=1)
        self._pbest = self._x.copy()
        self._pbest_loss = np.full(p, math.inf)
        self._gbest: np.ndarray | None = None
        self._gbest_loss = math.inf
        self._moves = 0

    @property
    def total_trials(self) -> int:
        """The starting points plus ``epochs`` moves of every particle."""
        return self.population * (1 + self.epochs)

    def _move(self, i: int, epoch: int) -> np.ndarray:
        frac = min(epoch, self.epochs) / self.epochs
        w = 0.2 + 0.6 * (1 - frac)
        c1, c2 = 0.8 - 0.6 * frac, 0.2 + 0.6 * frac
        x = self._x[i]
        gbest = self._gbest if self._gbest is not None else self._pbest[i]
        agree = (x == self._pbest[i]).astype(float) + (x == gbest).astype(float)
        # e() is -3 per agreement and +3 per disagreement, summed over the two guides
        self._v[i] = w * self._v[i] + (1 - w) * (3.0 * (2 - agree) - 3.0 * agree)
        turn = 1.0 / (1.0 + np.exp(-self._v[i]))
        x = x.copy()
        if self._rng.random() < c1:
            take = self._rng.random(x.size) < turn
            x[take] = self._pbest[i][take]
        if self._gbest is not None and self._rng.random() < c2:
            take = self._rng.random(x.size) < turn
            x[take] = self._gbest[take]
        if self._rng.random() < self.mutation:
            x[int(self._rng.integers(x.size))] = int(self._rng.integers(self.sp.n_choices))
        self._x[i] = x
        return x

    def _ask(self, n: int) -> list[Candidate]:
        out: list[Candidate] = []
        for _ in range(n):
            k = self.n_asked + len(out)
            i = k % self.population
            x = self._x[i] if k < self.population else self._move(i, k // self.population - 1)
            out.append(Candidate([int(v) for v in x], handle=i))
        return out

    def _tell(self, candidates: list[Candidate], losses: list[float]) -> None:
        for c, loss in zip(candidates, losses, strict=True):
            i = c.handle
            if not isinstance(i, int):
                raise ValueError("pso can only be told candidates it was asked for")
            if loss < self._pbest_loss[i]:  # False for NaN
                self._pbest[i] = np.asarray(c.value)
                self._pbest_loss[i] = loss
            if loss < self._gbest_loss:
                self._gbest = np.asarray(c.value)
                self._gbest_loss = loss

    def settings(self) -> dict[str, Any]:
        return {"optimizer": "pso", "population": self.population, "epochs": self.epochs,
                "mutation": self.mutation}
