"""What a TorchScript archive's code may do, checked on its source before ``torch.jit.load`` runs any of it.

A TorchScript archive is a program: ``torch.jit.load`` compiles the archive's ``code/**/*.py`` entries and runs a
scripted ``__setstate__`` while it restores each object, and the audit then runs ``forward`` (the fidelity
reference) and every method it calls. Without ``--trust-code`` the archive is refused, naming the entry, the line
and the reason, when any ``.py`` entry of it (every one is read, in whatever folder):

- defines ``__setstate__`` (code that runs while the archive loads);
- refers to a function that touches files, processes, the network or process-wide state: ``save``, ``load``,
  ``from_file``, ``manual_seed``, ``seed``, ``_print``, ``rpc_sync``, ``rpc_async``, ``rpc_remote`` (as
  ``torch.X``, ``torch.ops.aten.X``, ``ops.prim.X`` ...), anything under
  ``torch.distributed``, ``torch.classes`` (custom C++ classes) or ``torch.jit``, the builtin ``print``
  (``prim::Print`` writes straight to the process's stdout), or ``getattr`` on ``torch`` or ``ops``;
- calls an op outside the ``aten`` and ``prim`` namespaces (``ops.c10d``, ``ops.profiler``, ``ops.debugprims``,
  a custom library's ops: native code lrpaudit cannot see);
- cannot be parsed as Python (then nothing about it can be promised).

The check reads names in the source (an AST walk), not what they compute: TorchScript has no dynamic attribute
lookup or ``eval``, so a function the code calls is named in the code. Allowed on purpose: ``torch.warn``
(``warnings.warn``; the CLI shows warnings as one escaped line) and ``torch.set_grad_enabled`` (what
``with torch.no_grad()`` compiles to; the audit runs without gradients anyway).
"""

from __future__ import annotations

import ast
from dataclasses import dataclass

SIDE_EFFECTS = frozenset(
    {
        "save",
        "load",
        "from_file",
        "manual_seed",
        "seed",
        "_print",
        "rpc_sync",
        "rpc_async",
        "rpc_remote",
    }
)
REFUSED_MODULES = ("distributed", "classes", "jit")  # torch.distributed.*, torch.classes.*, torch.jit.*
ALLOWED_NAMESPACES = frozenset({"aten", "prim"})
BUILTINS = frozenset({"print"})
ROOTS = ("torch", "ops", "__torch__")


@dataclass(frozen=True)
class Finding:
    """Why an archive's code is refused: the entry, the line, what was found."""

    entry: str
    line: int
    what: str

    def __str__(self) -> str:
        return f"{self.entry}:{self.line}: {self.what}"


def _dotted(node: ast.AST) -> list[str] | None:
    """``torch.ops.aten.save`` as ``["torch", "ops", "aten", "save"]``; None for anything but a name chain."""
    parts: list[str] = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    parts.append(node.id)
    return parts[::-1]


def _refusal(parts: list[str]) -> str | None:
    """Why a reference ``a.b.c`` is refused, if it is."""
    if parts[0] not in ROOTS:
        return None
    chain = parts[1:]
    if parts[0] == "__torch__":  # a qualified type name: only torch.classes matters there
        if chain[:2] == ["torch", "classes"]:
            return f"uses a custom C++ class ({'.'.join(parts)})"
        return None
    if parts[0] == "torch" and chain[:1] == ["ops"]:
        chain = chain[1:]
    elif parts[0] == "torch" and chain and chain[0] in REFUSED_MODULES:
        return f"refers to torch.{chain[0]} ({'.'.join(parts)})"
    if (parts[0] == "ops" or parts[:2] == ["torch", "ops"]) and chain:
        namespace = chain[0]
        if namespace not in ALLOWED_NAMESPACES:
            return f"calls an op outside aten and prim ({'.'.join(parts)})"
        chain = chain[1:]
    if chain and chain[-1] in SIDE_EFFECTS:
        return f"calls {'.'.join(parts)}, which has side effects (files, processes, network or global state)"
    return None


def check_source(entry: str, text: str) -> list[Finding]:
    """Every reason to refuse one code entry (empty: nothing found)."""
    # torch's printer writes a name's NUL into a string literal raw; Python's parser refuses NUL anywhere, so it is
    # read as another character (one that changes no name or call in the code)
    try:
        tree = ast.parse(text.replace("\x00", "\ufffd"), filename=entry)
    except (SyntaxError, ValueError, RecursionError, MemoryError) as exc:
        line = getattr(exc, "lineno", None) or 1
        return [Finding(entry, line, "cannot be parsed, so it cannot be checked")]
    findings = []
    seen: set[int] = set()  # attribute chains already judged as a whole (not again for their prefixes)
    for node in ast.walk(tree):
        line = getattr(node, "lineno", 1)
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name == "__setstate__":
            findings.append(Finding(entry, line, "defines __setstate__, which torch runs while loading"))
        elif isinstance(node, ast.Name) and node.id in BUILTINS and id(node) not in seen:
            findings.append(Finding(entry, line, f"calls {node.id}() (it writes to this process's stdout)"))
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "getattr":
            target = _dotted(node.args[0]) if node.args else None
            if target and target[0] in ("torch", "ops"):
                findings.append(Finding(entry, line, f"looks up an attribute of {'.'.join(target)} by name"))
        elif isinstance(node, ast.Attribute) and id(node) not in seen:
            parts = _dotted(node)
            inner = node.value
            while isinstance(inner, ast.Attribute):
                seen.add(id(inner))
                inner = inner.value
            seen.add(id(inner))
            why = _refusal(parts) if parts else None
            if why:
                findings.append(Finding(entry, line, why))
    return findings


def check_code(sources: dict[str, str]) -> list[Finding]:
    """Every reason to refuse an archive's code entries, in entry order."""
    return [finding for entry, text in sources.items() for finding in check_source(entry, text)]
