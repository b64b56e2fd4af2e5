"""Name → implementation registries with lazy ``"module:attr"`` (or ``"module"``) targets.

Registering a target never imports it, so listing optimizers or backends costs nothing.
Third-party packages plug in through entry points (groups ``bbx.optimizers``,
``bbx.backends``, ``bbx.methods``); a name registered twice is an error, not a silent override.
"""

from __future__ import annotations

import importlib
from importlib.metadata import entry_points
from typing import Any

from blackbox.errors import BbxError, did_you_mean


class Registry:
    """A named set of lazily imported implementations."""

    def __init__(self, kind: str, group: str) -> None:
        self.kind = kind
        self.group = group
        self._targets: dict[str, str] = {}
        self._entry_points_loaded = False

    def register(self, name: str, target: str) -> None:
        """Register ``name`` → ``"module:attr"``; a collision raises ``ValueError``."""
        if name in self._targets and self._targets[name] != target:
            raise ValueError(
                f"{self.kind} name '{name}' is registered twice: "
                f"{self._targets[name]} and {target}"
            )
        self._targets[name] = target

    def _load_entry_points(self) -> None:
        if self._entry_points_loaded:
            return
        self._entry_points_loaded = True
        for ep in entry_points(group=self.group):
            self.register(ep.name, ep.value)

    def names(self) -> list[str]:
        """All registered names, sorted."""
        self._load_entry_points()
        return sorted(self._targets)

    def target(self, name: str) -> str:
        """The ``"module:attr"`` string for ``name``; unknown names are a user error."""
        self._load_entry_points()
        if name not in self._targets:
            raise BbxError(f"unknown {self.kind} '{name}'{did_you_mean(name, self.names())}")
        return self._targets[name]

    def get(self, name: str) -> Any:
        """Import and return the implementation registered as ``name``."""
        module, _, attr = self.target(name).partition(":")
        obj: Any = importlib.import_module(module)
        for part in filter(None, attr.split(".")):
            obj = getattr(obj, part)
        return obj

    def __contains__(self, name: str) -> bool:
        self._load_entry_points()
        return name in self._targets
