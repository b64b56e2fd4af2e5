"""Shared fixtures: every test gets its own cache and output folders (never the user's)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch,
                    request: pytest.FixtureRequest) -> None:
    # Slow tests share the real model cache (converting the GGUF once per session is enough);
    # response caches are always per test so nothing leaks between tests.
    if "slow" not in request.keywords and "BBX_TEST_KEEP_CACHE" not in os.environ:
        monkeypatch.setenv("BBX_RESPONSES_DIR", str(tmp_path_factory.mktemp("responses")))


def bbx(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None):
    """Run the CLI in a subprocess the way a user does; returns CompletedProcess."""
    import subprocess

    full_env = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-m", "blackbox.cli.main", *args], capture_output=True,
                          text=True, env=full_env, cwd=cwd or REPO, timeout=600)
