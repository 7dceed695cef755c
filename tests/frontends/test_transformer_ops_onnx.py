"""ONNX converters of the transformer ops, each against onnxruntime (float32 and float64 IR): the normalizations,
Einsum, the fused Attention op (opset 23), Where / Expand / Concat with constants, torch's NaN guard after a
softmax, and the refusals (masks given as inputs, data-dependent conditions, fully masked rows)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from lrpaudit.errors import UnsupportedOpError
from lrpaudit.frontends.onnx import load_onnx
from tests.helpers.onnx_builders import check_against_ort, make_model, rand, save

node = helper.make_node


def ops_of(graph) -> list[str]:
    return [n.op for n in graph.nodes]


def refused(tmp_path, model, shapes, needle):
    with pytest.raises(UnsupportedOpError, match=needle):
        load_onnx(save(model, tmp_path)).graph(shapes)


# ---------------------------------------------------------------- normalizations


@pytest.mark.parametrize("axis,scale_shape", [(-1, (6,)), (-2, (5, 6)), (2, (1, 6)), (-1, (1, 1, 6))])
@pytest.mark.parametrize("with_bias", [True, False])
def test_layer_normalization(tmp_path, axis, scale_shape, with_bias):
    inits = {"s": rand(*scale_shape, seed=1) + 1}
    inputs = ["x", "s"]
    if with_bias:
        inits["b"] = rand(*scale_shape, seed=2)
        inputs.append("b")
    ln = node("LayerNormalization", inputs, ["y"], axis=axis, epsilon=1e-3)
    graph = check_against_ort(
        tmp_path, make_model([ln], {"x": (2, 4, 5, 6)}, ["y"], 17, inits), {"x": rand(2, 4, 5, 6)}
    )
    (norm,) = graph.nodes
    assert norm.op == "layernorm" and norm.attrs["center"] and norm.attrs["eps"] == pytest.approx(1e-3)
    assert norm.attrs["axes"] == tuple(range((axis % 4) - 4, 0))
    assert ("bias" in norm.params) == with_bias


def test_layer_normalization_scale_varying_along_other_axes_stays_elementwise(tmp_path):
    """A Scale that varies along a non-normalized axis is no LayerNorm weight: it becomes a mul_const after it."""
    inits = {"s": rand(4, 1, 6, seed=1)}
    ln = node("LayerNormalization", ["x", "s"], ["y"], axis=-1)
    graph = check_against_ort(
        tmp_path, make_model([ln], {"x": (2, 4, 3, 6)}, ["y"], 17, inits), {"x": rand(2, 4, 3, 6)}
    )
    assert ops_of(graph) == ["layernorm", "mul_const"]


def test_layer_normalization_statistics_outputs_are_refused(tmp_path):
    ln = node("LayerNormalization", ["x", "s"], ["y", "mean"], axis=-1)
    model = make_model([ln], {"x": (2, 6)}, ["y", "mean"], 17, {"s": rand(6)})
    refused(tmp_path, model, {"x": (2, 6)}, "statistics outputs")


def test_rms_normalization(tmp_path):
    rms = node("RMSNormalization", ["x", "s"], ["y"], axis=-1, epsilon=1e-4)
    model = make_model([rms], {"x": (2, 3, 8)}, ["y"], 23, {"s": rand(8, seed=1)})
    (norm,) = check_against_ort(tmp_path, model, {"x": rand(2, 3, 8)}).nodes
    assert norm.op == "layernorm" and not norm.attrs["center"] and "bias" not in norm.params


@pytest.mark.parametrize("opset", [18, 21])
def test_group_normalization_scale_per_group_before_21_per_channel_after(tmp_path, opset):
    """Opset 18 holds one scale per group (each repeated over its channels), opset 21 one per channel."""
    per = 2 if opset == 18 else 6
    inits = {"s": rand(per, seed=1) + 1, "b": rand(per, seed=2)}
    gn = node("GroupNormalization", ["x", "s", "b"], ["y"], num_groups=2, epsilon=1e-4)
    model = make_model([gn], {"x": (2, 6, 3, 3)}, ["y"], opset, inits)
    # onnx infers no shapes for GroupNormalization (a function op), and the checker needs the output's
    model.graph.output[0].CopyFrom(helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 6, 3, 3]))
    (norm,) = check_against_ort(tmp_path, model, {"x": rand(2, 6, 3, 3)}).nodes
    assert norm.op == "groupnorm" and norm.attrs["groups"] == 2 and tuple(norm.params["weight"].shape) == (6,)


def test_instance_normalization(tmp_path):
    inn = node("InstanceNormalization", ["x", "s", "b"], ["y"], epsilon=1e-3)
    model = make_model([inn], {"x": (2, 3, 4, 5)}, ["y"], 13, {"s": rand(3, seed=1), "b": rand(3, seed=2)})
    (norm,) = check_against_ort(tmp_path, model, {"x": rand(2, 3, 4, 5)}).nodes
    assert norm.op == "groupnorm" and norm.attrs["groups"] == 3


# ---------------------------------------------------------------- products


def test_einsum_of_two_activations(tmp_path):
    nodes = [node("Relu", ["x"], ["r"]), node("Einsum", ["x", "r"], ["y"], equation="bij, bkj -> bik")]
    graph = check_against_ort(tmp_path, make_model(nodes, {"x": (2, 3, 4)}, ["y"], 12), {"x": rand(2, 3, 4)})
    assert ops_of(graph) == ["relu", "einsum"] and graph.nodes[1].attrs["equation"] == "bij,bkj->bik"


def test_einsum_with_a_constant_is_refused(tmp_path):
    model = make_model(
        [node("Einsum", ["x", "w"], ["y"], equation="bi,ij->bj")], {"x": (2, 3)}, ["y"], 12, {"w": rand(3, 4)}
    )
    refused(tmp_path, model, {"x": (2, 3)}, "product of two activations")


# ---------------------------------------------------------------- Attention (opset 23)


def _attention(tmp_path, q_shape, kv_shape, inits=None, feeds_extra=None, **attrs):
    """Q from x; K, V from x2 (both graph inputs), then Attention."""
    inputs = ["q", "k", "v"] + (["mask"] if inits and "mask" in inits else [])
    nodes = [
        node("Relu", ["x"], ["q"]),
        node("Sigmoid", ["x2"], ["k"]),
        node("Tanh", ["x2"], ["v"]),
        node("Attention", inputs, ["y"], **attrs),
    ]
    model = make_model(nodes, {"x": q_shape, "x2": kv_shape}, ["y"], 23, inits or {})
    feeds = {"x": rand(*q_shape, seed=3), "x2": rand(*kv_shape, seed=4)}
    return check_against_ort(tmp_path, model, feeds)


@pytest.mark.parametrize("causal", [0, 1])
def test_attention_3d_heads(tmp_path, causal):
    graph = _attention(tmp_path, (2, 5, 8), (2, 5, 8), q_num_heads=2, kv_num_heads=2, is_causal=causal)
    assert {"matmul", "softmax", "mul_const"} <= set(ops_of(graph))
    assert ("where" in ops_of(graph)) == bool(causal)


def test_attention_4d_with_scale_and_grouped_query_heads(tmp_path):
    """4 query heads share 2 key/value heads; an explicit scale; 3 queries attend 5 keys."""
    graph = _attention(tmp_path, (2, 4, 3, 6), (2, 2, 5, 6), scale=0.3)
    assert "gather" in ops_of(graph)


def test_attention_bool_and_float_masks(tmp_path):
    allowed = np.array([[1, 1, 0, 1, 1], [0, 1, 1, 1, 0], [1, 0, 0, 0, 1]], dtype=bool)
    graph = _attention(tmp_path, (2, 2, 3, 4), (2, 2, 5, 4), {"mask": allowed})
    assert "where" in ops_of(graph)
    additive = rand(1, 2, 3, 5, seed=7)
    additive[0, 0, 1, 2] = -np.inf
    graph = _attention(tmp_path, (2, 2, 3, 4), (2, 2, 5, 4), {"mask": additive})
    assert {"add_const", "where"} <= set(ops_of(graph))


def test_attention_softcap(tmp_path):
    graph = _attention(tmp_path, (2, 2, 3, 4), (2, 2, 3, 4), softcap=2.0)
    assert "tanh" in ops_of(graph)


def test_attention_mask_given_as_an_input_is_refused(tmp_path):
    nodes = [node("Attention", ["q", "q", "q", "m"], ["y"])]
    model = make_model(nodes, {"q": (1, 2, 3, 4), "m": (3, 3)}, ["y"], 23)
    refused(tmp_path, model, {"q": (1, 2, 3, 4), "m": (3, 3)}, "mask given as a graph input is data")


def test_attention_fully_masked_row_is_refused(tmp_path):
    mask = np.ones((3, 3), dtype=bool)
    mask[1] = False
    model = make_model(
        [node("Attention", ["q", "q", "q", "m"], ["y"])], {"q": (1, 2, 3, 4)}, ["y"], 23, {"m": mask}
    )
    refused(tmp_path, model, {"q": (1, 2, 3, 4)}, "fully masked row")


def test_attention_key_value_cache_is_refused(tmp_path):
    nodes = [node("Attention", ["q", "q", "q", "", "pk", "pv"], ["y"])]
    inits = {"pk": rand(1, 2, 2, 4), "pv": rand(1, 2, 2, 4)}
    refused(tmp_path, make_model(nodes, {"q": (1, 2, 3, 4)}, ["y"], 23, inits), {"q": (1, 2, 3, 4)}, "cache")


# ---------------------------------------------------------------- Where / Expand / Concat with constants


@pytest.mark.parametrize("which", ["x_then_const", "const_then_x", "two"])
def test_where_with_a_constant_condition(tmp_path, which):
    cond = np.array([[True, False, True, False]])
    inits = {"c": cond, "k": rand(3, 4, seed=1)}
    a, b = {"x_then_const": ("r", "k"), "const_then_x": ("k", "r"), "two": ("r", "x")}[which]
    nodes = [node("Relu", ["x"], ["r"]), node("Where", ["c", a, b], ["y"])]
    graph = check_against_ort(tmp_path, make_model(nodes, {"x": (3, 4)}, ["y"], 16, inits), {"x": rand(3, 4)})
    where = graph.nodes[-1]
    assert where.op == "where" and len(where.inputs) == (2 if which == "two" else 1)
    if which != "two":
        assert where.attrs["input_when"] == (which == "x_then_const")


def test_where_broadcasting_a_smaller_activation_expands_it_first(tmp_path):
    inits = {"c": np.random.default_rng(0).random((2, 2, 3)) > 0.5, "k": rand(1)}
    nodes = [node("Relu", ["x"], ["r"]), node("Where", ["c", "r", "k"], ["y"])]
    graph = check_against_ort(
        tmp_path, make_model(nodes, {"x": (2, 1, 3)}, ["y"], 16, inits), {"x": rand(2, 1, 3)}
    )
    assert ops_of(graph) == ["relu", "expand", "where"]


def test_where_on_an_activation_condition_is_refused(tmp_path):
    nodes = [node("Greater", ["x", "z"], ["c"]), node("Where", ["c", "x", "z"], ["y"])]
    model = make_model(nodes, {"x": (2, 3)}, ["y"], 16, {"z": np.zeros(3, np.float32)})
    refused(tmp_path, model, {"x": (2, 3)}, "Greater")


def test_expand_an_activation(tmp_path):
    model = make_model(
        [node("Expand", ["x", "s"], ["y"])], {"x": (2, 1, 3)}, ["y"], 13, {"s": np.array([2, 4, 3])}
    )
    assert ops_of(check_against_ort(tmp_path, model, {"x": rand(2, 1, 3)})) == ["expand"]


def test_concat_with_a_class_token_and_an_empty_cache(tmp_path):
    inits = {"cls": rand(2, 1, 4, seed=1), "empty": np.zeros((2, 0, 4), np.float32)}
    nodes = [node("Relu", ["x"], ["r"]), node("Concat", ["cls", "empty", "r"], ["y"], axis=1)]
    graph = check_against_ort(
        tmp_path, make_model(nodes, {"x": (2, 3, 4)}, ["y"], 13, inits), {"x": rand(2, 3, 4)}
    )
    concat = graph.nodes[-1]
    assert concat.op == "concat" and concat.attrs["constants"] == ((0, "const0"),) and concat.inputs == ["r"]


# ---------------------------------------------------------------- torch's NaN guard after a softmax


def test_nan_guard_after_softmax_is_the_softmax(tmp_path):
    nodes = [
        node("Softmax", ["x"], ["p"], axis=-1),
        node("IsNaN", ["p"], ["n"]),
        node("Where", ["n", "zero", "p"], ["g"]),
        node("MatMul", ["g", "w"], ["y"]),
    ]
    inits = {"zero": np.zeros((), np.float32), "w": rand(4, 2)}
    graph = check_against_ort(
        tmp_path, make_model(nodes, {"x": (2, 3, 4)}, ["y"], 17, inits), {"x": rand(2, 3, 4)}
    )
    assert ops_of(graph) == ["softmax", "linear"]


def test_nan_test_of_anything_else_is_refused(tmp_path):
    nodes = [node("IsNaN", ["x"], ["n"]), node("Where", ["n", "zero", "x"], ["y"])]
    model = make_model(nodes, {"x": (2, 3)}, ["y"], 17, {"zero": np.zeros((), np.float32)})
    refused(tmp_path, model, {"x": (2, 3)}, "NaN guard after a softmax")


# ---------------------------------------------------------------- token ids


def _token_model(extra=(), consumer=None, opset=13):
    """ids (int64, [2, 5]) -> Unsqueeze/Squeeze -> Gather(table) -> ReduceMean -> Gemm."""
    nodes = [
        node("Unsqueeze", ["ids", "axes"], ["u"]),
        node("Squeeze", ["u", "axes"], ["s"]),
        node("Cast", ["s"], ["c"], to=TensorProto.INT32),
        node("Gather", ["table", "c"], ["e"]),
        node("ReduceMean", ["e"], ["m"], axes=[1], keepdims=0),
        node("Gemm", ["m", "w"], ["y"]),
        *extra,
    ]
    inits = {"axes": np.array([2], np.int64), "table": rand(7, 4, seed=1), "w": rand(4, 3, seed=2)}
    graph = helper.make_graph(
        nodes,
        "tokens",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, [2, 5])],
        [
            helper.make_tensor_value_info(name, TensorProto.FLOAT, None)
            for name in ["y", *([consumer] if consumer else [])]
        ],
        [onnx.numpy_helper.from_array(v, k) for k, v in inits.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    return onnx.shape_inference.infer_shapes(model)


def test_token_ids_through_reshapes_and_casts_to_their_embedding(tmp_path):
    model = load_onnx(save(_token_model(), tmp_path))
    assert model.integer_inputs == ["ids"]
    graph = model.graph({"ids": (2, 5)})
    (token,) = graph.token_inputs
    assert (token.name, token.embedded, token.vocab, token.index_shape) == ("ids", "e", 7, (2, 5))
    assert graph.inputs == ["e"] and ops_of(graph) == ["mean", "linear"]
    assert model.token_vocab({"ids": (2, 5)}) == {"ids": 7}


def test_token_ids_used_as_numbers_are_refused(tmp_path):
    extra = [node("Cast", ["ids"], ["f"], to=TensorProto.FLOAT), node("Add", ["f", "f"], ["z"])]
    refused(tmp_path, _token_model(extra, "z"), {"ids": (2, 5)}, "reads the integer input 'ids' as numbers")
