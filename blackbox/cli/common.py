"""Rendering shared by the CLI commands."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer


def console(stderr: bool = False) -> Any:
    """A rich console on stdout (or stderr, where progress and messages go)."""
    from rich.console import Console

    return Console(stderr=stderr)


def render_summary(summary: dict[str, Any], run_dir: Path | str | None = None) -> None:
    """A two-column rich table of a run's summary."""
    from rich.table import Table

    table = Table(title=f"bbx {summary.get('method', 'run')}", show_header=True)
    table.add_column("field")
    table.add_column("value", overflow="fold")
    for key, value in summary.items():
        if isinstance(value, float):
            value = f"{value:.4f}"
        elif isinstance(value, dict):
            value = ", ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}"
                              for k, v in value.items())
        table.add_row(key, str(value))
    if run_dir is not None:
        table.add_row("run_dir", str(run_dir))
    console().print(table)


def emit(summary: dict[str, Any], run_dir: Path | str | None, json_out: bool) -> None:
    """Print a summary as a table, or as JSON with ``--json``."""
    if json_out:
        import json

        typer.echo(json.dumps({**summary, "run_dir": str(run_dir)}, indent=2, default=str))
    else:
        render_summary(summary, run_dir)


