"""Where bbx keeps things on disk: one cache root, overridable with ``BBX_CACHE_DIR``."""

from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    """``$BBX_CACHE_DIR``, else the platform's user cache dir for ``bbx``."""
    env = os.environ.get("BBX_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("bbx"))


def responses_dir() -> Path:
    """The default response cache shared by all runs (content-addressed, safe to share).

    ``$BBX_RESPONSES_DIR`` overrides it alone (tests use a fresh one; models stay cached).
    """
    env = os.environ.get("BBX_RESPONSES_DIR")
    return Path(env).expanduser() if env else cache_root() / "responses"


def zoo_dir(model_name: str) -> Path:
    """Where ``bbx zoo build`` puts the adapter zoo of a model: ``<cache>/zoo/<model name>``.

    A local backend given ``adapters: zoo`` reads this folder.
    """
    return cache_root() / "zoo" / model_name


def repo_root() -> Path | None:
    """The source checkout this package runs from, if it is one (for recipes/ and git)."""
    root = Path(__file__).resolve().parents[1]
    return root if (root / "pyproject.toml").is_file() else None


def portable(path: str | Path) -> str:
    """``path`` relative to the source checkout when it lies inside it, else as given.

    What a run writes into its files (recipe.yaml, summary.json) is committed for the result
    grids: a path inside the checkout is kept repo-relative there, so no machine's folder
    names end up in the repository.
    """
    root = repo_root()
    p = Path(path)
    if root is not None and p.is_absolute():
        try:
            return str(p.resolve().relative_to(root))
        except ValueError:
            pass
    return str(path)
