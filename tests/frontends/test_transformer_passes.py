"""The passes behind the transformer files, on small ONNX graphs checked against onnxruntime: decomposed
LayerNorm / RMSNorm fused into ``layernorm`` (the x - mean form, the x * rsqrt form, channels-first axes), tanh-GELU
and SiLU fused from their products, leftover steps refused, and ``batch_first`` following the batch through
sequence-first code and refusing ops that mix samples."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from onnx import helper

from lrpaudit.errors import UnsupportedOpError
from lrpaudit.frontends.onnx import load_onnx
from lrpaudit.ir import Graph, Node
from lrpaudit.ops import run_op
from lrpaudit.passes import batch_first
from tests.helpers.onnx_builders import check_against_ort, make_model, rand, save

node = helper.make_node


def ops_of(graph) -> list[str]:
    return [n.op for n in graph.nodes]


def refused(tmp_path, model, shapes, *needles):
    with pytest.raises(UnsupportedOpError) as info:
        load_onnx(save(model, tmp_path)).graph(shapes)
    for needle in needles:
        assert needle in str(info.value)


# ---------------------------------------------------------------- decomposed normalizations


def _layernorm_nodes(form: str, axes: list[int], affine: bool) -> list:
    """The decompositions exporters and hand-written modules produce, ending in ``y``."""
    mean = lambda i, o: node("ReduceMean", [i], [o], axes=axes, keepdims=1)  # noqa: E731
    nodes = []
    if form in ("div", "reciprocal", "square_mul"):
        nodes += [mean("x", "mu"), node("Sub", ["x", "mu"], ["d"])]
        square = (
            node("Mul", ["d", "d"], ["sq"]) if form == "square_mul" else node("Pow", ["d", "two"], ["sq"])
        )
        nodes += [
            square,
            mean("sq", "var"),
            node("Add", ["var", "eps"], ["ve"]),
            node("Sqrt", ["ve"], ["sd"]),
        ]
        if form == "reciprocal":
            nodes += [node("Reciprocal", ["sd"], ["inv"]), node("Mul", ["inv", "d"], ["n"])]
        else:
            nodes += [node("Div", ["d", "sd"], ["n"])]
    else:  # rms: x * (1 / sqrt(mean(x^2) + eps))
        nodes += [node("Pow", ["x", "two"], ["sq"]), mean("sq", "var"), node("Add", ["var", "eps"], ["ve"])]
        nodes += [
            node("Sqrt", ["ve"], ["sd"]),
            node("Div", ["one", "sd"], ["inv"]),
            node("Mul", ["x", "inv"], ["n"]),
        ]
    if affine:
        nodes += [node("Mul", ["n", "gamma"], ["g"]), node("Add", ["g", "beta"], ["y"])]
    else:
        nodes += [node("Identity", ["n"], ["y"])]
    return nodes


@pytest.mark.parametrize("form", ["div", "reciprocal", "square_mul", "rms"])
@pytest.mark.parametrize("affine", [True, False])
def test_decomposed_layernorm_is_one_layernorm(tmp_path, form, affine):
    inits = {
        "two": np.array(2.0, np.float32),
        "one": np.array(1.0, np.float32),
        "eps": np.array(1e-5, np.float32),
        "gamma": rand(6, seed=1),
        "beta": rand(6, seed=2),
    }
    model = make_model(_layernorm_nodes(form, [-1], affine), {"x": (2, 3, 6)}, ["y"], 13, inits)
    graph = check_against_ort(tmp_path, model, {"x": rand(2, 3, 6)})
    (norm,) = graph.nodes
    assert norm.op == "layernorm" and norm.attrs["center"] == (form != "rms")
    assert norm.attrs["axes"] == (-1,) and norm.attrs["eps"] == pytest.approx(1e-5)
    assert sorted(norm.params) == (["bias", "weight"] if affine else [])


def test_decomposed_layernorm_over_channels_is_moved_to_the_last_axis(tmp_path):
    """A channels-first LayerNorm (mean over axis 1 of NCHW, gamma of shape (C, 1, 1)): permute, norm, permute."""
    inits = {
        "two": np.array(2.0, np.float32),
        "eps": np.array(1e-6, np.float32),
        "gamma": rand(4, 1, 1, seed=1),
        "beta": rand(4, 1, 1, seed=2),
    }
    model = make_model(_layernorm_nodes("div", [1], True), {"x": (2, 4, 3, 5)}, ["y"], 13, inits)
    graph = check_against_ort(tmp_path, model, {"x": rand(2, 4, 3, 5)})
    assert ops_of(graph) == ["permute", "layernorm", "permute"]
    assert tuple(graph.nodes[1].params["weight"].shape) == (4,)


def test_a_gamma_varying_along_other_axes_stays_a_mul_const(tmp_path):
    inits = {"two": np.array(2.0, np.float32), "eps": np.array(1e-5, np.float32)}
    inits |= {"gamma": rand(3, 6, seed=1), "beta": rand(6, seed=2)}
    model = make_model(_layernorm_nodes("div", [-1], True), {"x": (2, 3, 6)}, ["y"], 13, inits)
    assert ops_of(check_against_ort(tmp_path, model, {"x": rand(2, 3, 6)})) == [
        "layernorm",
        "mul_const",
        "add_const",
    ]


def test_a_step_no_pattern_takes_is_refused(tmp_path):
    nodes = [node("Sqrt", ["x"], ["s"], name="root"), node("Relu", ["s"], ["y"])]
    model = make_model(nodes, {"x": (2, 3)}, ["y"], 13)
    refused(tmp_path, model, {"x": (2, 3)}, "'root'", "Sqrt, opset 13", "no LRP rule")


# ---------------------------------------------------------------- GELU (tanh) and SiLU


def _tanh_gelu(cube: str, order: str) -> list:
    nodes = (
        [node("Pow", ["x", "three"], ["c"])]
        if cube == "pow"
        else [node("Mul", ["x", "x"], ["xx"]), node("Mul", ["x", "xx"], ["c"])]
    )
    nodes += [
        node("Mul", ["c", "kappa"], ["kc"]),
        node("Add", ["x", "kc"], ["inner"]),
        node("Mul", ["inner", "beta"], ["scaled"]),
        node("Tanh", ["scaled"], ["t"]),
        node("Add", ["t", "one"], ["g"]),
    ]
    if order == "half_x":  # GPT-2's gelu_new: 0.5 * x * (1 + tanh(..))
        nodes += [node("Mul", ["x", "half"], ["hx"]), node("Mul", ["hx", "g"], ["y"])]
    else:  # torch's legacy export: 0.5 * (x * (1 + tanh(..)))
        nodes += [node("Mul", ["x", "g"], ["xg"]), node("Mul", ["xg", "half"], ["y"])]
    return nodes


@pytest.mark.parametrize("cube", ["pow", "mul"])
@pytest.mark.parametrize("order", ["half_x", "half_product"])
def test_tanh_gelu_is_one_gelu(tmp_path, cube, order):
    inits = {
        name: np.array(value, np.float32)
        for name, value in (
            ("three", 3),
            ("kappa", 0.044715),
            ("beta", math.sqrt(2 / math.pi)),
            ("one", 1),
            ("half", 0.5),
        )
    }
    model = make_model(_tanh_gelu(cube, order), {"x": (2, 7)}, ["y"], 13, inits)
    (gelu,) = check_against_ort(tmp_path, model, {"x": 3 * rand(2, 7)}).nodes
    assert gelu.op == "gelu" and gelu.attrs["approximate"] == "tanh"


def test_silu_is_one_silu_and_other_sigmoid_products_stay_gates(tmp_path):
    nodes = [
        node("Sigmoid", ["x"], ["s"]),
        node("Mul", ["x", "s"], ["a"]),
        node("Mul", ["x", "k"], ["kx"]),
        node("Sigmoid", ["kx"], ["s2"]),
        node("Mul", ["a", "s2"], ["y"]),
    ]
    model = make_model(nodes, {"x": (2, 5)}, ["y"], 13, {"k": np.array(1.702, np.float32)})
    graph = check_against_ort(tmp_path, model, {"x": rand(2, 5)})
    assert ops_of(graph) == ["silu", "mul_const", "sigmoid", "mul"]
    assert graph.nodes[-1].attrs["gate"] == 1


# ---------------------------------------------------------------- the batch axis


def _sequence_first(softmax_axis: int = -1) -> list:
    """(B, L, E) -> (L, B, E) -> linear -> (L*B, E) -> Gemm -> (L, B, E) -> softmax -> back to (B, L, E)."""
    return [
        node("Transpose", ["x"], ["t"], perm=[1, 0, 2]),
        node("MatMul", ["t", "w1"], ["h"]),
        node("Reshape", ["h", "flat"], ["f"]),
        node("Gemm", ["f", "w2"], ["g"], transB=1),
        node("Reshape", ["g", "back"], ["r"]),
        node("Softmax", ["r"], ["s"], axis=softmax_axis),
        node("Transpose", ["s"], ["y"], perm=[1, 0, 2]),
    ]


@pytest.mark.parametrize("batch", [1, 3])
def test_sequence_first_values_are_rewritten_batch_first(tmp_path, batch):
    inits = {
        "w1": rand(4, 6, seed=1),
        "w2": rand(6, 6, seed=2),
        "flat": np.array([5 * batch, 6]),
        "back": np.array([5, batch, 6]),
    }
    model = make_model(_sequence_first(), {"x": (batch, 5, 4)}, ["y"], 13, inits)
    graph = check_against_ort(tmp_path, model, {"x": rand(batch, 5, 4)})
    assert all(graph.shapes[n.output][0] == batch for n in graph.nodes)
    softmax = next(n for n in graph.nodes if n.op == "softmax")
    assert softmax.attrs["axis"] == 2 and graph.shapes[softmax.output] == (batch, 5, 6)


def test_a_softmax_across_the_batch_is_refused(tmp_path):
    inits = {"w1": rand(4, 6), "w2": rand(6, 6), "flat": np.array([10, 6]), "back": np.array([5, 2, 6])}
    model = make_model(_sequence_first(softmax_axis=1), {"x": (2, 5, 4)}, ["y"], 13, inits)
    refused(tmp_path, model, {"x": (2, 5, 4)}, "a softmax along the batch axis mixes samples")


def test_an_output_with_the_batch_elsewhere_is_refused(tmp_path):
    model = make_model([node("Transpose", ["x"], ["y"], perm=[1, 0, 2])], {"x": (2, 5, 4)}, ["y"], 13)
    refused(tmp_path, model, {"x": (2, 5, 4)}, "output 'y' of shape [5, 2, 4]", "on axis 1")


def test_reshapes_that_split_or_move_the_batch_are_refused(tmp_path):
    model = make_model(
        [node("Reshape", ["x", "s"], ["y"])], {"x": (4, 6)}, ["y"], 13, {"s": np.array([2, 12])}
    )
    refused(tmp_path, model, {"x": (4, 6)}, "splits the batch axis")


def test_batch_first_on_a_merged_batch_and_heads():
    """(B*H, L, D) from a batch-major merge: the batch-first form is (B, H, L, D), computed on the IR directly."""
    batch, heads, length, depth = 2, 3, 4, 5
    nodes = [
        Node("split", "reshape", ["x"], ["m"], {"shape": (batch * heads, length, depth)}),
        Node("soft", "softmax", ["m"], ["s"], {"axis": 2, "coerce_2d": False}),
        Node("back", "reshape", ["s"], ["y"], {"shape": (batch, heads, length, depth)}),
    ]
    shapes = {
        "x": (batch, heads, length, depth),
        "m": (batch * heads, length, depth),
        "s": (6, 4, 5),
        "y": (2, 3, 4, 5),
    }
    graph = batch_first(Graph(["x"], ["y"], nodes, shapes))
    assert [graph.shapes[n.output] for n in graph.nodes] == [(2, 3, 4, 5)] * 3
    x = torch.randn(shapes["x"], dtype=torch.float64)
    values = {"x": x}
    for n in graph.nodes:
        values[n.output] = run_op(n.op, [values[i] for i in n.inputs], n.attrs, n.params)
    assert torch.allclose(values["y"], torch.softmax(x, dim=3))


def test_a_layernorm_over_the_batch_axis_is_refused(tmp_path):
    """LayerNormalization from axis 0 normalizes across the samples."""
    model = make_model(
        [node("LayerNormalization", ["x", "s"], ["y"], axis=0)], {"x": (3, 4)}, ["y"], 17, {"s": rand(3, 4)}
    )
    refused(tmp_path, model, {"x": (3, 4)}, "a normalization along the batch axis mixes samples")


@pytest.mark.parametrize("finite", [False, True])
def test_an_additive_mask_of_minus_inf_becomes_a_where(tmp_path, finite):
    """Softmax(x + mask) with -inf entries (the legacy export of SDPA with a mask): the -inf positions are selected
    out (where), a finite rest stays an add_const; the function is the same."""
    mask = rand(3, 4, seed=1) if finite else np.zeros((3, 4), np.float32)
    mask[0, 1] = mask[2, 3] = -np.inf
    nodes = [node("Add", ["x", "m"], ["s"]), node("Softmax", ["s"], ["y"], axis=-1)]
    graph = check_against_ort(
        tmp_path, make_model(nodes, {"x": (2, 3, 4)}, ["y"], 13, {"m": mask}), {"x": rand(2, 3, 4)}
    )
    assert ops_of(graph) == (["add_const", "where", "softmax"] if finite else ["where", "softmax"])
    assert torch.isfinite(graph.nodes[0].params.get("const", torch.zeros(1))).all()


def test_a_bias_written_out_over_the_tokens_fuses_into_the_linear(tmp_path):
    """nn.MultiheadAttention's sequence-first in-projection (both ONNX exporters): MatMul + Add(bias) on (L, B, E).
    Rewritten batch first, the bias broadcasts to (1, L, E); it is still one per output, so it fuses."""
    nodes = [
        node("Transpose", ["x"], ["t"], perm=[1, 0, 2]),
        node("MatMul", ["t", "w"], ["h"]),
        node("Add", ["b", "h"], ["hb"]),
        node("Transpose", ["hb"], ["y"], perm=[1, 0, 2]),
    ]
    model = make_model(nodes, {"x": (2, 5, 4)}, ["y"], 13, {"w": rand(4, 6, seed=1), "b": rand(6, seed=2)})
    graph = check_against_ort(tmp_path, model, {"x": rand(2, 5, 4)})
    (linear,) = [n for n in graph.nodes if n.op == "linear"]
    assert "add_const" not in ops_of(graph)
    assert torch.equal(linear.params["bias"], torch.from_numpy(rand(6, seed=2)).double())


def test_a_constant_that_varies_over_the_tokens_is_no_bias(tmp_path):
    """A position-dependent add after a linear (a position embedding) stays an add_const."""
    nodes = [node("MatMul", ["x", "w"], ["h"]), node("Add", ["h", "p"], ["y"])]
    model = make_model(nodes, {"x": (2, 5, 4)}, ["y"], 13, {"w": rand(4, 6, seed=1), "p": rand(5, 6, seed=2)})
    graph = check_against_ort(tmp_path, model, {"x": rand(2, 5, 4)})
    assert ops_of(graph) == ["linear", "add_const"] and "bias" not in graph.nodes[0].params


@pytest.mark.parametrize("where", ["both", "query", "shared"])
def test_scalar_factors_of_a_product_move_behind_it(tmp_path, where):
    """(q sqrt(s)) (k^T sqrt(s)), as both ONNX exporters decompose SDPA, becomes (q k^T) s, the form of eager code
    and of a traced SDPA: the same function, so the product's stabilizer sees the same value in every file. A scale
    whose value has another reader ("shared") stays where it is."""
    half = np.array(0.5, np.float32)
    if where == "shared":
        nodes = [
            node("Mul", ["q", "c"], ["qs"]),
            node("MatMul", ["qs", "k"], ["p"]),
            node("Add", ["p", "qs"], ["y"]),
        ]
        shapes = {"q": (2, 3, 3), "k": (2, 3, 3)}
    else:
        nodes = [node("Mul", ["q", "c"], ["qs"]), node("MatMul", ["qs", "ks"], ["y"])]
        nodes.insert(1, node("Mul", ["k", "c"] if where == "both" else ["k", "one"], ["ks"]))
        shapes = {"q": (2, 3, 4), "k": (2, 4, 5)}
    inits = {"c": half, "one": np.array(1.0, np.float32)}
    feeds = {name: rand(*shape, seed=i) for i, (name, shape) in enumerate(shapes.items())}
    graph = check_against_ort(tmp_path, make_model(nodes, shapes, ["y"], 13, inits), feeds)
    if where == "shared":
        assert ops_of(graph) == ["mul_const", "matmul", "add"]
        return
    assert ops_of(graph) == ["matmul", "mul_const"]
    product, scale = graph.nodes
    assert product.inputs == ["q", "k"] and scale.output == "y" and product.output == "y::unscaled"
    assert float(scale.params["const"]) == (0.25 if where == "both" else 0.5)
