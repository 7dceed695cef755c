"""lrpaudit: audit Layer-wise Relevance Propagation for conservation on ONNX and TorchScript model files."""

__version__ = "0.1.0"
