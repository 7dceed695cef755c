"""The state the ONNX converters share while one graph is translated, and the registry they fill.

Converters (``ops_basic``, ``ops_layers``, ``ops_shape``) import this module and register themselves with
``@converter(op_type, ...)``; ``convert.py`` walks the nodes and calls them. Their whole vocabulary is ``ctx.emit``
(append an IR node, its output shape inferred and checked by ``ops.infer_shape``: nothing runs), ``ctx.fail`` (an
UnsupportedOpError naming node, op and opset), ``ctx.attr``, ``ctx.const``/``ctx.is_const``/``ctx.optional_const``,
``ctx.shape``, ``ctx.alias`` and ``ctx.tmp``.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx
import torch
from onnx import helper, numpy_helper

from ...errors import UnsupportedOpError, first_line
from ...ir import LINEAR_TYPE, WEIGHTED, Node, TokenInput
from ...ops import ShapeError, infer_shape
from .._tokens import token_misuse
from .scopes import Scope, weight_owner

Converter = Callable[["Context", onnx.NodeProto], None]
CONVERTERS: dict[str, Converter] = {}


def norm_axis(axis: int, rank: int) -> int:
    """A possibly negative ONNX axis as a non-negative one."""
    return axis + rank if axis < 0 else axis


def converter(*op_types: str) -> Callable[[Converter], Converter]:
    def deco(fn: Converter) -> Converter:
        for op_type in op_types:
            CONVERTERS[op_type] = fn
        return fn

    return deco


# Floating constants keep the file's precision: a float32 audit of a float32 file runs on the file's own numbers
# without a copy, and only a float64 audit casts them (``forward.cast_params``).
FILE_FLOATS = (np.float16, np.float32, np.float64)


def to_param(array: np.ndarray) -> torch.Tensor:
    """A constant as an IR param: floating point in the file's own precision, int64 for integers, bool as bool.

    A floating array is shared, not copied (an initializer's data, possibly a transposed view of it): IR params
    are never written to (passes replace a param with a new tensor; the engine reads its cast copy), so the
    read-only buffer numpy gives for a file's raw data is safe to share.
    """
    array = np.asarray(array)
    if array.dtype in FILE_FLOATS:
        if array.flags.writeable:
            return torch.from_numpy(array)
        with warnings.catch_warnings():  # "the given NumPy array is not writable": it is never written
            warnings.simplefilter("ignore", UserWarning)
            return torch.from_numpy(array)
    if np.issubdtype(array.dtype, np.floating):
        return torch.from_numpy(np.array(array, dtype=np.float64))
    if array.dtype == np.bool_:
        return torch.from_numpy(np.array(array, dtype=np.bool_))
    return torch.from_numpy(np.array(array, dtype=np.int64))


@dataclass
class Context:
    """State shared by the converters while one ONNX graph is translated."""

    path: str
    opset: int
    consts: dict[str, np.ndarray] = field(default_factory=dict)
    # The shape of every activation (``ops.infer_shape`` of its node).
    shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)
    aliases: dict[str, str] = field(default_factory=dict)
    nodes: list[Node] = field(default_factory=list)
    current: onnx.NodeProto | None = None
    # The module the current node ran in (None: the file does not say), and the paths that are not leaves.
    scope: Scope | None = None
    non_leaf: set[str] = field(default_factory=set)
    # The element type of the activations.
    float_dtype: np.dtype = field(default_factory=lambda: np.dtype(np.float32))
    # Values holding integer token ids (an integer graph input, reshaped): value -> the graph input's name.
    tokens: dict[str, str] = field(default_factory=dict)
    # The embedding lookups of token ids: their outputs are graph inputs of the IR.
    token_inputs: list[TokenInput] = field(default_factory=list)
    # ``IsNaN`` of a softmax output: value -> the softmax output it tests (only a NaN guard may read it).
    nan_tests: dict[str, str] = field(default_factory=dict)
    # Every value some node reads, and the graph outputs: what an optional output must be in to be used.
    consumed: frozenset[str] = frozenset()

    # -- values
    def name(self, value: str) -> str:
        """Resolve aliases left by removed ops (Identity, Dropout)."""
        while value in self.aliases:
            value = self.aliases[value]
        return value

    def is_const(self, value: str) -> bool:
        return value == "" or self.name(value) in self.consts

    def const(self, value: str) -> np.ndarray:
        return self.consts[self.name(value)]

    def optional_const(self, node: onnx.NodeProto, index: int) -> np.ndarray | None:
        """The index-th input as a constant, or None when it is absent; an activation there is unsupported."""
        if len(node.input) <= index or node.input[index] == "":
            return None
        if not self.is_const(node.input[index]):
            self.fail(f"input {index} must be constant (it depends on the model input)")
        return self.const(node.input[index])

    def used(self, value: str) -> bool:
        """Whether a node output is read by a node or is a graph output (a declared name alone is no use)."""
        return bool(value) and value in self.consumed

    def shape(self, value: str) -> tuple[int, ...]:
        return self.shapes[self.name(value)]

    def attr(self, node: onnx.NodeProto, key: str, default: Any = None) -> Any:
        for attribute in node.attribute:
            if attribute.name == key:
                value = helper.get_attribute_value(attribute)
                if isinstance(value, bytes):
                    return value.decode()
                if isinstance(value, onnx.TensorProto):
                    return numpy_helper.to_array(value)
                if isinstance(value, list):
                    return [v.decode() if isinstance(v, bytes) else v for v in value]
                return value
        return default

    # -- building
    def fail(self, message: str) -> None:
        node = self.current
        where = (
            f"node {node.name or node.output[0]!r} ({node.op_type}, opset {self.opset})" if node else "graph"
        )
        raise UnsupportedOpError(f"{self.path}: {where}: {message}")

    def alias(self, out: str, src: str) -> None:
        self.aliases[out] = self.name(src)

    def emit(
        self,
        op: str,
        inputs: list[str],
        output: str,
        attrs: dict[str, Any] | None = None,
        params: dict[str, Any] | None = None,
    ) -> str:
        """Append an IR node, infer its output shape (refusing inputs and weights that do not fit it), and return
        its output name."""
        onnx_node = self.current
        ids = [self.name(v) for v in inputs if self.name(v) in self.tokens]
        if ids:
            self.fail(token_misuse(self.tokens[ids[0]]))
        if any(self.name(v) in self.nan_tests for v in inputs):
            self.fail("uses a NaN test of an activation other than as the guard Where(IsNaN(p), 0, p)")
        base = (onnx_node.name or onnx_node.output[0]) if onnx_node is not None else output
        node = Node(
            id=base,  # provisional: ``module_ids.assign_graph_ids`` gives the ids once every node exists
            op=op,
            inputs=[self.name(v) for v in inputs],
            outputs=[output],
            attrs=attrs or {},
            params={
                k2: v if isinstance(v, torch.Tensor) else to_param(v) for k2, v in (params or {}).items()
            },
            origin={
                "frontend": "onnx",
                "ops": [onnx_node.op_type] if onnx_node is not None else [],
                "names": [base],
                "node_name": base,
                "opset": self.opset,
                # a step inside a multi-node mapping (``ctx.tmp``) is no tensor of the ONNX graph
                "onnx_output": output if onnx_node is None or output in onnx_node.output else None,
            },
        )
        weights = {k2: tuple(t.shape) for k2, t in node.params.items()}
        try:
            self.shapes[output] = infer_shape(
                node.op, [self.shapes[v] for v in node.inputs], node.attrs, weights
            )
        except UnsupportedOpError as exc:  # an attribute combination the op refuses
            self.fail(str(exc))
        except Exception as exc:  # ShapeError: its inputs, weights or attributes do not fit the op
            shapes = [list(self.shapes[v]) for v in node.inputs if v in self.shapes]
            shown = {k2: list(shape) for k2, shape in weights.items()}
            reason = str(exc) if isinstance(exc, ShapeError) else brief(exc)
            self.fail(f"the node does not fit its inputs {shapes} and weights {shown} ({reason})")
        problem = _channel_params(node, self.shapes[output])
        if problem:
            self.fail(problem)
        self.nodes.append(node)
        node.origin["module"], node.origin["leaf"] = self._module_of(node, onnx_node)
        return output

    def _module_of(self, node: Node, onnx_node: onnx.NodeProto | None) -> tuple[str | None, bool]:
        """The module path the node ran in and whether it is a leaf (``module_ids``); None where the file
        records none. A weighted node whose weight belongs to a sibling module takes that module (the dynamo
        exporter records a fused BatchNorm's scope on the convolution it was fused into)."""
        if self.scope is None:
            return None, True
        if node.op in WEIGHTED and onnx_node is not None and len(onnx_node.input) > 1:
            owner = weight_owner(self.scope.path, onnx_node.input[1])
            if owner is not None:
                return owner, True
        return self.scope.path, self.scope.path not in self.non_leaf

    def tmp(self, output: str, suffix: str) -> str:
        """Name for an intermediate IR value inside a node that maps to several IR nodes."""
        return f"{output}::{suffix}"


def _channel_params(node: Node, out: tuple[int, ...]) -> str | None:
    """Per-channel params of linear-type nodes must have one entry per output channel (a convolution's bias is no
    part of its output shape)."""
    if node.op not in LINEAR_TYPE:
        return None
    channels = out[-1] if node.op == "linear" else (out[1] if len(out) > 1 else None)
    for key in ("weight", "bias") if node.op == "affine" else ("bias",):
        tensor = node.params.get(key)
        if tensor is not None and tuple(tensor.shape) != (channels,):
            return f"its {key} has shape {list(tensor.shape)}; expected [{channels}], one per output channel"
    return None


def brief(exc: BaseException) -> str:
    """``Type: first line`` of an exception for a one-line error (only the type when it has no message)."""
    name = type(exc).__name__
    return f"{name}: {first_line(exc, 200)}" if str(exc).strip() else name
