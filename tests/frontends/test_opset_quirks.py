"""ONNX quirks across opsets (DESIGN section 4), one focused model each, onnxruntime as the oracle.

Each model is built with ``onnx.helper``, loaded through lrpaudit, run as IR in float32 and float64, and compared
with onnxruntime (optimizations off) to 1e-5 of the output scale. Structural assertions check the canonical IR
where the quirk is about the mapping (one ``linear`` with a bias, removed ops, a fused ``gelu``).
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from onnx import helper
from torch import nn

from lrpaudit.errors import ModelError, UnsupportedOpError
from lrpaudit.frontends.onnx import load_onnx
from tests.helpers.numeric import rel_diff
from tests.helpers.onnx_builders import check_against_ort, ir_outputs, make_model, rand, save
from tests.helpers.reference_models import export_onnx

node = helper.make_node


def ops_of(graph) -> list[str]:
    return [n.op for n in graph.nodes]


# ---------------------------------------------------------------- Gemm / MatMul


@pytest.mark.parametrize("trans_a", [0, 1])
@pytest.mark.parametrize("trans_b", [0, 1])
@pytest.mark.parametrize(
    "alpha,beta,c_shape",
    [(1.0, 1.0, (4,)), (0.5, 2.0, (1, 4)), (1.5, 0.25, (1,)), (2.0, -1.0, (3, 4)), (0.7, 1.0, None)],
)
def test_gemm_transposes_alpha_beta(tmp_path, trans_a, trans_b, alpha, beta, c_shape):
    """With transA the batch-first input (3, 5) is transposed first, so A is (5, 3) and the batch stays per sample."""
    b = rand(4, 5, seed=1) if trans_b else rand(5, 4, seed=1)
    inits = {"B": b}
    inputs = ["at" if trans_a else "a", "B"]
    if c_shape is not None:
        inits["C"] = rand(*c_shape, seed=2)
        inputs.append("C")
    gemm = node("Gemm", inputs, ["y"], transA=trans_a, transB=trans_b, alpha=alpha, beta=beta)
    nodes = ([node("Transpose", ["a"], ["at"], perm=[1, 0])] if trans_a else []) + [gemm]
    model = make_model(nodes, {"a": (3, 5)}, ["y"], 13, inits)
    graph = check_against_ort(tmp_path, model, {"a": rand(3, 5, seed=3)})
    assert "linear" in ops_of(graph)
    if c_shape in ((4,), (1, 4), (1,)):
        linear = graph.nodes[-1]
        assert linear.op == "linear" and "bias" in linear.params


@pytest.mark.parametrize("x_shape", [(2, 8), (2, 5, 8)])
@pytest.mark.parametrize("bias_first", [False, True])
def test_matmul_add_const_is_one_linear_with_bias(tmp_path, x_shape, bias_first):
    inits = {"W": rand(8, 6, seed=1), "b": rand(6, seed=2)}
    add = node("Add", ["b", "h"] if bias_first else ["h", "b"], ["y"])
    model = make_model([node("MatMul", ["x", "W"], ["h"]), add], {"x": x_shape}, ["y"], 17, inits)
    graph = check_against_ort(tmp_path, model, {"x": rand(*x_shape, seed=3)})
    assert ops_of(graph) == ["linear"]
    linear = graph.nodes[0]
    assert torch.equal(linear.params["weight"], torch.from_numpy(inits["W"].T.astype(np.float64)))
    assert torch.equal(linear.params["bias"], torch.from_numpy(inits["b"].astype(np.float64)))
    assert linear.origin["ops"] == ["MatMul", "Add"]


def test_matmul_add_full_shape_const_is_not_a_bias(tmp_path):
    """An added constant that varies over more than the feature axis must stay a separate add_const."""
    inits = {"W": rand(8, 6, seed=1), "c": rand(5, 6, seed=2)}
    nodes = [node("MatMul", ["x", "W"], ["h"]), node("Add", ["h", "c"], ["y"])]
    model = make_model(nodes, {"x": (2, 5, 8)}, ["y"], 17, inits)
    graph = check_against_ort(tmp_path, model, {"x": rand(2, 5, 8, seed=3)})
    assert ops_of(graph) == ["linear", "add_const"]


# ---------------------------------------------------------------- pooling


@pytest.mark.parametrize(
    "include_pad,pads,ceil_mode",
    [
        (0, [1, 1, 1, 1], 0),
        (1, [1, 1, 1, 1], 0),
        (0, [0, 1, 1, 0], 0),
        (1, [0, 1, 1, 0], 0),
        (1, [2, 0, 0, 1], 0),
        (0, [1, 1, 1, 1], 1),
        (0, [2, 0, 0, 1], 1),
        (0, [0, 0, 1, 1], 1),
        (0, [0, 0, 0, 0], 1),
    ],
)
@pytest.mark.parametrize("shape", [(2, 3, 8, 7), (2, 3, 7, 6)])
def test_averagepool_count_include_pad(tmp_path, include_pad, pads, ceil_mode, shape):
    pool = node(
        "AveragePool",
        ["x"],
        ["y"],
        kernel_shape=[3, 3],
        strides=[2, 2],
        pads=pads,
        count_include_pad=include_pad,
        ceil_mode=ceil_mode,
    )
    model = make_model([pool], {"x": shape}, ["y"], 11)
    graph = check_against_ort(tmp_path, model, {"x": rand(*shape) + 3.0})
    assert ops_of(graph) == ["avgpool"]
    assert graph.nodes[0].attrs["count_include_pad"] is bool(include_pad)


def test_averagepool_default_excludes_padding(tmp_path):
    """ONNX's default count_include_pad is 0 (torch's is True): a border output is the mean of real values."""
    pool = node("AveragePool", ["x"], ["y"], kernel_shape=[3, 3], pads=[1, 1, 1, 1])
    path = save(make_model([pool], {"x": (1, 1, 4, 4)}, ["y"], 11), tmp_path)
    _, (y,) = ir_outputs(path, {"x": np.ones((1, 1, 4, 4), np.float32)})
    assert torch.allclose(y, torch.ones_like(y))


@pytest.mark.parametrize("ceil_mode", [0, 1])
@pytest.mark.parametrize("shape", [(2, 3, 7, 6), (2, 3, 8, 5)])
@pytest.mark.parametrize("pads", [[0, 1, 2, 0], [1, 0, 0, 1], [1, 1, 1, 1], [0, 0, 1, 1]])
def test_maxpool_asymmetric_pads(tmp_path, pads, shape, ceil_mode):
    pool = node("MaxPool", ["x"], ["y"], kernel_shape=[3, 2], strides=[2, 2], pads=pads, ceil_mode=ceil_mode)
    model = make_model([pool], {"x": shape}, ["y"], 12)
    # all-negative input: padding with zeros instead of -inf would change the border maxima
    graph = check_against_ort(tmp_path, model, {"x": -np.abs(rand(*shape)) - 1.0})
    assert ops_of(graph) == ["maxpool"]


# ---------------------------------------------------------------- reductions, shapes


@pytest.mark.parametrize("opset", [13, 18])
@pytest.mark.parametrize(
    "axes,keepdims,expected",
    [([2, 3], 1, "global_avgpool"), ([2, 3], 0, "global_avgpool"), ([-1], 1, "mean"), ([1], 0, "mean")],
)
def test_reducemean_axes_attribute_vs_input(tmp_path, opset, axes, keepdims, expected):
    if opset < 18:
        nodes, inits = [node("ReduceMean", ["x"], ["y"], axes=axes, keepdims=keepdims)], {}
    else:
        nodes = [node("ReduceMean", ["x", "axes"], ["y"], keepdims=keepdims)]
        inits = {"axes": np.array(axes, dtype=np.int64)}
    model = make_model(nodes, {"x": (2, 3, 4, 5)}, ["y"], opset, inits)
    graph = check_against_ort(tmp_path, model, {"x": rand(2, 3, 4, 5)})
    assert ops_of(graph) == [expected]


@pytest.mark.parametrize("opset", [11, 13])
def test_squeeze_unsqueeze_axes_attribute_vs_input(tmp_path, opset):
    if opset < 13:
        nodes = [
            node("Unsqueeze", ["x"], ["u"], axes=[1, -1]),
            node("Squeeze", ["u"], ["s"], axes=[-1]),
            node("Squeeze", ["s"], ["y"]),  # no axes: every size-1 dim
        ]
        inits = {}
    else:
        nodes = [
            node("Unsqueeze", ["x", "ax_u"], ["u"]),
            node("Squeeze", ["u", "ax_s"], ["s"]),
            node("Squeeze", ["s"], ["y"]),
        ]
        inits = {"ax_u": np.array([1, -1], np.int64), "ax_s": np.array([-1], np.int64)}
    model = make_model(nodes, {"x": (2, 3, 1, 4)}, ["y"], opset, inits)
    graph = check_against_ort(tmp_path, model, {"x": rand(2, 3, 1, 4)})
    assert graph.shapes[graph.outputs[0]] == (2, 3, 4)
    assert set(ops_of(graph)) == {"reshape"}


@pytest.mark.parametrize(
    "target,expected",
    [([0, -1], (2, 60)), ([0, 0, -1], (2, 3, 20)), ([-1, 5], (24, 5)), ([0, 5, 0, -1], (2, 5, 4, 3))],
)
def test_reshape_zero_copies_and_minus_one_infers(tmp_path, target, expected):
    """The converter's shapes (raw IR: [-1, 5] merges the batch into axis 0, which the audit refuses)."""
    model = make_model(
        [node("Reshape", ["x", "shape"], ["y"])],
        {"x": (2, 3, 4, 5)},
        ["y"],
        13,
        {"shape": np.array(target, np.int64)},
    )
    graph = check_against_ort(tmp_path, model, {"x": rand(2, 3, 4, 5)}, raw=True)
    assert graph.shapes[graph.outputs[0]] == expected


