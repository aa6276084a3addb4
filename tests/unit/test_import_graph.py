"""The packages' import rules, read from the source by hack/import_graph.py (nothing is imported)."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

_spec = importlib.util.spec_from_file_location("import_graph", ROOT / "hack" / "import_graph.py")
import_graph = importlib.util.module_from_spec(_spec)
sys.modules["import_graph"] = import_graph
_spec.loader.exec_module(import_graph)

EDGES = import_graph.graph()
GENERATORS = {m for m in EDGES if m.startswith("yolo_operator.gen.")}
CONTROLLER = {m for m in EDGES if m.startswith("yolo_operator.controller.")}
# What decides (the reconciler's pure side) never reaches kopf, however indirectly; act, which writes through
# the runtime's client, only never imports it itself.
PURE = sorted(CONTROLLER - {"yolo_operator.controller.act"})


def reachable(start: str) -> set[str]:
    """Every module ``start`` imports, directly or through the project's own modules (third-party names kept)."""
    seen: set[str] = set()
    todo = [start]
    while todo:
        module = todo.pop()
        for target in EDGES.get(module, ()):
            if target not in seen:
                seen.add(target)
                todo.append(target)
    return seen


def test_the_graph_sees_every_module_and_the_known_edges():
    assert "yolo_operator.controller.decide" in EDGES and "yolo_trainer.supervisor" in EDGES
    assert "yolo_operator.api.types" in EDGES["yolo_operator.controller.decide"]
    assert "yolo_contract.exitcodes" in reachable("yolo_trainer.supervisor")


def test_the_cycle_finder_finds_a_cycle():
    assert import_graph.cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


@pytest.mark.parametrize("package", sorted(import_graph.PACKAGES))
def test_no_package_has_an_import_cycle(package):
    assert import_graph.cycles(import_graph.internal(EDGES, package)) == []


def test_the_contract_imports_neither_side_and_the_sides_not_each_other():
    def imports_of(prefix: str) -> set[str]:
        return {t for m, ts in EDGES.items() if m.startswith(prefix) for t in ts}

    assert not {t for t in imports_of("yolo_contract") if t.startswith(("yolo_operator", "yolo_trainer"))}
    assert not {t for t in imports_of("yolo_operator") if t.startswith("yolo_trainer")}
    assert not {t for t in imports_of("yolo_trainer") if t.startswith("yolo_operator")}


def _kopf(modules) -> set[str]:
    return {t for t in modules if t == "kopf" or t.startswith("kopf.")}


@pytest.mark.parametrize("module", PURE)
def test_the_decisions_never_reach_kopf(module):
    assert not _kopf(reachable(module))


def test_no_controller_module_imports_kopf():
    assert {"yolo_operator.controller.decide", "yolo_operator.controller.act"} <= CONTROLLER
    assert {m: sorted(_kopf(EDGES[m])) for m in CONTROLLER if _kopf(EDGES[m])} == {}


def test_nothing_that_runs_in_the_cluster_imports_a_generator():
    assert "yolo_operator.gen.crd" in GENERATORS
    entries = ("yolo_operator.__main__", "yolo_trainer.cli", "yolo_trainer.child")
    running = set(entries).union(*(reachable(e) for e in entries))
    assert not running & GENERATORS


def test_no_private_kopf_name_is_used():
    private = re.compile(r"\bkopf\._")
    offenders = [
        f"{path.relative_to(ROOT)}:{n}"
        for package in import_graph.PACKAGES.values()
        for path in package.rglob("*.py")
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if private.search(line)
    ]
    assert offenders == []
