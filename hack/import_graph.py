"""The import graph of the project's three packages, from their source (nothing is imported).

`python hack/import_graph.py` prints each package's module graph and its cycles (none expected);
tests/unit/test_import_graph.py holds the rules it must keep: no cycle in any package, the contract imports neither
side, the operator and the trainer never import each other, kopf stays in the runtime wiring, and the generators
(CRD, reference, bundle, chart README) are never imported by what runs in the cluster.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = {
    "yolo_contract": ROOT / "contract" / "src" / "yolo_contract",
    "yolo_operator": ROOT / "operator" / "src" / "yolo_operator",
    "yolo_trainer": ROOT / "trainer" / "src" / "yolo_trainer",
}


def _type_checking_only(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.AST, module: str, package: Path) -> set[str]:
    """Every module named by an import anywhere in ``tree`` (function bodies included; ``if TYPE_CHECKING``
    blocks left out: they never run)."""
    found: set[str] = set()
    pkg_parts = module.split(".")[:-1] if not module.endswith("__init__") else module.split(".")

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _type_checking_only(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = pkg_parts[: len(pkg_parts) - node.level + 1]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            found.add(target)
            # `from pkg import module` names a module when pkg/module.py exists.
            for alias in node.names:
                candidate = f"{target}.{alias.name}"
                top, *rest = candidate.split(".")
                if top in PACKAGES and (PACKAGES[top].joinpath(*rest).with_suffix(".py")).exists():
                    found.add(candidate)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def modules(package: str) -> dict[str, Path]:
    root = PACKAGES[package]
    out = {}
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root).with_suffix("")
        parts = [p for p in rel.parts if p != "__init__"]
        out[".".join([package, *parts])] = path
    return out


def graph() -> dict[str, set[str]]:
    """module -> the modules it imports (any package, third-party included, by their full dotted name)."""
    edges: dict[str, set[str]] = {}
    for package in PACKAGES:
        for name, path in modules(package).items():
            key = name + (".__init__" if path.name == "__init__.py" else "")
            edges[name] = _imports(ast.parse(path.read_text(), str(path)), key, PACKAGES[package])
    return edges


def internal(edges: dict[str, set[str]], package: str) -> dict[str, set[str]]:
    """The graph restricted to one package's own modules."""
    own = {m for m in edges if m == package or m.startswith(package + ".")}
    return {m: {t for t in edges[m] if t in own and t != m and t != package} for m in own}


def cycles(sub: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    counter = 0

    def strongconnect(v: str) -> None:
        nonlocal counter
        index[v] = low[v] = counter
        counter += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(sub.get(v, ())):
            if w not in index:
                strongconnect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    sys.setrecursionlimit(10_000)
    for v in sorted(sub):
        if v not in index:
            strongconnect(v)
    return out


def main() -> int:
    edges = graph()
    status = 0
    for package in PACKAGES:
        sub = internal(edges, package)
        print(f"# {package}: {len(sub)} modules, {sum(map(len, sub.values()))} internal imports")
        for module in sorted(sub):
            targets = ", ".join(t.removeprefix(package + ".") for t in sorted(sub[module]))
            print(f"  {module.removeprefix(package + '.')} -> {targets or '-'}")
        found = cycles(sub)
        print(f"  cycles: {found or 'none'}")
        status |= bool(found)
    return status


if __name__ == "__main__":
    sys.exit(main())
