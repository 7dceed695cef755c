"""The architecture as tests: the import graph of lrpaudit's modules (module-level and deferred imports alike) has
no cycles and points one way, no module grows past 450 lines, and ``lrpaudit --help`` loads no heavy library.

Import direction (README "Development"): cli -> api/runner -> {frontends, passes, config, inputs, reports} ->
the engine {rules, propagate, verdicts, results, fidelity, verify} -> {ir, ops, forward, errors, display, files,
_version}.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "lrpaudit"
MAX_LINES = 450


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {_module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def _resolve(module: str, is_package: bool, level: int, name: str | None) -> str:
    base = module.split(".") if is_package else module.split(".")[:-1]
    if level > 1:
        base = base[: len(base) - (level - 1)]
    return ".".join([*base, name] if name else base)


def imports_of(module: str) -> set[str]:
    """Every lrpaudit module that ``module`` imports anywhere in its body (functions included)."""
    path = MODULES[module]
    tree = ast.parse(path.read_text(encoding="utf-8"))
    is_package = path.name == "__init__.py"
    found: set[str] = set()
    for node in ast.walk(tree):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = _resolve(module, is_package, node.level, node.module) if node.level else node.module or ""
            targets = [base] + [f"{base}.{alias.name}" for alias in node.names]
        for target in targets:
            if target in MODULES:
                found.add(target)
    if module == "lrpaudit":  # the lazy public API (PEP 562) imports these on attribute access
        found |= {
            f"lrpaudit.{name}"
            for name in ("api", "inspection", "results", "frontends", "verdicts", "rules.spec")
        }
    # a module's ancestor packages are imported before it anyway: `from .. import ops` is an edge to ops only
    found -= {module.rsplit(".", k)[0] for k in range(1, module.count(".") + 1)}
    found.discard(module)
    return found


GRAPH = {module: imports_of(module) for module in MODULES}


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm: the components with more than one module (cycles)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []
    counter = [0]

    def visit(node: str) -> None:
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for other in sorted(graph[node]):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                item = stack.pop()
                on_stack.discard(item)
                component.append(item)
                if item == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    for node in sorted(graph):
        if node not in index:
            visit(node)
    return cycles


def _is(module: str, *prefixes: str) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def test_the_cycle_finder_finds_a_cycle():
    assert strongly_connected({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_cycles():
    assert strongly_connected(GRAPH) == []


def test_nothing_imports_the_cli():
    offenders = {m: sorted(i for i in deps if _is(i, "lrpaudit.cli")) for m, deps in GRAPH.items()}
    entry_points = ("lrpaudit.cli", "lrpaudit.__main__")  # python -m lrpaudit runs the CLI
    assert {m: d for m, d in offenders.items() if d and not _is(m, *entry_points)} == {}


ENGINE = (
    "lrpaudit.rules",
    "lrpaudit.propagate",
    "lrpaudit.verdicts",
    "lrpaudit.results",
    "lrpaudit.fidelity",
)
ENGINE += ("lrpaudit.verify", "lrpaudit.ir", "lrpaudit.ops", "lrpaudit.forward", "lrpaudit.errors")
ENGINE += ("lrpaudit.display", "lrpaudit.files")
BASE = ("lrpaudit.ir", "lrpaudit.ops", "lrpaudit.forward", "lrpaudit.errors", "lrpaudit._version")
BASE += ("lrpaudit.display", "lrpaudit.files")
RULES = {
    # who may import what (besides modules of its own package); the engine knows no files, configs or reports
    "engine": (ENGINE, ENGINE),
    "reports": (
        ("lrpaudit.reports",),
        ("lrpaudit.verdicts", "lrpaudit.ir", "lrpaudit._version", "lrpaudit.errors")
        + ("lrpaudit.display", "lrpaudit.files"),
    ),
    "frontends": (
        ("lrpaudit.frontends",),
        (*BASE, "lrpaudit.inputs.shapes", "lrpaudit.passes"),
    ),
    "passes": (("lrpaudit.passes",), BASE),
    "inputs": (("lrpaudit.inputs",), BASE),
    "config": (("lrpaudit.config",), (*ENGINE, "lrpaudit.inputs.shapes")),
}


@pytest.mark.parametrize("layer", sorted(RULES))
def test_imports_point_one_way(layer):
    members, allowed = RULES[layer]
    wrong = {}
    for module, deps in GRAPH.items():
        if not _is(module, *members):
            continue
        bad = sorted(d for d in deps if not _is(d, *members, *allowed) and d != "lrpaudit")
        if bad:
            wrong[module] = bad
    assert wrong == {}


def test_only_the_model_base_reaches_the_passes():
    users = sorted(
        m for m, deps in GRAPH.items() if _is(m, "lrpaudit.frontends") and "lrpaudit.passes" in deps
    )
    assert users in ([], ["lrpaudit.frontends._model"])


def test_no_module_over_450_lines():
    sizes = {m: len(p.read_text(encoding="utf-8").splitlines()) for m, p in MODULES.items()}
    assert {m: n for m, n in sizes.items() if n > MAX_LINES} == {}


def test_help_loads_no_heavy_library():
    code = (
        "import sys\n"
        "from lrpaudit.cli import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "print(sorted(m for m in ('torch', 'onnx', 'onnxruntime', 'numpy', 'pydantic') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "[]"
