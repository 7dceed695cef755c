"""The forwards of the transformer vocabulary and of the fusion-only steps against torch's own functions, in
float64: layernorm / RMSNorm / groupnorm (torch.nn.functional), matmul / einsum, softmax inside a graph, concat
with constant parts, expand, roll, where with a constant condition, and pow / sqrt / rsqrt / reciprocal / div."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from lrpaudit.ops import run_op

g = torch.Generator().manual_seed(0)


def r(*shape):
    return torch.randn(shape, generator=g, dtype=torch.float64)


X = r(2, 3, 4)
P = r(2, 3, 4).abs() + 0.5
W, B = r(3, 4), r(3, 4)
C = torch.rand((3, 4), generator=g) > 0.5

CASES = [
    (
        "layernorm",
        [X],
        {"axes": (-2, -1), "eps": 1e-3, "center": True},
        {"weight": W, "bias": B},
        F.layer_norm(X, (3, 4), W, B, 1e-3),
    ),
    (
        "layernorm",
        [X],
        {"axes": (-1,), "eps": 1e-5, "center": False},
        {"weight": W[0]},
        F.rms_norm(X, (4,), W[0], 1e-5),
    ),
    ("groupnorm", [r(2, 6, 5)], {"groups": 3, "eps": 1e-4}, {"weight": r(6), "bias": r(6)}, None),
    ("matmul", [X, r(2, 4, 5)], {}, {}, None),
    ("einsum", [X, r(2, 5, 4)], {"equation": "bij,bkj->bik"}, {}, None),
    ("softmax", [X], {"axis": 1, "coerce_2d": False}, {}, torch.softmax(X, 1)),
    ("concat", [X], {"axis": 1, "constants": ((0, "a"), (2, "b"))}, {"a": r(2, 1, 4), "b": r(2, 2, 4)}, None),
    ("expand", [r(2, 1, 4)], {"shape": (2, 3, 4)}, {}, None),
    ("roll", [X], {"shifts": (1, -2), "dims": (1, 2)}, {}, torch.roll(X, (1, -2), (1, 2))),
    (
        "where",
        [X],
        {"input_when": False},
        {"cond": C, "other": torch.tensor(-2.0, dtype=torch.float64)},
        X.masked_fill(C, -2.0),
    ),
    ("where", [X, P], {}, {"cond": C}, torch.where(C, X, P)),
    ("pow", [X], {"exponent": 3.0}, {}, X**3),
    ("sqrt", [P], {}, {}, P.sqrt()),
    ("rsqrt", [P], {}, {}, 1 / P.sqrt()),
    ("reciprocal", [P], {}, {}, 1 / P),
    ("div", [X, P], {}, {}, X / P),
]


def _expected(op, inputs, attrs, params):
    if op == "groupnorm":
        return F.group_norm(inputs[0], attrs["groups"], params["weight"], params["bias"], attrs["eps"])
    if op == "matmul":
        return inputs[0] @ inputs[1]
    if op == "einsum":
        return torch.einsum("bij,bkj->bik", *inputs)
    if op == "concat":
        return torch.cat([params["a"], inputs[0], params["b"]], dim=1)
    if op == "expand":
        return inputs[0].repeat(1, 3, 1)
    raise AssertionError(op)


@pytest.mark.parametrize("op,inputs,attrs,params,expected", CASES, ids=[c[0] for c in CASES])
def test_forward_matches_torch(op, inputs, attrs, params, expected):
    expected = _expected(op, inputs, attrs, params) if expected is None else expected
    got = run_op(op, inputs, attrs, params)
    assert got.shape == expected.shape
    assert torch.allclose(got, expected, rtol=1e-12, atol=1e-12)
