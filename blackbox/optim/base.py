"""Search spaces and the ask/tell protocol every optimizer speaks.

An optimizer proposes :class:`Candidate` s with ``ask(n)``, the caller evaluates them (one
batched backend call for the whole batch) and reports their losses with ``tell``. Loss is
always MINIMIZED. ``recommend()`` is the best candidate seen so far (lowest told loss), not a
model's guess, so that a reported best is always something that was actually evaluated.

This module imports no optimizer library: the adapters import nevergrad / cma themselves.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from blackbox.errors import BbxError

Value = list[float] | list[int]

# What an adapter tells its library in place of a NaN/inf loss (a failed evaluation): large
# enough to lose against any real loss, small enough not to trip nevergrad's clipping warning
# (5e20) or overflow cma's ranking arithmetic.
FAILED_LOSS = 1e20


def _per_dim(name: str, raw: float | Sequence[float], dim: int) -> tuple[float, ...]:
    if isinstance(raw, (int, float)):
        vals = (float(raw),) * dim
    else:
        vals = tuple(float(v) for v in raw)
        if len(vals) != dim:
            raise BbxError(f"BoxSpace {name} has {len(vals)} values for dim={dim}")
    if not all(math.isfinite(v) for v in vals):
        raise BbxError(f"BoxSpace {name} must be finite numbers, got {list(vals)}")
    return vals


@dataclass(frozen=True)
class BoxSpace:
    """A continuous vector of ``dim`` values, each in ``[lower, upper]``.

    ``lower``/``upper``/``init`` are scalars or one value per dimension (normalized to
    tuples); ``init`` defaults to the centre of the box. ``sigma`` is the initial step size in
    value units (cma's sigma0, nevergrad's mutation sigma).
    """

    dim: int
    lower: float | Sequence[float] = 0.0
    upper: float | Sequence[float] = 1.0
    init: float | Sequence[float] | None = None
    sigma: float = 0.1

    def __post_init__(self) -> None:
        if not isinstance(self.dim, int) or self.dim < 1:
            raise BbxError(f"BoxSpace dim must be a positive integer, got {self.dim!r}")
        lo = _per_dim("lower", self.lower, self.dim)
        hi = _per_dim("upper", self.upper, self.dim)
        if any(a >= b for a, b in zip(lo, hi, strict=True)):
            raise BbxError(f"BoxSpace needs lower < upper in every dimension: {lo} vs {hi}")
        if self.init is None:
            x0 = tuple((a + b) / 2 for a, b in zip(lo, hi, strict=True))
        else:
            x0 = _per_dim("init", self.init, self.dim)
        if any(not a <= x <= b for a, x, b in zip(lo, x0, hi, strict=True)):
            raise BbxError(f"BoxSpace init {list(x0)} is outside the bounds")
        if not (isinstance(self.sigma, (int, float)) and math.isfinite(self.sigma)
                and self.sigma > 0):
            raise BbxError(f"BoxSpace sigma must be a positive number, got {self.sigma!r}")
        # frozen dataclass: normalize in place once so every reader sees per-dim tuples
        object.__setattr__(self, "lower", lo)
        object.__setattr__(self, "upper", hi)
        object.__setattr__(self, "init", x0)
        object.__setattr__(self, "sigma", float(self.sigma))

    @property
    def bounds(self) -> tuple[list[float], list[float]]:
        """``(lower, upper)`` as per-dimension lists."""
        return list(self.lower), list(self.upper)  # type: ignore[arg-type]

    @property
    def x0(self) -> list[float]:
        """The starting point as a list."""
        return list(self.init)  # type: ignore[arg-type]

    def describe(self) -> dict[str, Any]:
        """A JSON-ready summary (for state dicts and manifests)."""
        return {"type": "box", "dim": self.dim, "lower": list(self.lower),  # type: ignore[arg-type]
                "upper": list(self.upper), "init": self.x0,  # type: ignore[arg-type]
                "sigma": self.sigma}


@dataclass(frozen=True)
class DiscreteSpace:
    """``length`` positions, each picking an index in ``range(n_choices)``.

    For discrete prompt search: position *i* picks one of ``n_choices`` vocabulary entries.
    """

    length: int
    n_choices: int

    def __post_init__(self) -> None:
        for name in ("length", "n_choices"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise BbxError(f"DiscreteSpace {name} must be a positive integer, got {v!r}")

    def describe(self) -> dict[str, Any]:
        """A JSON-ready summary (for state dicts and manifests)."""
        return {"type": "discrete", "length": self.length, "n_choices": self.n_choices}


Space = BoxSpace | DiscreteSpace


@dataclass
class Candidate:
    """One proposed point: its ``value`` plus an opaque ``handle`` the adapter needs back.

    ``value`` is a list of floats (:class:`BoxSpace`) or of ints (:class:`DiscreteSpace`).
    Callers must pass the same Candidate objects they were asked to ``tell``.
    """

    value: Value
    handle: Any = field(default=None, repr=False, compare=False)


@runtime_checkable
class Optimizer(Protocol):
    """The ask/tell protocol. Loss is always minimized."""

    name: str
    space: Space

    def ask(self, n: int) -> list[Candidate]:
        """Propose ``n`` candidates to be evaluated together (one batch)."""
        ...

    def tell(self, candidates: Sequence[Candidate], losses: Sequence[float]) -> None:
        """Report the losses of candidates returned by :meth:`ask`."""
        ...

    def recommend(self) -> Candidate:
        """The best candidate told so far (lowest loss)."""
        ...

    def state_dict(self) -> dict[str, Any]:
        """A JSON-ready summary: name, n told, best loss/value, settings."""
        ...


def check_seed(seed: int) -> int:
    """Seeds are non-negative ints (numpy's generators refuse negatives)."""
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise BbxError(f"optimizer seed must be a non-negative integer, got {seed!r}")
    return seed


def tell_loss(loss: float) -> float:
    """The loss an adapter hands its library: non-finite (a failed trial) → FAILED_LOSS."""
    loss = float(loss)
    return loss if math.isfinite(loss) else FAILED_LOSS


class BaseOptimizer:
    """Shared bookkeeping for the adapters: best-so-far, tell count, state dict.

    Subclasses implement ``_ask(n)``, ``_tell(candidates, losses)`` and ``settings()``.
    """

    name: str = "base"

    def __init__(self, space: Space, seed: int, batch_size: int = 1,
                 budget: int | None = None) -> None:
        if not isinstance(space, (BoxSpace, DiscreteSpace)):
            raise BbxError(f"unsupported search space {type(space).__name__}")
        if batch_size < 1:
            raise BbxError(f"batch_size must be >= 1, got {batch_size}")
        if budget is not None and budget < 1:
            raise BbxError(f"budget must be >= 1 or unset, got {budget}")
        self.space = space
        self.seed = check_seed(seed)
        self.batch_size = batch_size
        self.budget = budget
        self.n_asked = 0
        self.n_told = 0
        self._best: Candidate | None = None
        self._best_loss = math.inf

    def ask(self, n: int) -> list[Candidate]:
        """Propose ``n`` candidates (see :class:`Optimizer`)."""
        if n < 1:
            raise ValueError(f"ask needs n >= 1, got {n}")
        out = self._ask(n)
        self.n_asked += len(out)
        return out

    def tell(self, candidates: Sequence[Candidate], losses: Sequence[float]) -> None:
        """Report losses for asked candidates (see :class:`Optimizer`)."""
        if len(candidates) != len(losses):
            raise ValueError(f"tell got {len(candidates)} candidates and {len(losses)} losses")
        losses = [float(v) for v in losses]
        for c, loss in zip(candidates, losses, strict=True):
            # `<` is False for NaN, so a failed trial never becomes the best
            if loss < self._best_loss:
                self._best, self._best_loss = c, loss
        self.n_told += len(candidates)
        self._tell(list(candidates), losses)

    def recommend(self) -> Candidate:
        """The lowest-loss candidate told so far; an error before any finite loss."""
        if self._best is None:
            raise RuntimeError(f"optimizer '{self.name}' has no finite loss told yet")
        return self._best

    def settings(self) -> dict[str, Any]:
        """Adapter-specific settings for :meth:`state_dict`."""
        return {}

    def state_dict(self) -> dict[str, Any]:
        """A JSON-ready summary (see :class:`Optimizer`)."""
        return {
            "name": self.name,
            "n_asked": self.n_asked,
            "n_told": self.n_told,
            "best_loss": self._best_loss if self._best is not None else None,
            "best_value": list(self._best.value) if self._best is not None else None,
            "settings": {"seed": self.seed, "batch_size": self.batch_size,
                         "budget": self.budget, "space": self.space.describe(),
                         **self.settings()},
        }

    def _ask(self, n: int) -> list[Candidate]:
        raise NotImplementedError

    def _tell(self, candidates: list[Candidate], losses: list[float]) -> None:
        raise NotImplementedError
