"""The shape functions (``ops.infer_shape``, how the IR is built without running anything) against the ops' real
forwards: for every op, over several attribute combinations, the inferred shape is the shape the op's torch
forward produces on random inputs of those shapes, and inputs the forward refuses are refused (ShapeError).

The expectation is the real kernel (``ops.run_op`` on CPU tensors), never the shape arithmetic itself.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lrpaudit import ir
from lrpaudit.errors import UnsupportedOpError
from lrpaudit.ops import OPS, SHAPES, ShapeError, infer_shape, run_op


def _conv(stride=(1, 1), pads=(0, 0, 0, 0), dilation=(1, 1), groups=1):
    return {"stride": list(stride), "pads": list(pads), "dilation": list(dilation), "groups": groups}


def _convt(stride=(1, 1), pads=(0, 0, 0, 0), dilation=(1, 1), groups=1, output_padding=(0, 0)):
    return {**_conv(stride, pads, dilation, groups), "output_padding": list(output_padding)}


def _pool(kernel, stride, pads, **extra):
    return {"kernel": list(kernel), "stride": list(stride), "pads": list(pads), **extra}


_SHAPES_KEPT = [(2, 3, 4, 5), (7,), (2, 0, 3), (3, 1)]
_ACTIVATION_ATTRS = {
    "leaky_relu": {"alpha": 0.1},
    "elu": {"alpha": 0.5},
    "gelu": {"approximate": "tanh"},
    "hardsigmoid": {"alpha": 0.3, "beta": 0.4},
    "clip": {"min": -0.5, "max": 0.5},
    "pow": {"exponent": 2.0},
}

# op -> cases of (input shapes, attrs, param shapes); a param named ``cond`` is boolean.
CASES: dict[str, list[tuple[list[tuple[int, ...]], dict, dict[str, tuple[int, ...]]]]] = {
    **{
        op: [([s], _ACTIVATION_ATTRS.get(op, {}), {}) for s in _SHAPES_KEPT]
        for op in sorted(ir.ACTIVATION_OPS | {"pow", "sqrt", "rsqrt", "reciprocal"})
    },
    **{
        op: [([(2, 3, 4), (2, 3, 4)], {}, {}), ([(2, 1, 4), (3, 1)], {}, {}), ([(5,), (2, 1, 5)], {}, {})]
        for op in ("mul", "div")
    },
    "add": [
        ([(2, 3, 4), (2, 3, 4)], {}, {}),
        ([(2, 1, 4), (3, 1)], {"coeffs": [1.0, -1.0]}, {}),
        ([(4,), (2, 4), (3, 1, 1)], {}, {}),
    ],
    **{
        op: [
            ([(2, 3, 4)], {}, {"const": (4,)}),
            ([(2, 3, 1)], {}, {"const": (5,)}),
            ([(3,)], {}, {"const": ()}),
        ]
        for op in ("add_const", "mul_const")
    },
    "where": [
        ([(2, 3), (2, 3)], {}, {"cond": (2, 3)}),
        ([(2, 1, 4)], {}, {"cond": (3, 1), "other": ()}),
        ([(4,)], {"input_when": False}, {"cond": (2, 4), "other": (1,)}),
    ],
    "lrn": [
        ([(1, 5, 3, 3)], {"size": 3, "alpha": 1e-4, "beta": 0.75, "bias": 1.0}, {}),
        ([(2, 4, 6)], {"size": 2, "alpha": 1e-3, "beta": 0.5, "bias": 2.0}, {}),
    ],
    **{
        op: [
            ([(2, 3, 4)], {"axis": -1}, {}),
            ([(2, 3, 4)], {"axis": 1}, {}),
            ([(2, 3, 4, 5)], {"axis": 1, "coerce_2d": True}, {}),
        ]
        for op in ("softmax", "log_softmax")
    },
    "reshape": [
        ([(2, 3, 4)], {"shape": [2, -1]}, {}),
        ([(2, 3, 4)], {"shape": [6, 2, 2]}, {}),
        ([(2, 0, 4)], {"shape": [2, 0, 8]}, {}),
        ([(6,)], {"shape": [-1, 1, 3]}, {}),
    ],
    "permute": [
        ([(2, 3, 4)], {"perm": [2, 0, 1]}, {}),
        ([(2, 3, 4, 5)], {"perm": [0, -1, 1, 2]}, {}),
    ],
    "concat": [
        ([(2, 3), (2, 5)], {"axis": 1}, {}),
        ([(2, 3, 4), (1, 3, 4), (3, 3, 4)], {"axis": 0}, {}),
        ([(2, 3)], {"axis": -1, "constants": [(0, "c0"), (2, "c1")]}, {"c0": (2, 1), "c1": (2, 4)}),
    ],
    "slice": [
        ([(4, 6)], {"axes": [1], "indices": [[0, 2, 4]]}, {}),
        ([(4, 6, 2)], {"axes": [0, -1], "indices": [[3, 2, 1, 0], [1]]}, {}),
        ([(4, 6)], {"axes": [0], "indices": [[]]}, {}),
    ],
    "gather": [
        ([(4, 6)], {"axis": 1, "indices": [[0, 1], [5, 5]]}, {}),
        ([(4, 6, 2)], {"axis": 0, "indices": 3}, {}),
        ([(4, 6)], {"axis": 1, "indices": np.array([2, 0, 1])}, {}),
    ],
    "pad": [
        ([(1, 2, 3, 4)], {"pads": [1, 2, 0, 1]}, {}),
        ([(1, 2, 3, 4)], {"pads": [0, 0, 1, -1, 0, 0, 2, 0], "value": 1.5}, {}),
        ([(2, 3, 4)], {"pads": [0, 1, 2, 0, 2, 1], "mode": "reflect"}, {}),
        ([(2, 3, 4)], {"pads": [1, 0, 3, 0, 0, -1], "mode": "edge"}, {}),
    ],
    "expand": [
        ([(3, 1)], {"shape": [2, 3, 4]}, {}),
        ([(1, 4)], {"shape": [-1, 4]}, {}),
        ([(2, 1, 1)], {"shape": [5, 2, 3, -1]}, {}),
    ],
    "roll": [
        ([(2, 3, 4)], {"shifts": [1, -2], "dims": [1, 2]}, {}),
        ([(5,)], {"shifts": [7], "dims": [0]}, {}),
    ],
    "linear": [
        ([(2, 5)], {}, {"weight": (3, 5), "bias": (3,)}),
        ([(2, 4, 5)], {}, {"weight": (7, 5)}),
        ([(5,)], {}, {"weight": (1, 5)}),
    ],
    "conv": [
        ([(1, 4, 7, 8)], _conv(), {"weight": (6, 4, 3, 3), "bias": (6,)}),
        ([(2, 4, 9, 8)], _conv((2, 3), (1, 0, 2, 1), (2, 1), 2), {"weight": (6, 2, 3, 2)}),
        ([(1, 3, 10)], _conv((2,), (1, 2), (3,)), {"weight": (5, 3, 3)}),
        ([(1, 2, 4, 5, 6)], _conv((1, 2, 1), (0,) * 6, (1,) * 3), {"weight": (3, 2, 2, 2, 3)}),
    ],
    "conv_transpose": [
        ([(1, 4, 5, 6)], _convt(), {"weight": (4, 3, 3, 3), "bias": (3,)}),
        ([(1, 4, 5, 6)], _convt((2, 3), (1, 0, 0, 1), (1, 2), 2, (1, 2)), {"weight": (4, 2, 3, 2)}),
        ([(2, 3, 7)], _convt((3,), (2, 1), (1,), 1, (2,)), {"weight": (3, 5, 4)}),
        ([(1, 2, 5, 5)], _convt((1, 1), (0, 0, 0, 0), (3, 3), 1, (2, 0)), {"weight": (2, 1, 2, 2)}),
    ],
    "affine": [
        ([(2, 3, 4, 5)], {}, {"weight": (3,), "bias": (3,)}),
        ([(2, 3)], {}, {"weight": (3,)}),
    ],
    "avgpool": [
        ([(1, 2, 7, 8)], _pool((2, 2), (2, 2), (0, 0, 0, 0)), {}),
        ([(1, 2, 7, 8)], _pool((3, 2), (2, 3), (1, 0, 0, 1), ceil_mode=True), {}),
        ([(1, 2, 7, 8)], _pool((3, 3), (1, 2), (1, 1, 1, 1), count_include_pad=True), {}),
        ([(2, 3, 9)], _pool((4,), (3,), (0, 2), ceil_mode=True), {}),
    ],
    "maxpool": [
        ([(1, 2, 7, 8)], _pool((2, 2), (2, 2), (0, 0, 0, 0), dilation=[1, 1]), {}),
        ([(1, 2, 7, 8)], _pool((3, 2), (2, 2), (1, 0, 0, 1), dilation=[1, 2], ceil_mode=True), {}),
        ([(1, 2, 8, 8)], _pool((2, 2), (3, 3), (0, 0, 0, 0), dilation=[1, 1], ceil_mode=True), {}),
        ([(1, 1, 4, 4, 4)], _pool((2, 2, 2), (1, 2, 2), (0,) * 6, dilation=[1, 1, 1]), {}),
    ],
    "global_avgpool": [
        ([(2, 3, 4, 5)], {}, {}),
        ([(2, 3, 4)], {"keepdims": False}, {}),
    ],
    "mean": [
        ([(2, 3, 4)], {"axes": [-1]}, {}),
        ([(2, 3, 4)], {"axes": [0, 2], "keepdims": False}, {}),
        ([(2, 3, 4)], {"axes": []}, {}),
    ],
    "matmul": [
        ([(2, 3, 4), (2, 4, 5)], {}, {}),
        ([(2, 1, 3, 4), (5, 4, 6)], {}, {}),
        ([(4,), (2, 4, 3)], {}, {}),
        ([(2, 3, 4), (4,)], {}, {}),
        ([(4,), (4,)], {}, {}),
    ],
    "einsum": [
        ([(2, 3, 4), (2, 4, 5)], {"equation": "bij,bjk->bik"}, {}),
        ([(2, 7, 3, 4), (2, 7, 5, 4)], {"equation": "...qd,...kd->...qk"}, {}),
        ([(3, 4), (4, 5)], {"equation": "ij,jk"}, {}),
        ([(2, 3), (1, 3)], {"equation": "bi, bi -> b"}, {}),
    ],
    "layernorm": [
        ([(2, 3, 4)], {"axes": [-1], "eps": 1e-5}, {"weight": (4,), "bias": (4,)}),
        ([(2, 3, 4)], {"axes": [1, 2], "eps": 1e-6, "center": False}, {"weight": (3, 4)}),
    ],
    "groupnorm": [
        ([(2, 6, 4, 4)], {"groups": 3, "eps": 1e-5}, {"weight": (6,), "bias": (6,)}),
        ([(2, 4, 5)], {"groups": 4, "eps": 1e-5}, {}),
    ],
}

# Inputs, weights or attributes the real forward refuses: the shape function must refuse them too.
MISFITS = [
    ("add", [(2, 3), (4, 3)], {}, {}),
    ("add_const", [(2, 3)], {}, {"const": (2,)}),
    ("reshape", [(2, 3)], {"shape": [4, -1]}, {}),
    ("reshape", [(2, 3)], {"shape": [5]}, {}),
    ("permute", [(2, 3)], {"perm": [0, 0]}, {}),
    ("concat", [(2, 3), (3, 4)], {"axis": 1}, {}),
    ("slice", [(4, 6)], {"axes": [1], "indices": [[0, 6]]}, {}),
    ("gather", [(4, 6)], {"axis": 0, "indices": [4]}, {}),
    ("gather", [(4, 6)], {"axis": -1, "indices": [1, 2, 0]}, {}),
    ("expand", [(3, 2)], {"shape": [3, 4]}, {}),
    ("linear", [(2, 5)], {}, {"weight": (3, 4)}),
    ("conv", [(1, 4, 7, 8)], _conv(), {"weight": (6, 3, 3, 3)}),
    ("conv", [(1, 4, 2, 8)], _conv(), {"weight": (6, 4, 3, 3)}),
    ("conv", [(1, 4, 7)], _conv(), {"weight": (6, 4, 3, 3)}),
    ("conv_transpose", [(1, 4, 5, 6)], _convt(), {"weight": (3, 3, 3, 3)}),
    ("maxpool", [(1, 2, 2, 2)], _pool((3, 3), (1, 1), (0, 0, 0, 0), dilation=[1, 1]), {}),
    ("matmul", [(2, 3, 4), (5, 6)], {}, {}),
    ("matmul", [(2, 3, 4), (3, 4, 5)], {}, {}),
    ("einsum", [(2, 3), (4, 5)], {"equation": "ij,jk->ik"}, {}),
    ("softmax", [(2, 3)], {"axis": 2}, {}),
    ("groupnorm", [(2, 6, 5)], {"groups": 4, "eps": 1e-5}, {}),
]


def _tensor(name: str, shape: tuple[int, ...], generator: torch.Generator) -> torch.Tensor:
    if name == "cond":
        return torch.rand(shape, generator=generator) > 0.5
    # positive values: sqrt, rsqrt, pow and reciprocal stay finite (shapes do not depend on values)
    return torch.rand(shape, generator=generator, dtype=torch.float64) + 0.5


def _real_shape(op, inputs, attrs, params) -> tuple[int, ...]:
    generator = torch.Generator().manual_seed(0)
    tensors = [_tensor("x", s, generator) for s in inputs]
    weights = {k: _tensor(k, s, generator) for k, s in params.items()}
    return tuple(run_op(op, tensors, attrs, weights).shape)


def test_every_op_of_the_ir_has_a_shape_function_and_cases_here():
    families = set(ir.LINEAR_TYPE) | set(ir.POOLS) | ir.ACTIVATION_OPS | ir.ROUTING_OPS | set(ir.PRODUCTS)
    families |= set(ir.NORMS) | ir.FUSION_ONLY
    assert families <= set(OPS)
    assert set(SHAPES) == set(OPS)
    assert set(CASES) == set(OPS)


@pytest.mark.parametrize(
    ("op", "inputs", "attrs", "params"),
    [(op, *case) for op, cases in sorted(CASES.items()) for case in cases],
)
def test_inferred_shape_is_the_real_forwards(op, inputs, attrs, params):
    assert infer_shape(op, inputs, attrs, params) == _real_shape(op, inputs, attrs, params)


@pytest.mark.parametrize(("op", "inputs", "attrs", "params"), MISFITS)
def test_what_the_forward_refuses_the_shape_function_refuses(op, inputs, attrs, params):
    with pytest.raises((RuntimeError, IndexError, ValueError)):
        _real_shape(op, inputs, attrs, params)
    with pytest.raises(ShapeError):
        infer_shape(op, inputs, attrs, params)


def test_an_attribute_combination_the_forward_refuses_is_unsupported_in_both():
    inputs, attrs = (
        [(1, 2, 7, 8)],
        _pool((3, 3), (2, 2), (1, 1, 1, 1), ceil_mode=True, count_include_pad=True),
    )
    with pytest.raises(UnsupportedOpError):
        _real_shape("avgpool", inputs, attrs, {})
    with pytest.raises(UnsupportedOpError):
        infer_shape("avgpool", inputs, attrs, {})


def test_an_op_without_a_shape_function_is_a_shape_error_naming_it():
    with pytest.raises(ShapeError, match="'no_such_op'"):
        infer_shape("no_such_op", [(1,)], {}, {})
