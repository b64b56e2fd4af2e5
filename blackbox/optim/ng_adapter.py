"""Any nevergrad optimizer by name (``ng:NGOpt``, ``ng:CMA``, ``ng:DiscreteOnePlusOne``, ...).

Pinned versions matter here: nevergrad 1.0.12's NGOpt crashes or hangs with numpy 2.4 and
works with numpy 2.3 (``tests/test_optim.py`` guards that the pinned pair works).
"""

from __future__ import annotations

import difflib
import warnings
from typing import Any

import numpy as np

from blackbox.errors import BbxError
from blackbox.optim.base import BaseOptimizer, BoxSpace, Candidate, Space, tell_loss


def _registry() -> Any:
    import nevergrad as ng

    return ng.optimizers.registry


def check_ng_name(variant: str | None) -> str:
    """Validate a nevergrad optimizer name against ``nevergrad.optimizers.registry``."""
    if not variant:
        raise BbxError("name a nevergrad optimizer after 'ng:', e.g. 'ng:NGOpt', 'ng:CMA' "
                       "or 'ng:DiscreteOnePlusOne'")
    registry = _registry()
    if variant in registry:
        return variant
    # nevergrad registers hundreds of names: suggest the closest few, never list them all
    close = difflib.get_close_matches(variant, list(registry), n=3, cutoff=0.5)
    hint = (f" (did you mean {', '.join(repr('ng:' + c) for c in close)}?)" if close else
            " (see nevergrad.optimizers.registry; common: ng:NGOpt, ng:CMA, ng:PSO, "
            "ng:TwoPointsDE, ng:DiscreteOnePlusOne)")
    raise BbxError(f"unknown nevergrad optimizer '{variant}'{hint}")


class NevergradOptimizer(BaseOptimizer):
    """A nevergrad optimizer on a nevergrad parametrization of the space.

    * :class:`BoxSpace` → ``ng.p.Array(init=x0).set_bounds(lower, upper)`` with mutation
      ``sigma`` in value units;
    * :class:`DiscreteSpace` → ``ng.p.TransitionChoice(range(n_choices),
      repetitions=length)``: one integer-cast coordinate per position, which nevergrad's
      discrete optimizers mutate by jumping to another index. On planted-sequence toys (5
      positions, 30 choices, 400 evaluations) DiscreteOnePlusOne found the optimum in half
      the seeds with it and in none with ``ng.p.Choice`` (softmax weights per choice: argmax
      decoding re-proposed the same sequences, sampled decoding added noise).

    Seeded through the parametrization's ``random_state`` (no global random state).
    ``num_workers`` is the batch size so a whole population can be asked before any tell.
    """

    def __init__(
        self,
        space: Space,
        seed: int,
        batch_size: int = 1,
        budget: int | None = None,
        variant: str | None = None,
    ) -> None:
        super().__init__(space, seed, batch_size, budget)
        self.variant = check_ng_name(variant)
        self.name = f"ng:{self.variant}"
        import nevergrad as ng

        if isinstance(space, BoxSpace):
            lo, hi = space.bounds
            param: Any = ng.p.Array(init=np.asarray(space.x0, dtype=float))
            # sigma before bounds: set_bounds checks the bounds against the current sigma
            param.set_mutation(sigma=space.sigma)
            param.set_bounds(np.asarray(lo), np.asarray(hi))
        else:
            param = ng.p.TransitionChoice(range(space.n_choices), repetitions=space.length)
        # RandomState takes 32-bit seeds; fold larger ones rather than refusing them
        param.random_state = np.random.RandomState(self.seed % 2**32)
        self._param = param
        self._opt = _registry()[self.variant](parametrization=param, budget=budget,
                                              num_workers=batch_size)

    def _value(self, cand: Any) -> list[Any]:
        if isinstance(self.space, BoxSpace):
            return [float(v) for v in np.asarray(cand.value, dtype=float).ravel()]
        return [int(v) for v in cand.value]

    def _ask(self, n: int) -> list[Candidate]:
        out = []
        with warnings.catch_warnings():
            # sub-optimizers (cobyla, bobyqa, metamodels) warn at every step about internal
            # settings the user cannot act on; keep the run's output readable
            warnings.simplefilter("ignore")
            for _ in range(n):
                cand = self._opt.ask()
                out.append(Candidate(self._value(cand), handle=cand))
        return out

    def _tell(self, candidates: list[Candidate], losses: list[float]) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for c, loss in zip(candidates, losses, strict=True):
                if c.handle is None:
                    raise ValueError("nevergrad can only be told candidates it was asked for")
                self._opt.tell(c.handle, tell_loss(loss))

    def settings(self) -> dict[str, Any]:
        out: dict[str, Any] = {"optimizer": self.name, "num_workers": self.batch_size}
        # NGOpt and other wizards pick a sub-optimizer: record which one actually ran
        chosen = getattr(self._opt, "optim", None)
        if chosen is not None:
            out["chosen"] = getattr(chosen, "name", type(chosen).__name__)
        return out
