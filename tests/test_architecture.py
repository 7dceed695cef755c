"""The architecture as tests: the import graph of lrpaudit's modules (module-level and deferred imports alike) has
no cycles and points one way, no module grows past 450 lines, and ``lrpaudit --help`` loads no heavy library.

Import direction (README "Development"): cli -> api/runner -> {frontends, passes, config, inputs, reports} ->
the engine {rules, propagate, verdicts, results, fidelity, verify} -> {ir, ops, forward, errors, display, files,
_version, _lazy}.
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
    found |= _lazy_imports(module, is_package, tree)
    # a module's ancestor packages are imported before it anyway: `from .. import ops` is an edge to ops only
    found -= {module.rsplit(".", k)[0] for k in range(1, module.count(".") + 1)}
    found.discard(module)
    return found


def _lazy_imports(module: str, is_package: bool, tree: ast.Module) -> set[str]:
    """The modules a lazy package (PEP 562) imports on attribute access: the values of its ``_PUBLIC`` dict of
    name -> relative module (``lrpaudit``, ``lrpaudit.config``)."""
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", "") == "_PUBLIC" for t in node.targets):
            relative = [value.value for value in node.value.values]  # type: ignore[attr-defined]
            names = {
                _resolve(module, is_package, len(r) - len(r.lstrip(".")), r.lstrip(".")) for r in relative
            }
            return {name for name in names if name in MODULES}
    return set()


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
ENGINE += ("lrpaudit.display", "lrpaudit.files", "lrpaudit._lazy")
BASE = ("lrpaudit.ir", "lrpaudit.ops", "lrpaudit.forward", "lrpaudit.errors", "lrpaudit._version")
BASE += ("lrpaudit.display", "lrpaudit.files", "lrpaudit._lazy")
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


def test_lazy_packages_count_their_lazy_imports():
    assert {"lrpaudit.api", "lrpaudit.rules.spec"} <= GRAPH["lrpaudit"]
    assert {"lrpaudit.config.settings", "lrpaudit.rules.assign"} <= GRAPH["lrpaudit.config"]
    assert "lrpaudit.inputs.batches" in GRAPH["lrpaudit.inputs"]


HEAVY = ("torch", "onnx", "onnxruntime", "numpy", "pydantic")
# What answers without an audit: help, the version, the registry listings and usage errors (click's and the
# commands' own), each with its expected exit code.
INSTANT = [
    (["--help"], 0),
    (["--version"], 0),
    (["check", "--help"], 0),
    (["presets"], 0),
    (["presets", "epsilon"], 0),
    (["presets", "epsilon-pluss-flat"], 2),
    (["rules"], 0),
    (["check"], 2),
    (["check", "m.onnx", "--random", "2", "--inputs", "x.npy"], 2),
    (["check", "m.onnx", "-c", "a.yaml", "--preset", "epsilon"], 2),
    (["check", "m.onnx", "--shard", "1/2", "--baseline", "b.json"], 2),
    (["check", "m.onnx", "--fidelity", "sometimes"], 2),
    (["inspect", "m.onnx", "-c", "a.yaml", "--preset", "epsilon"], 2),
    (["batch", "m.yaml", "--scheduler", "tcp://x:1"], 2),
    (["nonsense"], 2),
]


def test_instant_commands_load_no_heavy_library():
    """One process runs every command of ``INSTANT`` and lists the heavy libraries loaded after each."""
    code = (
        "import json, sys\n"
        "from lrpaudit.cli import main\n"
        "seen = []\n"
        "for args in json.loads(sys.argv[1]):\n"
        "    try:\n        main(args)\n    except SystemExit as exc:\n        code = exc.code or 0\n"
        f"    seen.append([code, sorted(m for m in {HEAVY!r} if m in sys.modules)])\n"
        "print(json.dumps(seen))\n"
    )
    import json

    commands = json.dumps([args for args, _ in INSTANT])
    out = subprocess.run([sys.executable, "-c", code, commands], capture_output=True, text=True, check=True)
    seen = json.loads(out.stdout.strip().splitlines()[-1])
    assert seen == [[code, []] for _, code in INSTANT]


def test_building_an_onnx_ir_imports_no_dynamo():
    """The IR is built with shape arithmetic (``ops.infer_shape``): neither building it nor running it imports
    torch._dynamo (shape-only meta tensors did, 1-3 s a process)."""
    code = (
        "import sys, torch\n"
        "from lrpaudit.forward import run_forward\n"
        "from lrpaudit.frontends import load_model\n"
        "graph = load_model('sample_models/digits_cnn.onnx').graph({'input': (2, 1, 8, 8)})\n"
        "run_forward(graph, {'input': torch.rand(2, 1, 8, 8)}, torch.float32)\n"
        "print(len(graph.nodes), 'torch._dynamo' in sys.modules)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=PACKAGE.parent
    )
    count, dynamo = out.stdout.split()
    assert int(count) > 0 and dynamo == "False"
