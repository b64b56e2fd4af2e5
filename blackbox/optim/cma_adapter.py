"""CMA-ES from the ``cma`` package, behind the ask/tell protocol.

Evo-Merging's setting is ``x0 = 1.0`` per coordinate, ``sigma0 = 0.05``, ``popsize = 20``,
bounds ``[0, 1]`` (keep-fractions) and ``[-1.5, 1.5]`` (scales): a :class:`BoxSpace` with
``init=1.0, sigma=0.05`` and ``make_optimizer("cma", space, seed, batch_size=20)``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from blackbox.errors import BbxError
from blackbox.optim.base import BaseOptimizer, BoxSpace, Candidate, Space, tell_loss


class CMAOptimizer(BaseOptimizer):
    """``cma.CMAEvolutionStrategy`` with bounds, a fixed popsize and a private RNG.

    Randomness: cma samples through its ``randn`` option, which we point at a numpy
    ``Generator`` seeded with ``seed``. cma's own ``seed`` option only reseeds numpy's
    *global* state (and treats seed 0 as "seed from the clock"), so it is left unused: runs
    are reproducible for every seed including 0, and nothing else that draws from
    ``np.random`` can shift our samples (which would break resume-by-replay).

    Batches and generations: a generation is split into batches, so ``popsize`` must be a
    multiple of ``batch_size`` (by default they are equal: one batch is one generation; with
    ``batch_size=1`` popsize is cma's default ``4 + 3 ln(dim)``). cma is updated when the
    last loss of a generation is told; it allows exactly one tell per ask, so the next
    generation is only sampled after that.
    """

    name = "cma"

    def __init__(
        self,
        space: Space,
        seed: int,
        batch_size: int = 1,
        budget: int | None = None,
        popsize: int | None = None,
        sigma0: float | None = None,
        cma_options: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(space, seed, batch_size, budget)
        if not isinstance(space, BoxSpace):
            raise BbxError("optimizer 'cma' searches a continuous box; for a discrete space "
                           "use 'ng:DiscreteOnePlusOne' or 'random'")
        import cma

        # a batch of 1 would make a population of 1: fall back to cma's own default then
        default_pop = batch_size if batch_size >= 2 else 4 + int(3 * math.log(space.dim))
        self.popsize = int(popsize or default_pop)
        if self.popsize < 2:
            raise BbxError(f"cma popsize must be >= 2, got {self.popsize}")
        if self.popsize % batch_size:
            raise BbxError(f"cma popsize ({self.popsize}) must be a multiple of batch_size "
                           f"({batch_size}); the simplest is batch_size = popsize")
        self.sigma0 = float(sigma0 if sigma0 is not None else space.sigma)
        if not (math.isfinite(self.sigma0) and self.sigma0 > 0):
            raise BbxError(f"cma sigma0 must be a positive number, got {self.sigma0}")
        self._rng = np.random.default_rng(self.seed)
        rng = self._rng
        opts: dict[str, Any] = {
            "bounds": list(space.bounds),
            "popsize": self.popsize,
            "seed": math.nan,  # see class docstring: sampling goes through `randn`
            "randn": lambda *shape: rng.standard_normal(shape),
            "verbose": -9,
        }
        user_opts = dict(cma_options or {})
        clash = {"bounds", "popsize", "seed", "randn"} & set(user_opts)
        if clash:
            raise BbxError(f"cma_options may not set {sorted(clash)}: use the space, "
                           "batch_size/popsize and seed instead")
        opts.update(user_opts)
        try:
            self._es = cma.CMAEvolutionStrategy(space.x0, self.sigma0, opts)
        except ValueError as exc:  # cma rejects unknown option names with ValueError
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise BbxError(f"cma rejected its options: {first} (see cma.CMAOptions())") from exc
        self._gen: list[np.ndarray] = []  # the current generation, as cma sampled it
        self._next = 0  # how many of it have been handed out
        self._told_x: list[np.ndarray] = []  # told so far in this generation
        self._told_f: list[float] = []
        self.generations = 0

    def _ask(self, n: int) -> list[Candidate]:
        out = []
        for _ in range(n):
            if self._next == len(self._gen):
                if self._gen and len(self._told_x) < len(self._gen):
                    raise RuntimeError("cma: tell the whole generation before asking for more "
                                       "(popsize must be a multiple of the batch size)")
                self._gen, self._next = list(self._es.ask()), 0
            x = self._gen[self._next]
            self._next += 1
            out.append(Candidate([float(v) for v in x], handle=x))
        return out

    def _tell(self, candidates: list[Candidate], losses: list[float]) -> None:
        for c, loss in zip(candidates, losses, strict=True):
            if c.handle is None:
                raise ValueError("cma can only be told candidates it was asked for")
            self._told_x.append(c.handle)
            self._told_f.append(tell_loss(loss))
        if len(self._told_x) > len(self._gen):
            raise RuntimeError("cma was told more candidates than it handed out")
        if self._gen and len(self._told_x) == len(self._gen):
            self._es.tell(self._told_x, self._told_f)
            self._told_x, self._told_f = [], []
            self._gen, self._next = [], 0
            self.generations += 1

    def settings(self) -> dict[str, Any]:
        return {
            "optimizer": "cma",
            "popsize": self.popsize,
            "sigma0": self.sigma0,
            "generations": self.generations,
            "sigma": float(self._es.sigma),
            "stop": {k: str(v) for k, v in self._es.stop().items()},
        }
