"""The optimizer registry and :func:`make_optimizer`.

Names are ``family`` or ``family:variant``: ``random``, ``cma``, ``ng:NGOpt``. A family is a
registered factory called as ``factory(space, seed=..., batch_size=..., budget=...,
[variant=...], **options)``; plugins add families through the ``bbx.optimizers`` entry point
group. Registering never imports the target, so this module stays cheap to import.
"""

from __future__ import annotations

import inspect
from typing import Any

from blackbox.errors import BbxError, did_you_mean
from blackbox.optim.base import Optimizer, Space
from blackbox.registry import Registry

OPTIMIZERS = Registry("optimizer", "bbx.optimizers")
OPTIMIZERS.register("random", "blackbox.optim.random_search:RandomSearch")
OPTIMIZERS.register("cma", "blackbox.optim.cma_adapter:CMAOptimizer")
OPTIMIZERS.register("ng", "blackbox.optim.ng_adapter:NevergradOptimizer")
OPTIMIZERS.register("greedy", "blackbox.optim.discrete:GreedySearch")
OPTIMIZERS.register("genetic", "blackbox.optim.discrete:GeneticSearch")
OPTIMIZERS.register("pso", "blackbox.optim.discrete:ParticleSwarm")

# Shown in "did you mean" hints next to the registered families, so that a bare "NGOpt" or a
# typo like "ng:NGopt" points at the spelling that works.
_EXAMPLES = ("ng:NGOpt", "ng:CMA", "ng:DiscreteOnePlusOne", "ng:PSO", "ng:TwoPointsDE",
             "ng:OnePlusOne")


def optimizer_names() -> list[str]:
    """Registered optimizer families plus common ``ng:<Name>`` examples."""
    return [n for n in OPTIMIZERS.names() if n != "ng"] + list(_EXAMPLES)


def make_optimizer(
    name: str,
    space: Space,
    seed: int,
    batch_size: int = 1,
    budget: int | None = None,
    **options: Any,
) -> Optimizer:
    """Build the optimizer called ``name`` over ``space``.

    ``batch_size`` is how many candidates each ``ask`` hands out (nevergrad's num_workers,
    cma's default popsize); ``budget`` the total number of evaluations planned, if known
    (nevergrad's wizards pick sub-optimizers from it). ``options`` are adapter-specific
    (cma: ``popsize``, ``sigma0``, ``cma_options``). Unknown names and options are a
    :class:`BbxError` with a one-line hint.
    """
    family, sep, variant = name.partition(":")
    if family not in OPTIMIZERS:
        raise BbxError(f"unknown optimizer '{name}'{did_you_mean(name, optimizer_names())}")
    factory = OPTIMIZERS.get(family)
    params = inspect.signature(factory).parameters
    takes_variant = "variant" in params
    if sep and not takes_variant:
        raise BbxError(f"optimizer '{family}' takes no ':<variant>' (got '{name}')")
    if takes_variant:
        options["variant"] = variant or None
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        known = [p for p in params if p not in ("self", "space", "seed", "batch_size",
                                                 "budget", "variant")]
        for key in options:
            if key not in params:
                hint = did_you_mean(key, known) if known else " (it takes no options)"
                raise BbxError(f"optimizer '{family}' has no option '{key}'{hint}")
    return factory(space, seed=seed, batch_size=batch_size, budget=budget, **options)
