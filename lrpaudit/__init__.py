"""lrpaudit: audit Layer-wise Relevance Propagation for conservation on ONNX and TorchScript model files.

The public API is imported on first use (PEP 562), so ``lrpaudit --help`` and ``import lrpaudit._version`` do not
load torch, onnx or onnxruntime.
"""

from ._version import __version__

_PUBLIC = {
    "AuditRequest": ".api",
    "AuditResult": ".results",
    "audit": ".api",
    "run_audit": ".api",
    "inspect_model": ".inspection",
    "load_model": ".frontends",
    "Tolerance": ".verdicts",
    "Rule": ".rules.spec",
}

__all__ = [*_PUBLIC, "__version__"]


def __getattr__(name: str):
    if name not in _PUBLIC:
        raise AttributeError(f"module 'lrpaudit' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(_PUBLIC[name], __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