def test_transpose_default_perm_reverses_axes(tmp_path):
    """The converter's perm (raw IR: the output has the batch last, which the audit refuses)."""
    model = make_model([node("Transpose", ["x"], ["y"])], {"x": (2, 3, 4)}, ["y"], 13)
    graph = check_against_ort(tmp_path, model, {"x": rand(2, 3, 4)}, raw=True)
    assert graph.nodes[0].attrs["perm"] == (2, 1, 0)


def test_flatten_axis(tmp_path):
    """The converter's shape (raw IR: axis 2 merges the batch with axis 1, which the audit refuses)."""
    model = make_model([node("Flatten", ["x"], ["y"], axis=2)], {"x": (2, 3, 4, 5)}, ["y"], 13)
    graph = check_against_ort(tmp_path, model, {"x": rand(2, 3, 4, 5)}, raw=True)
    assert graph.shapes[graph.outputs[0]] == (6, 20)


# ---------------------------------------------------------------- convolutions


@pytest.mark.parametrize("auto_pad", ["SAME_UPPER", "SAME_LOWER", "VALID"])
@pytest.mark.parametrize("kernel,stride", [((2, 2), (1, 1)), ((4, 3), (2, 2)), ((3, 3), (2, 1))])
def test_conv_auto_pad(tmp_path, auto_pad, kernel, stride):
    inits = {"W": rand(4, 3, *kernel, seed=1), "b": rand(4, seed=2)}
    conv = node("Conv", ["x", "W", "b"], ["y"], auto_pad=auto_pad, strides=list(stride))
    model = make_model([conv], {"x": (2, 3, 7, 8)}, ["y"], 11, inits)
    graph = check_against_ort(tmp_path, model, {"x": rand(2, 3, 7, 8)})
    assert ops_of(graph) == ["conv"]


