"""Uniform random search over either space: the baseline every method should beat."""

from __future__ import annotations

from typing import Any

import numpy as np

from blackbox.optim.base import BaseOptimizer, BoxSpace, Candidate, Space


class RandomSearch(BaseOptimizer):
    """Independent uniform samples from a seeded numpy ``Generator``.

    Box spaces sample each dimension uniformly in its bounds; discrete spaces pick every
    position uniformly. ``tell`` only updates the best-so-far.
    """

    name = "random"

    def __init__(self, space: Space, seed: int, batch_size: int = 1,
                 budget: int | None = None) -> None:
        super().__init__(space, seed, batch_size, budget)
        self._rng = np.random.default_rng(self.seed)

    def _ask(self, n: int) -> list[Candidate]:
        space = self.space
        if isinstance(space, BoxSpace):
            lo, hi = space.bounds
            xs = self._rng.uniform(lo, hi, size=(n, space.dim))
            return [Candidate([float(v) for v in x]) for x in xs]
        idx = self._rng.integers(0, space.n_choices, size=(n, space.length))
        return [Candidate([int(v) for v in row]) for row in idx]

    def _tell(self, candidates: list[Candidate], losses: list[float]) -> None:
        pass  # memoryless: the best-so-far lives in BaseOptimizer

    def settings(self) -> dict[str, Any]:
        return {"optimizer": "random"}
