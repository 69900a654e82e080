"""The package's shape holds: pure modules import no Dagster, no import cycles, no private name
crosses modules, the core never imports a flow, benchmarks never import the tests, and no module
grows past the size a reader can hold (or says why)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "aind_assets"

#: Modules that talk to Dagster or to storage clients; everything else is pure logic.
DAGSTER_OR_IO = {"assets", "checks", "sensors", "definitions", "defs", "resources", "cli", "keys"}
IO_MODULES = {
    "aind_assets.runs",
    "aind_assets.analysis.pipes",  # the Dagster Pipes layer of out-of-process analyses
    "aind_assets.settings",
    "aind_assets.demo.seed",
    "aind_assets.hbcd.storage",
    "aind_assets.hbcd.deid.store",
    "aind_assets.hbcd.deid.files",
    "aind_assets.hbcd.deid.ledger",
    "aind_assets.hbcd.deid.scanning",
    "aind_assets.hbcd.processing.store",
    "aind_assets.hbcd.reid.feed",
    "aind_assets.hbcd.reid.store",
    "aind_assets.hbcd.release.official",
    "aind_assets.hbcd.release.plan",
    "aind_assets.hbcd.release.specs",
    "aind_assets.hbcd.release.staging",
    "aind_assets.io_managers.store_io_manager",
    "aind_assets.io_managers.deployment",
    "aind_assets.resources.docdb",
    "aind_assets.resources.lease_sets",
    "aind_assets.resources.object_store",
    "aind_assets.partition_metadata",  # Dagster's step context
}
CORE = (
    "aind_assets.settings",
    "aind_assets.lineage",
    "aind_assets.servers",
    "aind_assets.resources",
    "aind_assets.io_managers",
)
FLOWS = ("aind_assets.analysis", "aind_assets.hbcd", "aind_assets.demo")
#: Modules allowed past the size limit, each with the reason.
LONG_MODULES: dict[str, str] = {}
MAX_LINES = 500


def _modules(root: Path, package: str) -> dict[str, Path]:
    out = {}
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        if name.startswith(package):
            out[name] = path
    return out


MODULES = _modules(PACKAGE, "aind_assets")


def _imports(path: Path, *, top_level: bool = False) -> list[tuple[str, list[str]]]:
    """(module, imported names) of a file's absolute imports; ``top_level``: only the module-level
    ones (function-level imports are lazy and cannot make an import cycle)."""
    tree = ast.parse(path.read_text())
    nodes = tree.body if top_level else list(ast.walk(tree))
    out: list[tuple[str, list[str]]] = []
    for node in nodes:
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.append((node.module, [a.name for a in node.names]))
        elif isinstance(node, ast.Import):
            out.extend((a.name, []) for a in node.names)
    return out


def _pure(name: str) -> bool:
    return (
        name not in IO_MODULES
        and name.rsplit(".", 1)[-1] not in DAGSTER_OR_IO
        and not name.endswith("__init__")
        and name != "aind_assets"
    )


def test_pure_modules_import_no_dagster() -> None:
    pure = sorted(n for n, p in MODULES.items() if _pure(n) and p.name != "__init__.py")
    assert len(pure) > 30, pure
    script = (
        "import importlib, sys\n"
        f"for name in {pure!r}:\n"
        "    importlib.import_module(name)\n"
        "    if 'dagster' in sys.modules:\n"
        "        print(name); break\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, check=True
    )
    assert out.stdout.strip() == "", f"pure module imports Dagster: {out.stdout.strip()}"


def test_no_import_cycles() -> None:
    graph: dict[str, set[str]] = {}
    for name, path in MODULES.items():
        deps = set()
        for module, names in _imports(path, top_level=True):
            if not module.startswith("aind_assets"):
                continue
            for n in names:  # `from pkg import module` imports the module
                if f"{module}.{n}" in MODULES:
                    deps.add(f"{module}.{n}")
            deps.add(module)
        graph[name] = {d for d in deps if d in MODULES and d != name}
    # Tarjan's strongly connected components; a component of more than one module is a cycle
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    cycles: list[list[str]] = []
    sys.setrecursionlimit(10_000)

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            # a package and the modules its __init__ re-exports are not a cycle of concern
            if len(comp) > 1 and not all(
                c in MODULES and MODULES[c].name == "__init__.py" for c in comp[1:]
            ):
                cycles.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    assert cycles == []


@pytest.mark.parametrize("folder", ["aind_assets", "aind_assets_tests", "bench"])
def test_no_private_name_crosses_modules(folder: str) -> None:
    crossing = [
        f"{path.relative_to(ROOT)}: {module}.{n}"
        for path in sorted((ROOT / folder).rglob("*.py"))
        for module, names in _imports(path)
        if module.startswith("aind_assets")
        for n in names
        if n.startswith("_")
    ]
    assert crossing == []


def test_no_test_imports_dagster_privates() -> None:
    private = [
        f"{path.relative_to(ROOT)}: {module}"
        for path in sorted((ROOT / "aind_assets_tests").rglob("*.py"))
        for module, _ in _imports(path)
        if module.startswith("dagster._")
    ]
    assert private == []


def test_core_never_imports_a_flow_and_bench_never_imports_tests() -> None:
    core = [n for n in MODULES if n.startswith(CORE)]
    assert core
    wrong = [
        f"{n} -> {module}"
        for n in core
        for module, _ in _imports(MODULES[n])
        if module.startswith(FLOWS)
    ]
    wrong += [
        f"{path.relative_to(ROOT)} -> {module}"
        for path in sorted((ROOT / "bench").rglob("*.py"))
        for module, _ in _imports(path)
        if module.startswith("aind_assets_tests")
    ]
    assert wrong == []


def test_modules_stay_readable_in_size() -> None:
    long = {
        n: sum(1 for _ in p.open())
        for n, p in MODULES.items()
        if sum(1 for _ in p.open()) > MAX_LINES and n not in LONG_MODULES
    }
    assert long == {}, f"split these modules (or add them to LONG_MODULES with a reason): {long}"
