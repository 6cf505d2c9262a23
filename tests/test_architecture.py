"""The import arrows point one way: rules ← models ← tasks ← flows, and web beside flows, never above it.

Every module of ours is parsed with `ast`, imports inside functions included (an import moved into a
function still makes the arrow; it only hides it from the interpreter). Two checks:
- no layer imports a layer above it (`FORBIDDEN`);
- no import cycle among our modules (a strongly connected component of more than one module, or a
  module importing itself).
`if TYPE_CHECKING:` imports count too: an annotation that needs an upper layer is an upward arrow.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("rules", "models", "tasks", "flows", "web", "deployments")

# layer -> the layers of ours it may not import
FORBIDDEN: dict[str, set[str]] = {
    "rules": {"models", "tasks", "flows", "web", "deployments"},
    "models": {"tasks", "flows", "web", "deployments"},
    "tasks": {"flows", "web", "deployments"},
    "web": {"flows", "deployments"},
}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _our_modules() -> dict[str, Path]:
    modules: dict[str, Path] = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            if "migrations" in path.parts:
                continue
            modules[_module_name(path)] = path
    return modules


def _imported_names(path: Path, module: str) -> Iterator[tuple[str, int]]:
    """Every absolute module name `path` imports (at any depth), with its line."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base_parts = package.split(".")
                base_parts = base_parts[: len(base_parts) - (node.level - 1)]
                base = ".".join(base_parts)
                target = f"{base}.{node.module}" if node.module else base
            else:
                target = node.module or ""
            yield target, node.lineno
            # `from tasks import links` imports the module tasks.links
            for alias in node.names:
                yield f"{target}.{alias.name}", node.lineno


def _resolve(name: str, modules: dict[str, Path]) -> str | None:
    """The longest module of ours that `name` names (a package, a module, or an attribute of one)."""
    while name:
        if name in modules:
            return name
        name = name.rpartition(".")[0]
    return None


def _graph() -> dict[str, dict[str, int]]:
    modules = _our_modules()
    graph: dict[str, dict[str, int]] = {}
    for module, path in modules.items():
        edges: dict[str, int] = {}
        for name, line in _imported_names(path, module):
            target = _resolve(name, modules)
            # importing a package's own __init__ from inside it is not an arrow between modules
            if target is None or target == module or module.startswith(f"{target}."):
                continue
            edges.setdefault(target, line)
        graph[module] = edges
    return graph


def _cycles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """Tarjan's strongly connected components of more than one module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0

    def visit(node: str) -> None:
        nonlocal counter
        index[node] = low[node] = counter
        counter += 1
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.get(node, {}):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_layer_imports_a_layer_above_it() -> None:
    modules = _our_modules()
    graph = _graph()
    wrong = []
    for module, edges in graph.items():
        layer = module.split(".")[0]
        for target, line in edges.items():
            if target.split(".")[0] in FORBIDDEN.get(layer, set()):
                wrong.append(f"{modules[module].relative_to(ROOT)}:{line} imports {target}")
    assert not wrong, "upward imports:\n" + "\n".join(sorted(wrong))


def test_no_import_cycle_among_our_modules() -> None:
    cycles = _cycles(_graph())
    assert not cycles, "import cycles:\n" + "\n".join(" ↔ ".join(c) for c in cycles)


def test_the_checker_sees_imports_inside_functions_and_relative_imports(tmp_path: Path) -> None:
    """The parser is the test's own logic: it must see what hides an arrow."""
    source = tmp_path / "m.py"
    source.write_text("def f():\n    from tasks import links\n    import flows.repair\nfrom . import x\n")
    names = {name for name, _ in _imported_names(source, "web.m")}
    assert {"tasks.links", "flows.repair", "web.x"} <= names
