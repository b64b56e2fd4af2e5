"""The layer rule of docs/architecture.md: no module imports a module of a layer above its
own, lazy imports inside functions included (they are the ones that creep in)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "blackbox"

# bottom (0) to top; a module belongs to the longest prefix listed
LAYERS: dict[str, int] = {
    "blackbox": 0, "blackbox.errors": 0, "blackbox.paths": 0, "blackbox.registry": 0,
    "blackbox.stats": 0, "blackbox.machine": 0, "blackbox.runs": 0, "blackbox.grid": 0,
    "blackbox.progress": 0, "blackbox.plots": 0,
    "blackbox.data": 1,
    "blackbox.engine": 2,
    "blackbox.backends": 3,
    "blackbox.optim": 4, "blackbox.serve": 4,
    "blackbox.recipes.schema": 5,
    "blackbox.methods": 6,
    "blackbox.recipes": 7, "blackbox.recipes.loader": 7,
    "blackbox.api": 8, "blackbox.chains": 8, "blackbox.report": 8,
    "blackbox.bench": 8, "blackbox.dryrun": 8,
    "blackbox.cli": 9,
}


def layer(module: str) -> int:
    parts = module.split(".")
    for n in range(len(parts), 0, -1):
        if ".".join(parts[:n]) in LAYERS:
            return LAYERS[".".join(parts[:n])]
    raise AssertionError(f"{module} has no layer: add it to LAYERS and docs/architecture.md")


def module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports(path: Path) -> list[tuple[int, str]]:
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module.startswith("blackbox"):
                out.append((node.lineno, node.module))
        elif isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names if a.name.startswith("blackbox")]
    return out


def test_no_module_imports_a_layer_above_its_own() -> None:
    files = sorted(PACKAGE.rglob("*.py"))
    assert len(files) > 50  # the walk found the package
    upward = []
    for f in files:
        me = module_name(f)
        for line, target in imports(f):
            if layer(target) > layer(me):
                upward.append(f"{f.relative_to(PACKAGE.parent)}:{line} ({me}, layer "
                              f"{layer(me)}) imports {target} (layer {layer(target)})")
    assert upward == []


def test_the_layer_table_names_only_existing_modules() -> None:
    for name in LAYERS:
        rel = Path(*name.split("."))
        assert (PACKAGE.parent / rel).is_dir() or (PACKAGE.parent / rel).with_suffix(
            ".py").is_file(), name
