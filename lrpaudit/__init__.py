"""lrpaudit: audit Layer-wise Relevance Propagation for conservation on ONNX and TorchScript model files."""

from ._version import __version__
from .api import AuditResult, audit, inspect_model, load_model  # noqa: E402
from .audit import Tolerance  # noqa: E402
from .rules import Rule  # noqa: E402

__all__ = ["AuditResult", "Rule", "Tolerance", "audit", "inspect_model", "load_model", "__version__"]
