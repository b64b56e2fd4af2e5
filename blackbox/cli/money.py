"""Rendering what a run will pay (``--dry-run``) and what it paid (``bbx report``)."""

from __future__ import annotations

from typing import Any

from blackbox.cli.common import console


def _usd(v: Any) -> str:
    return "-" if v is None else f"${v:,.4f}"


def show_dry_run(recipe: Any, overrides: list[str] | None, json_out: bool) -> None:
    """Project ``recipe`` (a path, a mapping or a validated recipe) and print it: a table,
    or JSON with ``--json``. Nothing is paid."""
    import json

    import typer

    from blackbox.dryrun import dry_run

    plan = dry_run(recipe, overrides=overrides)
    if json_out:
        typer.echo(json.dumps(plan, indent=2))
    else:
        render_dry_run(plan)


def render_dry_run(plan: dict[str, Any]) -> None:
    """One table: per step and stage, projected queries, tokens in / out and dollars."""
    from rich.table import Table

    table = Table(title="bbx dry run: projected on an empty cache, nothing paid")
    for col in ("step", "stage", "verb", "queries", "tokens in", "tokens out", "USD"):
        table.add_column(col, overflow="fold")
    for s in plan["steps"]:
        for r in s["stages"]:
            table.add_row(s["step"], r["stage"] + (f" ({r['note']})" if r.get("note") else ""),
                          r["verb"], f"{r['queries']:,}", f"{r['prompt_tokens']:,}",
                          f"{r['completion_tokens']:,}", _usd(r["usd"]))
        if s.get("note"):
            table.add_row(s["step"], s["note"], "", "", "", "", "")
    t = plan["total"]
    table.add_row("[bold]total[/]", "", "", f"[bold]{t['queries']:,}[/]",
                  f"{t['prompt_tokens']:,}", f"{t['completion_tokens']:,}",
                  f"[bold]{_usd(t['usd'])}[/]")
    out = console()
    out.print(table)
    notes = dict.fromkeys(s["pricing"] for s in plan["steps"] if s.get("pricing"))
    for note in notes:  # once each: the steps of a chain mostly share one backend
        out.print(note)
    caps = plan.get("budget") or {}
    over = [f"{k}={v}" for k, v, used in (
        ("max_queries", caps.get("max_queries"), t["queries"]),
        ("max_tokens", caps.get("max_tokens"), t["prompt_tokens"]),
        ("max_usd", caps.get("max_usd"), t["usd"])) if v is not None and used is not None
        and used > v]
    if over:
        out.print(f"over the budget ({', '.join(over)}): the run stops where the budget ends")


def paid_line(usage: dict[str, Any]) -> str:
    """What a run paid, in one line: queries, tokens in / out, dollars."""
    return (f"paid: {usage.get('queries', 0):,} queries, "
            f"{usage.get('prompt_tokens', usage.get('tokens', 0)):,} tokens in, "
            f"{usage.get('completion_tokens', 0):,} out, {_usd(usage.get('usd'))}"
            f" ({usage.get('cached', 0):,} cached, free)")
