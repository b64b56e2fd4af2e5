"""The optimizer layer: search spaces, the ask/tell protocol, adapters and the one loop.

Importing this package is cheap: nevergrad and cma load inside their adapters, on first use.

>>> space = BoxSpace(dim=3, lower=0.0, upper=1.0)
>>> opt = make_optimizer("random", space, seed=0, batch_size=4)
>>> result = run_search(lambda xs: [sum(x) for x in xs], opt, max_trials=8, batch_size=4,
...                     progress=False)
>>> result.n_trials
8
"""

from blackbox.optim.base import (
    BaseOptimizer,
    BoxSpace,
    Candidate,
    DiscreteSpace,
    Optimizer,
    Space,
    Value,
)
from blackbox.optim.loop import SearchResult, run_search
from blackbox.optim.registry import OPTIMIZERS, make_optimizer, optimizer_names

__all__ = [
    "OPTIMIZERS",
    "BaseOptimizer",
    "BoxSpace",
    "Candidate",
    "DiscreteSpace",
    "Optimizer",
    "SearchResult",
    "Space",
    "Value",
    "make_optimizer",
    "optimizer_names",
    "run_search",
]
