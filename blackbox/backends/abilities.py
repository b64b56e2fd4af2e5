"""The optional abilities a backend may have beyond the six verbs, one contract each.

Every ability is a :class:`~blackbox.backends.base.Capabilities` flag plus the methods it
promises (one small Protocol below). A backend sets the flag only when it implements the
methods; callers test the flag (never ``hasattr`` or the backend's class), so that a new
backend declares what it can do in one place, and every call still goes through the
metered wrapper, which forwards each ability (see
:class:`~blackbox.backends.metered.MeteredBackend`).

=================  ==================================================  ======================
flag               methods                                             who needs it
=================  ==================================================  ======================
vocabulary         ``vocabulary()``: token texts, index = token id     ClaPS tokenizer
                                                                       candidates, MPD
                                                                       neighbours
token_embeddings   ``token_embeddings(which)``: ``(V, d)`` table       ClaPS ``embeddings:
                                                                       input``, MPD
adapters           ``adapter=`` on the verbs, ``list_adapters()``      merge
rows               ``label_logprobs_rows(prompts, words, adapters)``   merge (speed only)
materialize        ``materialize_adapter(name, adapter)``              merge ``materialize``
repository         ``adapter_repository()``                            merge ``ties``/``dare``,
                                                                       ``materialize``, the
                                                                       adapter leak check
engine             ``engine``, ``locked()``, ``call_rows(...)``,       ``bbx serve`` token
                   ``model_source()``                                  routes; merge
                                                                       ``ties``/``dare``
=================  ==================================================  ======================

A method states what it needs as :class:`Need` rows (its recipe class's
:attr:`~blackbox.recipes.schema.RecipeBase.needs`, plus what the recipe's options add in
:meth:`~blackbox.recipes.schema.RecipeBase.abilities_needed`); :func:`check_needs` refuses
a recipe whose backend lacks one before anything is paid, naming the ability and the
fallback (``api.run_recipe`` calls it).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from blackbox.backends.base import Adapter
from blackbox.errors import BbxError

#: Ability name (a Capabilities flag) -> what it is, for error messages and docs.
ABILITIES: dict[str, str] = {
    "vocabulary": "a token list (vocabulary(): token texts, index = token id)",
    "token_embeddings": "token-embedding tables (token_embeddings('input' | 'output'))",
    "adapters": "an adapter repository (adapter= on every verb, list_adapters())",
    "rows": "per-row adapters in shared passes (label_logprobs_rows)",
    "materialize": "saving a mixture as a server-side adapter (materialize_adapter)",
    "repository": "white-box access to the adapters' weights (adapter_repository())",
    "engine": "an in-process engine with token-level access and the model's files (engine, "
              "locked(), call_rows(), model_source())",
}


@runtime_checkable
class HasVocabulary(Protocol):
    """``capabilities.vocabulary``: the tokenizer's pieces. Free metadata, not a query."""

    def vocabulary(self) -> list[str]:
        """Every token's text, index = token id (``" positive"``, not ``"Ġpositive"``)."""
        ...


@runtime_checkable
class HasTokenEmbeddings(Protocol):
    """``capabilities.token_embeddings``: the embedding tables (weights, not a query)."""

    def token_embeddings(self, which: str = "output") -> Any:
        """The ``(V, d)`` input- or output-embedding matrix (float32 array), row = token id."""
        ...


@runtime_checkable
class HasAdapters(Protocol):
    """``capabilities.adapters``: every verb takes ``adapter=``; the names can be listed."""

    def list_adapters(self) -> list[str]:
        """Names of the adapters requests may name (sorted)."""
        ...


@runtime_checkable
class HasRows(Protocol):
    """``capabilities.rows``: one call with its own adapter per prompt, answered in shared
    forward passes (without it the metered wrapper calls once per distinct adapter)."""

    def label_logprobs_rows(self, prompts: Sequence[str], label_words: Sequence[str],
                            adapters: Sequence[Adapter]) -> list[list[float]]:
        """:meth:`label_logprobs` with ``adapters[i]`` for ``prompts[i]``."""
        ...


@runtime_checkable
class HasMaterialize(Protocol):
    """``capabilities.materialize``: the server saves a mixture as a new adapter."""

    def materialize_adapter(self, name: str, adapter: Adapter) -> dict[str, Any]:
        """Save ``adapter`` (a mixture) as adapter ``name`` where the backend serves it."""
        ...


@runtime_checkable
class HasRepository(Protocol):
    """``capabilities.repository``: white-box access where the weights are (a local backend
    holding the adapter folder): what TIES/DARE and writing a PEFT adapter read."""

    def adapter_repository(self) -> Any:
        """The :class:`~blackbox.engine.adapters.AdapterRepository` (paths, factors, load)."""
        ...


@runtime_checkable
class HasEngine(Protocol):
    """``capabilities.engine``: the in-process engine, for the serving layer's token-level
    routes (logprobs, echo, tokenize, chat templates) and its decode scheduler, and the
    model's files (what white-box merges load)."""

    @property
    def engine(self) -> Any:
        """The loaded :class:`~blackbox.engine.runtime.Engine`."""
        ...

    def locked(self) -> AbstractContextManager[Any]:
        """Hold the model for several calls in a row (yields the engine)."""
        ...

    def call_rows(self, verb: Any, args: tuple[Any, ...], adapters: Sequence[Adapter],
                  **kwargs: Any) -> Any:
        """One engine verb with its own adapter per prompt, in shared forward passes."""
        ...

    def model_source(self) -> Any:
        """The model's files (a :class:`~blackbox.engine.loader.ModelSource`: its name, and
        the folder TIES/DARE load the base model from)."""
        ...


def has(backend: Any, ability: str) -> bool:
    """Whether ``backend`` declares ``ability`` (a :data:`ABILITIES` name, or a verb flag
    such as ``label_logprobs``, ``hidden`` or ``embed``: ``"none"`` and ``False`` are no)."""
    value = getattr(backend.capabilities, ability)
    return value not in (False, None, "none")


def require(backend: Any, ability: str, fallback: str = "") -> None:
    """Raise a one-line :class:`BbxError` naming ``ability`` if ``backend`` lacks it."""
    if not has(backend, ability):
        what = ABILITIES.get(ability, ability)
        tail = f": {fallback}" if fallback else ""
        raise BbxError(f"backend '{backend.name}' has no {ability} ability ({what}){tail}")


@dataclass(frozen=True)
class Need:
    """One ability a method needs: ``ability`` (or any one of several), what for, and what
    the user can do instead (the fallback the error message names)."""

    ability: str | tuple[str, ...]
    purpose: str
    fallback: str

    @property
    def options(self) -> tuple[str, ...]:
        """The abilities any one of which meets this need."""
        return (self.ability,) if isinstance(self.ability, str) else self.ability


#: What every method needs beyond its options: label-word scores (ClaPS's reward, merge's
#: loss, MPD's class scores, LMTurk's workers, eval's predictions).
LABEL_SCORES = Need("label_logprobs", "label-word scores",
                    "use a backend that answers label_logprobs (log-probs, top-k, or "
                    "label_logprobs: generate on a remote one)")


def check_needs(method: str, needs: Iterable[Need], backend: Any) -> None:
    """Refuse (one-line :class:`BbxError`, exit code 2) the first need ``backend`` lacks:
    ``"<method> needs <ability> (<purpose>); backend '<name>' has none: <fallback>"``."""
    for need in needs:
        if not any(has(backend, a) for a in need.options):
            names = " or ".join(need.options)
            raise BbxError(f"{method} needs {names} ({need.purpose}); backend "
                           f"'{backend.name}' has none: {need.fallback}")