@pytest.mark.parametrize("pads", [[0, 1, 2, 0], [2, 0, 1, 1], [1, 2, 1, 2]])
@pytest.mark.parametrize("group", [1, 3])
def test_conv_asymmetric_pads(tmp_path, pads, group):
    inits = {"W": rand(6, 6 // group, 3, 2, seed=1)}
    conv = node("Conv", ["x", "W"], ["y"], pads=pads, group=group, dilations=[1, 2])
    model = make_model([conv], {"x": (2, 6, 7, 8)}, ["y"], 11, inits)
    check_against_ort(tmp_path, model, {"x": rand(2, 6, 7, 8)})


@pytest.mark.parametrize(
    "attrs",
    [
        {"strides": [2, 2], "output_padding": [1, 0]},
        {"strides": [3, 2], "pads": [1, 0, 2, 1]},
        {"strides": [2, 2], "pads": [0, 1, 1, 0], "output_padding": [1, 1]},
        {"strides": [2, 2], "output_shape": [10, 9]},
        {"strides": [2, 3], "output_shape": [11, 13], "group": 2},
        {"strides": [2, 2], "auto_pad": "SAME_UPPER"},
        {"strides": [2, 2], "auto_pad": "SAME_LOWER"},
        {"strides": [1, 2], "dilations": [2, 1], "pads": [1, 1, 1, 1], "group": 2},
    ],
    ids=lambda a: "-".join(f"{k}{v}" for k, v in a.items()),
)
def test_conv_transpose_padding_variants(tmp_path, attrs):
    groups = attrs.get("group", 1)
    inits = {"W": rand(4, 6 // groups, 3, 3, seed=1), "b": rand(6, seed=2)}
    model = make_model(
        [node("ConvTranspose", ["x", "W", "b"], ["y"], **attrs)], {"x": (2, 4, 5, 4)}, ["y"], 11, inits
    )
    graph = check_against_ort(tmp_path, model, {"x": rand(2, 4, 5, 4)})
    assert ops_of(graph) == ["conv_transpose"]


# ---------------------------------------------------------------- softmax, sums, removed ops


@pytest.mark.parametrize("opset", [11, 13])
@pytest.mark.parametrize("axis", [1, 2, -1])
def test_softmax_coerce_to_2d_before_opset_13(tmp_path, opset, axis):
    model = make_model([node("Softmax", ["x"], ["y"], axis=axis)], {"x": (2, 3, 4, 5)}, ["y"], opset)
    x = rand(2, 3, 4, 5)
    graph = check_against_ort(tmp_path, model, {"x": x})
    _, (y,) = ir_outputs(tmp_path / "model.onnx", {"x": x})
    # the semantics really differ: opset 11 normalizes over all axes from `axis` on, opset 13 over one axis
    summed = y.sum(dim=tuple(range(axis % 4, 4)) if opset < 13 else axis)
    assert torch.allclose(summed, torch.ones_like(summed), atol=1e-5)
    assert ops_of(graph) == ["softmax"]


def test_softmax_opset11_default_axis_is_1(tmp_path):
    model = make_model([node("LogSoftmax", ["x"], ["y"])], {"x": (2, 3, 4)}, ["y"], 11)
    check_against_ort(tmp_path, model, {"x": rand(2, 3, 4)})


def test_sum_of_three_inputs(tmp_path):
    nodes = [
        node("Relu", ["x"], ["a"]),
        node("Sigmoid", ["x"], ["b"]),
        node("Tanh", ["x"], ["c"]),
        node("Sum", ["a", "b", "c"], ["y"]),
    ]
    graph = check_against_ort(tmp_path, make_model(nodes, {"x": (2, 5)}, ["y"], 13), {"x": rand(2, 5)})
    add = graph.nodes[-1]
    assert add.op == "add" and len(add.inputs) == 3


def test_sum_with_constant_operand(tmp_path):
    nodes = [node("Relu", ["x"], ["a"]), node("Sum", ["a", "x", "c"], ["y"])]
    model = make_model(nodes, {"x": (2, 5)}, ["y"], 13, {"c": rand(5, seed=1)})
    graph = check_against_ort(tmp_path, model, {"x": rand(2, 5)})
    assert ops_of(graph) == ["relu", "add", "add_const"]


@pytest.mark.parametrize("opset", [9, 11, 13])
def test_dropout_and_identity_vanish(tmp_path, opset):
    inits = {}
    if opset >= 12:
        dropout = node("Dropout", ["i", "ratio"], ["d"])
        inits["ratio"] = np.array(0.5, np.float32)
    else:
        dropout = node("Dropout", ["i"], ["d"], ratio=0.5)
    nodes = [
        node("Identity", ["x"], ["i"]),
        dropout,
        node("Relu", ["d"], ["r"]),
        node("Identity", ["r"], ["y"]),
    ]
    model = make_model(nodes, {"x": (2, 5)}, ["y"], opset, inits)
    graph = check_against_ort(tmp_path, model, {"x": rand(2, 5)})
    assert ops_of(graph) == ["relu"]
    assert graph.inputs == ["x"] and graph.nodes[0].inputs == ["x"]


def test_declared_but_unread_optional_outputs_are_no_use(tmp_path):
    """A Dropout mask or MaxPool indices output that is declared but read by no node is not a use (the opset-9
    model-zoo files declare Dropout masks): the model loads and matches onnxruntime. (BatchNormalization's
    declared statistics outputs are different: before opset 14 they mean training mode, and stay refused.)"""
    nodes = [
        node("Dropout", ["x"], ["d", "mask"], ratio=0.5),
        node("MaxPool", ["d"], ["y", "indices"], kernel_shape=[2, 2]),
    ]
    model = make_model(nodes, {"x": (1, 3, 4, 4)}, ["y"], 9)
    graph = check_against_ort(tmp_path, model, {"x": rand(1, 3, 4, 4)})
    assert ops_of(graph) == ["maxpool"]


@pytest.mark.parametrize(
    "op, outputs, message",
    [
        ("Dropout", ["y", "mask"], "Dropout mask output is used"),
        ("MaxPool", ["y", "mask"], "MaxPool with an Indices output"),
    ],
)
def test_read_optional_outputs_are_refused(tmp_path, op, outputs, message):
    """An optional output that a node reads is a use: refused naming the node."""
    attrs = {"kernel_shape": [2, 2]} if op == "MaxPool" else {}
    nodes = [
        node(op, ["x"], outputs, name="n0", **attrs),
        node("Cast", ["mask"], ["mask_f"], to=onnx.TensorProto.FLOAT),
        node("Add", ["y", "mask_f"], ["z"]),
    ]
    model = make_model(nodes, {"x": (1, 2, 4, 4)}, ["z"], 13)
    with pytest.raises(UnsupportedOpError, match=f"node 'n0'.*{message}"):
        load_onnx(save(model, tmp_path)).graph({"x": (1, 2, 4, 4)})


# ---------------------------------------------------------------- activations


@pytest.mark.parametrize("bounds", [(-0.5, 0.7), (None, 0.3), (-0.2, None)])
@pytest.mark.parametrize("opset", [9, 11, 13])
def test_clip_attributes_vs_inputs(tmp_path, bounds, opset):
    low, high = bounds
    inits: dict = {}
    if opset < 11:
        attrs = {k: v for k, v in (("min", low), ("max", high)) if v is not None}
        clip = node("Clip", ["x"], ["y"], **attrs)
    else:
        names = []
        for key, value in (("lo", low), ("hi", high)):
            if value is not None:
                inits[key] = np.array(value, np.float32)
            names.append(key if value is not None else "")
        clip = node("Clip", ["x", *names], ["y"])
    graph = check_against_ort(
        tmp_path, make_model([clip], {"x": (2, 7)}, ["y"], opset, inits), {"x": rand(2, 7)}
    )
    assert graph.nodes[0].op == "clip"
    assert (graph.nodes[0].attrs["min"], graph.nodes[0].attrs["max"]) == pytest.approx(bounds, abs=1e-7)


@pytest.mark.parametrize("opset", [9, 13])
def test_clip_without_bounds_is_identity(tmp_path, opset):
    graph = check_against_ort(
        tmp_path, make_model([node("Clip", ["x"], ["y"])], {"x": (2, 7)}, ["y"], opset), {"x": rand(2, 7)}
    )
    assert ops_of(graph) == ["clip"]


@pytest.mark.parametrize(
    "op,attrs,ir_op",
    [
        ("HardSigmoid", {}, "hardsigmoid"),
        ("HardSigmoid", {"alpha": 1 / 6, "beta": 0.5}, "hardsigmoid"),
        ("HardSigmoid", {"alpha": 0.3, "beta": 0.4}, "hardsigmoid"),
        ("LeakyRelu", {}, "leaky_relu"),
        ("LeakyRelu", {"alpha": 0.2}, "leaky_relu"),
        ("Elu", {}, "elu"),
        ("Elu", {"alpha": 0.5}, "elu"),
        ("HardSwish", {}, "hardswish"),
        ("Softplus", {}, "softplus"),
        ("Sigmoid", {}, "sigmoid"),
        ("Tanh", {}, "tanh"),
        ("Relu", {}, "relu"),
    ],
)
def test_elementwise_activations(tmp_path, op, attrs, ir_op):
    model = make_model([node(op, ["x"], ["y"], **attrs)], {"x": (2, 3, 5)}, ["y"], 14)
    graph = check_against_ort(tmp_path, model, {"x": 3 * rand(2, 3, 5)})
    assert ops_of(graph) == [ir_op]


@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_gelu_opset20(tmp_path, approximate):
    model = make_model([node("Gelu", ["x"], ["y"], approximate=approximate)], {"x": (2, 9)}, ["y"], 20)
    graph = check_against_ort(tmp_path, model, {"x": 3 * rand(2, 9)})
    assert ops_of(graph) == ["gelu"] and graph.nodes[0].attrs["approximate"] == approximate


@pytest.mark.parametrize("dynamo", [False, True])
def test_exported_gelu_is_one_gelu_node(tmp_path, dynamo):
    """The legacy exporter writes nn.GELU at opset 17 as the Erf pattern; it must fuse into one ``gelu``."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.GELU(), nn.Linear(8, 3)).eval()
    x = torch.randn(2, 6)
    path = export_onnx(model, x, tmp_path / "gelu.onnx", dynamo=dynamo, opset=17 if not dynamo else 20)
    graph, (y,) = ir_outputs(path, {"x": x.numpy()})
    assert ops_of(graph) == ["linear", "gelu", "linear"]
    with torch.no_grad():
        assert rel_diff(y, model(x).numpy()) <= 1e-5
    if not dynamo:
        assert "Erf" in [n.op_type for n in load_onnx(path).proto.graph.node]
    graph64, (y64,) = ir_outputs(path, {"x": x.double().numpy()}, torch.float64)
    with torch.no_grad():
        assert rel_diff(y64, model.double()(x.double()).numpy()) <= 1e-7  # float32-stored weights


def lrn_spec(x: np.ndarray, size: int, alpha: float, beta: float, bias: float) -> np.ndarray:
    """The ONNX LRN formula, written out loop by loop (onnx's reference evaluator iterates the wrong axis)."""
    x = x.astype(np.float64)
    square_sum = np.zeros_like(x)
    channels = x.shape[1]
    for c in range(channels):
        begin = max(0, c - (size - 1) // 2)
        end = min(channels - 1, c + int(np.ceil((size - 1) / 2)))
        square_sum[:, c] = (x[:, begin : end + 1] ** 2).sum(axis=1)
    return x / (bias + alpha / size * square_sum) ** beta


@pytest.mark.parametrize("size", [3, 4, 5])
def test_lrn_odd_and_even_size(tmp_path, size):
    """onnxruntime only implements odd sizes; the spec formula is the oracle for all of them."""
    lrn = node("LRN", ["x"], ["y"], size=size, alpha=0.5, beta=0.75, bias=2.0)
    model = make_model([lrn], {"x": (2, 7, 3, 3)}, ["y"], 13)
    x = 2 * rand(2, 7, 3, 3)
    if size % 2:
        check_against_ort(tmp_path, model, {"x": x})
    graph, (y,) = ir_outputs(save(model, tmp_path, "lrn.onnx"), {"x": x}, torch.float64)
    assert ops_of(graph) == ["lrn"]
    assert rel_diff(y, lrn_spec(x, size, 0.5, 0.75, 2.0)) <= 1e-12


# ---------------------------------------------------------------- routing ops


@pytest.mark.parametrize("mode", ["constant", "reflect", "edge"])
@pytest.mark.parametrize("opset", [2, 10, 11, 18])
def test_pad_modes_attribute_vs_input(tmp_path, mode, opset):
    pads = [0, 1, 2, 1, 0, 2, 1, 0]  # begins then ends, for (N, C, H, W): pads C, H and W
    inits: dict = {}
    if opset < 11:
        attrs = {"mode": mode, "pads": pads}
        if mode == "constant":
            attrs["value"] = 1.5
        pad = node("Pad", ["x"], ["y"], **attrs)
    else:
        inits["pads"] = np.array(pads, np.int64)
        names = ["x", "pads"]
        if mode == "constant":
            inits["value"] = np.array(1.5, np.float32)
            names.append("value")
        pad = node("Pad", names, ["y"], mode=mode)
    if opset == 18:  # axes input: pad only H and W
        inits["pads"] = np.array([2, 1, 1, 0], np.int64)
        inits["axes"] = np.array([2, -1], np.int64)
        pad = node("Pad", ["x", "pads", "value" if mode == "constant" else "", "axes"], ["y"], mode=mode)
    model = make_model([pad], {"x": (2, 3, 4, 5)}, ["y"], opset, inits)
    graph = check_against_ort(tmp_path, model, {"x": rand(2, 3, 4, 5)})
    assert ops_of(graph) == ["pad"]


def test_pad_negative_crops(tmp_path):
    inits = {"pads": np.array([0, 0, -1, 1, 0, 0, 1, -2], np.int64)}
    model = make_model([node("Pad", ["x", "pads"], ["y"])], {"x": (2, 3, 4, 5)}, ["y"], 13, inits)
    check_against_ort(tmp_path, model, {"x": rand(2, 3, 4, 5)})


@pytest.mark.parametrize(
    "starts,ends,axes,steps",
    [
        ([0, 1], [1000, 3], None, None),  # no axes: axes 0..k-1; a whole batch axis is fine
        ([-1], [-1000], [2], [-1]),
        ([4, 0], [0, 5], [-1, 1], [-2, 2]),
        ([1], [1000], [-2], [1]),
        ([-2, 3], [1, -100], [3, 2], [-1, -1]),
    ],
)
def test_slice_negative_steps_and_axes(tmp_path, starts, ends, axes, steps):
    inits = {"starts": np.array(starts, np.int64), "ends": np.array(ends, np.int64)}
    names = ["x", "starts", "ends"]
    if axes is not None:
        inits["axes"] = np.array(axes, np.int64)
        names.append("axes")
    if steps is not None:
        inits["steps"] = np.array(steps, np.int64)
        names.append("steps")
    x_shape = (2, 3, 6, 7)
    model = make_model([node("Slice", names, ["y"])], {"x": x_shape}, ["y"], 13, inits)
    check_against_ort(tmp_path, model, {"x": rand(*x_shape)})


def test_slice_opset9_attributes(tmp_path):
    model = make_model(
        [node("Slice", ["x"], ["y"], starts=[1, -3], ends=[3, 100], axes=[1, 3])],
        {"x": (2, 4, 3, 6)},
        ["y"],
        9,
    )
    check_against_ort(tmp_path, model, {"x": rand(2, 4, 3, 6)})


@pytest.mark.parametrize(
    "indices", [np.array(1), np.array(-1), np.array([2, 0, 2]), np.array([[0, 1], [-1, 1]])]
)
@pytest.mark.parametrize("axis", [1, 2, -1])
def test_gather_constant_indices(tmp_path, indices, axis):
    model = make_model(
        [node("Gather", ["x", "idx"], ["y"], axis=axis)],
        {"x": (2, 3, 4)},
        ["y"],
        13,
        {"idx": indices.astype(np.int64)},
    )
    graph = check_against_ort(tmp_path, model, {"x": rand(2, 3, 4)})
    assert ops_of(graph) == ["gather"]


@pytest.mark.parametrize("axis", [1, -1])
def test_concat(tmp_path, axis):
    nodes = [
        node("Relu", ["x"], ["a"]),
        node("Sigmoid", ["x"], ["b"]),
        node("Concat", ["a", "b", "x"], ["y"], axis=axis),
    ]
    graph = check_against_ort(tmp_path, make_model(nodes, {"x": (2, 3, 4)}, ["y"], 13), {"x": rand(2, 3, 4)})
    assert ops_of(graph)[-1] == "concat" and len(graph.nodes[-1].inputs) == 3


# ---------------------------------------------------------------- arithmetic with constants


@pytest.mark.parametrize(
    "op,const_first,ir_ops",
    [
        ("Sub", False, ["add_const"]),
        ("Sub", True, ["mul_const", "add_const"]),
        ("Div", False, ["mul_const"]),
        ("Mul", False, ["mul_const"]),
        ("Mul", True, ["mul_const"]),
        ("Add", True, ["add_const"]),
        ("Add", False, ["add_const"]),
    ],
)
@pytest.mark.parametrize("c_shape", [(), (4,), (3, 1)])
def test_binary_ops_with_constants_on_both_sides(tmp_path, op, const_first, ir_ops, c_shape):
    c = rand(*c_shape, seed=1) if c_shape else np.array(1.7, np.float32)
    c = np.where(np.abs(c) < 0.3, 0.3, c).astype(np.float32)  # keep divisors away from zero
    inputs = ["c", "x"] if const_first else ["x", "c"]
    model = make_model([node(op, inputs, ["y"])], {"x": (2, 3, 4)}, ["y"], 13, {"c": c})
    graph = check_against_ort(tmp_path, model, {"x": rand(2, 3, 4)})
    assert ops_of(graph) == ir_ops


def test_sub_and_div_of_two_activations(tmp_path):
    nodes = [node("Relu", ["x"], ["a"]), node("Sub", ["a", "x"], ["y"])]
    graph = check_against_ort(tmp_path, make_model(nodes, {"x": (2, 5)}, ["y"], 13), {"x": rand(2, 5)})
    assert graph.nodes[-1].op == "add" and graph.nodes[-1].attrs["coeffs"] == [1.0, -1.0]


def test_div_by_activation_is_a_clear_error(tmp_path):
    model = make_model(
        [node("Div", ["c", "x"], ["y"], name="recip")], {"x": (2, 5)}, ["y"], 13, {"c": rand(5)}
    )
    with pytest.raises(UnsupportedOpError, match=r"'recip' \(Div, opset 13\)"):
        load_onnx(save(model, tmp_path)).graph({"x": (2, 5)})


@pytest.mark.parametrize("op", ["Add", "Mul", "Sub", "Div"])
def test_opset6_legacy_broadcast_axis(tmp_path, op):
    """Before opset 7, ``broadcast=1, axis=1`` aligns B with axis 1 (not numpy's trailing alignment).

    onnxruntime has no kernels for these old versions, so numpy is the oracle here.
    """
    b = (np.abs(rand(5, seed=1)) + 0.5).astype(np.float32)
    model = make_model(
        [node(op, ["x", "b"], ["y"], broadcast=1, axis=1)], {"x": (2, 5, 3, 5)}, ["y"], 6, {"b": b}, True
    )
    x = rand(2, 5, 3, 5)
    expected = {"Add": np.add, "Mul": np.multiply, "Sub": np.subtract, "Div": np.divide}[op](
        x, b.reshape(5, 1, 1)
    )
    _, (y,) = ir_outputs(save(model, tmp_path), {"x": x})
    assert rel_diff(y, expected) <= 1e-6


# ---------------------------------------------------------------- old-style files


@pytest.mark.parametrize("opset,ir_version", [(9, 3), (11, 6), (13, 7)])
def test_initializers_listed_as_graph_inputs(tmp_path, opset, ir_version):
    inits = {
        "W": rand(4, 3, 3, 3, seed=1),
        "b": rand(4, seed=2),
        "fcW": rand(5, 4, seed=3),
        "fcb": rand(5, seed=4),
    }
    nodes = [
        node("Conv", ["x", "W", "b"], ["c"], pads=[1, 1, 1, 1]),
        node("Relu", ["c"], ["r"]),
        node("GlobalAveragePool", ["r"], ["p"]),
        node("Flatten", ["p"], ["f"]),
        node("Gemm", ["f", "fcW", "fcb"], ["y"], transB=1),
    ]
    model = make_model(
        nodes, {"x": (2, 3, 6, 6)}, ["y"], opset, inits, inits_as_inputs=True, ir_version=ir_version
    )
    assert len(model.graph.input) == 1 + len(inits)
    loaded = load_onnx(save(model, tmp_path))
    assert loaded.input_names == ["x"]
    graph = check_against_ort(tmp_path, model, {"x": rand(2, 3, 6, 6)})
    assert graph.inputs == ["x"]
    assert ops_of(graph) == ["conv", "relu", "global_avgpool", "reshape", "linear"]


def test_non_float_graph_input_is_a_clear_error(tmp_path):
    model = make_model([node("Relu", ["x"], ["y"])], {"x": (2, 3)}, ["y"], 13)
    model.graph.input[0].type.tensor_type.elem_type = 7  # int64
    with pytest.raises(ModelError, match="reads the integer input 'x' as numbers"):
        load_onnx(save(model, tmp_path)).graph({"x": (2, 3)})


@pytest.mark.parametrize("opset", [11, 13, 18])
@pytest.mark.parametrize("sizes", [[2, 3, 1], None])
def test_split_into_slices(tmp_path, opset, sizes):
    inits: dict = {}
    if sizes is None:
        kwargs = {"num_outputs": 3} if opset >= 18 else {}
        split = node("Split", ["x"], ["a", "b", "c"], axis=-1, **kwargs)
    elif opset < 13:
        split = node("Split", ["x"], ["a", "b", "c"], axis=-1, split=sizes)
    else:
        inits["sizes"] = np.array(sizes, np.int64)
        split = node("Split", ["x", "sizes"], ["a", "b", "c"], axis=-1)
    nodes = [split, node("Relu", ["a"], ["y1"]), node("Sigmoid", ["c"], ["y2"])]
    model = make_model(nodes, {"x": (2, 4, 6)}, ["y1", "b", "y2"], opset, inits)
    graph = check_against_ort(tmp_path, model, {"x": rand(2, 4, 6)})
    assert ops_of(graph).count("slice") == 3


OTHER_RANKS = {
    "maxpool1d_asym_ceil": (
        [node("MaxPool", ["x"], ["y"], kernel_shape=[3], strides=[2], pads=[0, 2], ceil_mode=1)],
        (2, 3, 9),
        {},
    ),
    "maxpool2d_dilated_asym_ceil": (
        [
            node(
                "MaxPool",
                ["x"],
                ["y"],
                kernel_shape=[3, 2],
                strides=[2, 2],
                dilations=[2, 1],
                pads=[0, 1, 1, 0],
                ceil_mode=1,
            )
        ],
        (2, 3, 9, 7),
        {},
    ),
    "maxpool3d_asym": (
        [node("MaxPool", ["x"], ["y"], kernel_shape=[2, 2, 2], strides=[2, 2, 2], pads=[0, 1, 0, 1, 0, 1])],
        (2, 3, 5, 4, 5),
        {},
    ),
    "avgpool1d_asym_include_pad": (
        [node("AveragePool", ["x"], ["y"], kernel_shape=[3], strides=[2], pads=[0, 2], count_include_pad=1)],
        (2, 3, 9),
        {},
    ),
    "avgpool1d_ceil": (
        [node("AveragePool", ["x"], ["y"], kernel_shape=[3], strides=[2], pads=[1, 0], ceil_mode=1)],
        (2, 3, 8),
        {},
    ),
    "avgpool3d_asym": (
        [
            node(
                "AveragePool",
                ["x"],
                ["y"],
                kernel_shape=[2, 2, 2],
                strides=[2, 2, 2],
                pads=[0, 1, 0, 1, 0, 1],
            )
        ],
        (2, 3, 5, 4, 5),
        {},
    ),
    "conv1d_asym": (
        [node("Conv", ["x", "W"], ["y"], pads=[0, 2], strides=[2])],
        (2, 3, 9),
        {"W": rand(4, 3, 3)},
    ),
    "conv3d_asym": (
        [node("Conv", ["x", "W"], ["y"], pads=[0, 1, 0, 1, 0, 1])],
        (2, 3, 4, 4, 4),
        {"W": rand(4, 3, 2, 2, 2)},
    ),
    "conv_transpose1d": (
        [node("ConvTranspose", ["x", "W"], ["y"], strides=[2], pads=[0, 1], output_padding=[1])],
        (2, 3, 5),
        {"W": rand(3, 4, 3)},
    ),
    "conv_transpose3d": (
        [node("ConvTranspose", ["x", "W"], ["y"], strides=[2, 2, 2], pads=[1, 1, 1, 1, 1, 1])],
        (2, 3, 3, 3, 3),
        {"W": rand(3, 2, 3, 3, 3)},
    ),
    "global_maxpool": ([node("GlobalMaxPool", ["x"], ["y"])], (2, 3, 4, 5), {}),
    "output_is_identity_of_input": ([node("Relu", ["x"], ["r"]), node("Identity", ["x"], ["y"])], (2, 5), {}),
}


@pytest.mark.parametrize("case", list(OTHER_RANKS))
def test_other_ranks_and_ops(tmp_path, case):
    nodes, shape, inits = OTHER_RANKS[case]
    check_against_ort(
        tmp_path, make_model(nodes, {"x": shape}, ["y"], 12, inits), {"x": rand(*shape, seed=3)}
    )
