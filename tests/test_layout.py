"""The code's shape: folders that follow the flow, imports that point one way, functions that fit a screen."""

from __future__ import annotations

import ast
import os
import re
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
MONITOR = REPO / "monitor"
# Lower layers never import higher ones: pure core, then the model, settings, the stream,
# the feed and test harness, the commands.
LAYERS = {
    "monitor.core": 0,
    "monitor.model": 1,
    "monitor.settings": 2,
    "monitor.stream": 3,
    "monitor.feed": 4,
    "monitor.testing": 4,
    "monitor.schemas": 4,
    "monitor.cli": 5,
}
MAX_FUNCTION_LINES = 80
MAX_APP_LINES = 200


def module_name(path: Path) -> str:
    rel = path.relative_to(REPO).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def layer(module: str) -> int | None:
    for prefix, n in LAYERS.items():
        if module == prefix or module.startswith(prefix + "."):
            return n
    return None


def imports(path: Path) -> set[str]:
    """Every monitor/training/tests/bench module a file imports, at any depth (lazy imports count)."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
            out.update(f"{node.module}.{a.name}" for a in node.names)
    return {m for m in out if m.split(".")[0] in ("monitor", "training", "tests", "bench")}


def known_modules() -> dict[str, Path]:
    return {module_name(p): p for p in MONITOR.rglob("*.py")}


def test_imports_point_one_way() -> None:
    wrong = []
    for name, path in known_modules().items():
        own = layer(name)
        for imp in imports(path):
            target = layer(imp)
            if own is not None and target is not None and target > own:
                wrong.append(f"{name} -> {imp}")
    assert not wrong, wrong


def test_only_commands_import_commands() -> None:
    offenders = [
        f"{name} -> {imp}"
        for name, path in known_modules().items()
        if not name.startswith("monitor.cli")
        for imp in imports(path)
        if imp.startswith("monitor.cli")
    ]
    assert not offenders, offenders


def test_no_import_cycles() -> None:
    modules = known_modules()
    graph: dict[str, set[str]] = defaultdict(set)
    for name, path in modules.items():
        for imp in imports(path):
            while imp and imp not in modules:
                imp = imp.rpartition(".")[0]  # `from a.b import name`: the module is a.b
            if imp and imp != name and not name.startswith(imp + "."):
                graph[name].add(imp)
    state: dict[str, int] = {}
    cycle: list[str] = []

    def visit(node: str, stack: list[str]) -> bool:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycle.extend([*stack[stack.index(nxt) :], nxt] if nxt in stack else [node, nxt])
                return True
            if nxt not in state and visit(nxt, [*stack, nxt]):
                return True
        state[node] = 2
        return False

    for node in sorted(modules):
        if node not in state and visit(node, [node]):
            break
    assert not cycle, " -> ".join(cycle)


def test_bench_does_not_import_tests() -> None:
    offenders = [str(p) for p in (REPO / "bench").rglob("*.py") if any(i.startswith("tests") for i in imports(p))]
    assert not offenders, offenders


def test_functions_fit_a_screen() -> None:
    long = []
    for root in ("monitor", "training"):
        for path in sorted((REPO / root).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                    n = (node.end_lineno or node.lineno) - node.lineno + 1
                    if n > MAX_FUNCTION_LINES:
                        long.append(f"{path.relative_to(REPO)}:{node.lineno} {node.name} ({n} lines)")
    assert not long, long


def test_the_faust_app_module_is_wiring_only() -> None:
    lines = (MONITOR / "stream" / "app.py").read_text(encoding="utf-8").count("\n")
    assert lines < MAX_APP_LINES, lines


def test_docs_and_comments_stand_alone() -> None:
    """No pointer to notes outside the repository, no issue numbers: a reader has only the repository."""
    pattern = re.compile(r"FACTS\.md|\bissue #?\d+\b", re.IGNORECASE)
    suffixes = {".py", ".md", ".toml", ".yml", ".yaml", ".sh", ".cfg", ".txt"}
    skip = {".git", ".venv", "runs", "var", "build", "dist", "node_modules", "__pycache__", ".mypy_cache"}
    offenders = []
    for root, dirs, files in os.walk(REPO):
        dirs[:] = [d for d in dirs if d not in skip and not d.startswith(".")]
        for name in files:
            path = Path(root) / name
            if path.suffix in suffixes and pattern.search(path.read_text(encoding="utf-8", errors="replace")):
                offenders.append(str(path.relative_to(REPO)))
    assert not offenders, offenders
