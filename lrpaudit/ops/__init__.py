"""Forward computation of each IR op, one small torch function per op, in a registry.

Every op function takes ``(inputs, attrs, params)`` with params already cast to the execution dtype and returns
one tensor. Where each op lives: ``layers.py`` (linear-type ops as ``*_apply(x, weight, bias, attrs)`` so the LRP
rules can run the same map with modified weights; pooling), ``elementwise.py`` (activations, arithmetic, LRN),
``routing.py`` (reshape, permute, concat, slice, gather, pad, expand, roll, where), ``attention.py`` (softmax,
matmul, einsum, layernorm, groupnorm). ``shapes.py`` and ``shapes_layers.py`` give each op's output shape from
its input shapes alone (how the IR is built, without running anything).
"""

from . import attention, elementwise, routing, shapes_layers  # noqa: F401  (fill the registries)
from .layers import LINEAR_APPLY, avgpool_apply
from .registry import OPS, register, run_op
from .shapes import SHAPES, ShapeError, infer_shape

__all__ = [
    "LINEAR_APPLY",
    "OPS",
    "SHAPES",
    "ShapeError",
    "avgpool_apply",
    "infer_shape",
    "register",
    "run_op",
]
