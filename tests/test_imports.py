"""The module graph of lamina has no import circle: a module's top-level imports never lead back to
it. Imports inside functions (lazy imports of heavy optional libraries) are not edges of the graph."""
import ast
from pathlib import Path

import lamina

ROOT = Path(lamina.__file__).parent


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def top_level_imports(path: Path, modules: set[str]) -> set[str]:
    """The lamina modules a file imports when it is loaded: statements at module level, also inside
    module-level if/try blocks, but not inside functions or classes, nor under `if TYPE_CHECKING`."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()

    def visit(statements: list[ast.stmt]) -> None:
        for statement in statements:
            if isinstance(statement, ast.Import):
                found.update(alias.name for alias in statement.names if alias.name in modules)
            elif isinstance(statement, ast.ImportFrom):
                base = statement.module or ""
                if statement.level:  # relative: from . import x
                    anchor = package.split(".")[:len(package.split(".")) - statement.level + 1]
                    base = ".".join(anchor + ([base] if base else []))
                for alias in statement.names:
                    candidate = f"{base}.{alias.name}"
                    found.add(candidate if candidate in modules else base)
            elif isinstance(statement, ast.If):
                if "TYPE_CHECKING" not in ast.unparse(statement.test):
                    visit(statement.body)
                visit(statement.orelse)
            elif isinstance(statement, ast.Try):
                visit(statement.body + [s for handler in statement.handlers for s in handler.body] + statement.orelse
                      + statement.finalbody)

    visit(ast.parse(path.read_text()).body)
    return {module for module in found if module in modules and module != name}


def graph() -> dict[str, set[str]]:
    paths = sorted(ROOT.rglob("*.py"))
    modules = {module_name(path) for path in paths}
    return {module_name(path): top_level_imports(path, modules) for path in paths}


def circles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan's algorithm)."""
    index, low, stack, on_stack, found, counter = {}, {}, [], set(), [], [0]

    def connect(node: str) -> None:
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for target in edges.get(node, ()):
            if target not in index:
                connect(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            connect(node)
    return found


def test_the_graph_is_read():
    edges = graph()
    assert "lamina.features.base" in edges["lamina.features.number"]
    assert "lamina.config" in edges["lamina.network"]


def test_the_circle_finder_finds_a_circle():
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_circle_in_lamina():
    assert circles(graph()) == []
