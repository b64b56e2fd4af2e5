"""Errors a user can act on.

Anything raised as :class:`BbxError` is the user's input being wrong (a misspelled task, a
missing folder, ...). The CLI prints its one-line message and exits with code 2; no
traceback. Everything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class BbxError(Exception):
    """A problem with the user's input: the message names the problem and the fix."""

    exit_code = 2


class BudgetExceeded(BbxError):
    """A backend call would exceed the run's query or token budget.

    Raised *before* the call is made, so nothing over budget is ever paid for. The search
    loop catches it and stops with the best result so far.
    """


class UnknownAdapter(BbxError):
    """A request named an adapter the repository does not hold (a server answers 404)."""


def did_you_mean(name: str, choices: list[str] | tuple[str, ...]) -> str:
    """Return ``" (did you mean 'x'?)"`` for the closest choice, or a list of choices."""
    import difflib

    close = difflib.get_close_matches(name, list(choices), n=1)
    if close:
        return f" (did you mean '{close[0]}'?)"
    return f" (choose from: {', '.join(sorted(choices))})"
