"""The house has one direction: the floor (kit) imports nothing of ours, the
domain rooms stand on it in a fixed order, and the command (mobile_office) is
imported by nobody.  Every import counts, top-level or inside a function.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# Each package and the packages of ours it may import (besides itself).
ALLOWED: dict[str, set[str]] = {
    "kit": set(),
    "devices": {"kit"},
    "sync": {"kit", "devices"},
    "provisioning": {"kit", "sync"},
    "edge": {"kit", "sync", "devices"},
    "hq": {"kit", "sync", "provisioning"},
    "firmware_sim": {"kit"},
    "mobile_office": {"kit", "devices", "sync", "provisioning", "edge", "hq", "firmware_sim"},
}


def _modules() -> dict[str, Path]:
    out = {}
    for pkg in ALLOWED:
        for path in (ROOT / pkg).rglob("*.py"):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            out[".".join(parts)] = path
    return out


def _imports(name: str, path: Path, known: set[str]) -> Iterator[tuple[str, int]]:
    """Modules of ours that ``name`` imports, resolved to the deepest module that exists."""
    is_pkg = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".")
                base = base if is_pkg else base[:-1]
                base = base[: len(base) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            targets = [f"{mod}.{a.name}" for a in node.names] + [mod]
        for t in targets:
            while t and t not in known:
                t = t.rpartition(".")[0]
            if t and t != name:
                yield t, node.lineno
                break


def _graph() -> dict[str, dict[str, int]]:
    mods = _modules()
    known = set(mods)
    return {m: dict(_imports(m, p, known)) for m, p in mods.items()}


def test_every_import_follows_the_layer_order() -> None:
    wrong = []
    for mod, deps in _graph().items():
        pkg = mod.split(".")[0]
        for dep, line in deps.items():
            target = dep.split(".")[0]
            if target != pkg and target not in ALLOWED[pkg]:
                wrong.append(f"{mod}:{line} imports {dep} ({pkg} may import only {sorted(ALLOWED[pkg])})")
    assert not wrong, "\n".join(wrong)


def test_no_import_cycles() -> None:
    graph = _graph()
    # Package __init__ files that only hand names on are part of their package, not a cycle of their own.
    cycles: list[list[str]] = []
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for d in graph.get(m, {}):
            if state.get(d) == 1:
                cycles.append([*stack[stack.index(d):], d])
            elif d not in state:
                visit(d)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)
    assert not cycles, "\n".join(" -> ".join(c) for c in cycles)


def test_the_checker_sees_function_level_imports(tmp_path: Path) -> None:
    """The rule would be empty if imports inside functions escaped it."""
    mod = tmp_path / "m.py"
    mod.write_text("def f():\n    from edge.app import create_app\n", encoding="utf-8")
    assert dict(_imports("kit.m", mod, {"edge.app", "kit.m"})) == {"edge.app": 2}


def test_rooms_import_at_the_top() -> None:
    """An import inside a function hides a dependency; only the command loads rooms lazily (a fast ``--help``)."""
    hidden = []
    for mod, path in _modules().items():
        if mod.split(".")[0] == "mobile_office":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                for inner in ast.walk(node):
                    if isinstance(inner, ast.ImportFrom) and (inner.level or (inner.module or "").split(".")[0] in ALLOWED):
                        hidden.append(f"{mod}:{inner.lineno} imports {inner.module or '.'} inside {node.name}()")
    assert not hidden, "\n".join(hidden)
