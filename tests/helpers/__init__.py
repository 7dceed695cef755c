"""Helpers shared by the tests: paths, CLI invocation and its assertions, numeric comparisons, model factories,
ONNX graph builders and the independent dense LRP oracle (``dense``)."""
