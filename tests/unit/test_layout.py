"""The architecture's import rules, checked on the source: imports go gateway → actors →
upstream, all of them → config, and no module imports one that imports it back."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.support import REPO

PACKAGES = ("gateway", "actors", "upstream", "config")
#: What each package may import of the others.
ALLOWED = {
    "gateway": {"gateway", "actors", "upstream", "config"},
    "actors": {"actors", "upstream", "config"},
    "upstream": {"upstream", "config"},
    "config": {"config"},
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path) -> set[str]:
    """The project modules ``path`` imports (absolute names), type-checking-only ones too."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            found.add(target)
            # ``from pkg import module`` imports that module.
            found |= {f"{target}.{alias.name}" for alias in node.names}
    return {m for m in found if m.split(".")[0] in PACKAGES}


def project_modules() -> dict[str, set[str]]:
    modules = {}
    for package in PACKAGES:
        for path in (REPO / package).rglob("*.py"):
            modules[module_name(path)] = imports_of(path)
    known = set(modules)
    return {name: {m for m in deps if m in known and m != name} for name, deps in modules.items()}


def test_imports_go_down_the_layers() -> None:
    wrong = [
        f"{module} imports {dep}"
        for module, deps in project_modules().items()
        for dep in deps
        if dep.split(".")[0] not in ALLOWED[module.split(".")[0]]
    ]
    assert wrong == []


def test_no_module_imports_one_that_imports_it_back() -> None:
    graph = project_modules()
    cycles: list[list[str]] = []
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for dep in sorted(graph[node]):
            if state.get(dep) == 1:
                cycles.append(stack[stack.index(dep):] + [dep])
            elif dep not in state:
                visit(dep)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)
    assert cycles == []
