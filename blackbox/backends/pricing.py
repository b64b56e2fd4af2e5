"""Dollars: a model's price per million tokens, and what a usage costs.

A recipe gives its backend's price as ``backend.pricing: {input_per_mtok, output_per_mtok}``
(US dollars per million prompt / completion tokens). Without it, a remote backend whose
``model`` is in :data:`EXAMPLE_PRICES` is priced from that table, and the run's notes say so.

:data:`EXAMPLE_PRICES` holds **example prices as of** :data:`EXAMPLE_PRICES_DATE`, copied
from the providers' published list prices (standard tier, no batch or cached-input
discounts). Prices change: override them with ``backend.pricing``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from blackbox.backends.usage import TokenUsage


@dataclass(frozen=True)
class Pricing:
    """US dollars per million prompt (input) and completion (output) tokens."""

    input_per_mtok: float
    output_per_mtok: float

    def usd(self, usage: TokenUsage) -> float:
        """What ``usage`` costs at these prices."""
        return (usage.prompt_tokens * self.input_per_mtok
                + usage.completion_tokens * self.output_per_mtok) / 1e6


#: When :data:`EXAMPLE_PRICES` was copied, and from where.
EXAMPLE_PRICES_DATE = "2025-06"
EXAMPLE_PRICES_SOURCE = "OpenAI's published list prices (standard tier)"

#: Example prices as of :data:`EXAMPLE_PRICES_DATE` (override with ``backend.pricing``).
EXAMPLE_PRICES: dict[str, Pricing] = {
    "gpt-4o": Pricing(2.50, 10.00),
    "gpt-4o-mini": Pricing(0.15, 0.60),
    "gpt-4.1": Pricing(2.00, 8.00),
    "gpt-4.1-mini": Pricing(0.40, 1.60),
    "gpt-4.1-nano": Pricing(0.10, 0.40),
}


def example_pricing(model: str | None) -> Pricing | None:
    """The example price of ``model`` (exact id), or ``None``."""
    return EXAMPLE_PRICES.get(model) if model else None


def example_note(model: str) -> str:
    """What a run's notes say when its prices came from the example table."""
    p = EXAMPLE_PRICES[model]
    return (f"priced from bbx's example table: {model} ${p.input_per_mtok:g} in / "
            f"${p.output_per_mtok:g} out per Mtok, {EXAMPLE_PRICES_SOURCE} as of "
            f"{EXAMPLE_PRICES_DATE}; override with backend.pricing")


def config_pricing(config: Any) -> tuple[Pricing | None, str | None]:
    """A recipe ``backend:`` section's price and, when it came from the example table, the
    note that says so: ``backend.pricing`` first, else a remote ``model`` in the table."""
    given = getattr(config, "pricing", None)
    if given is not None:
        return Pricing(float(given.input_per_mtok), float(given.output_per_mtok)), None
    model = getattr(config, "model", None) if getattr(config, "kind", None) == "remote" \
        else None
    found = example_pricing(model)
    return (found, example_note(str(model))) if found is not None else (None, None)
