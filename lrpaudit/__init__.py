"""lrpaudit: audit Layer-wise Relevance Propagation for conservation on ONNX and TorchScript model files.

The public API is imported on first use (PEP 562), so ``lrpaudit --help`` and ``import lrpaudit._version`` do not
load torch, onnx or onnxruntime.
"""

from ._lazy import lazy_exports
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


__getattr__, __dir__ = lazy_exports(__name__, _PUBLIC)
