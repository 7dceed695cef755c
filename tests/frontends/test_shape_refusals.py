"""A node whose weights or inputs do not fit its op is refused while the IR is built (``ops.infer_shape``, no
kernel runs): one line, an UnsupportedOpError naming the node, its op and opset, the shapes and why."""

from __future__ import annotations

import re

import numpy as np
import pytest
from onnx import helper

from lrpaudit.errors import UnsupportedOpError, first_line
from lrpaudit.frontends.onnx import load_onnx
from tests.helpers.onnx_builders import make_model, save

rng = np.random.default_rng(0)


def _weight(*shape: int) -> np.ndarray:
    return rng.standard_normal(shape).astype(np.float32)


@pytest.mark.parametrize(
    ("op", "x_shape", "weight", "attrs", "reason"),
    [
        ("Conv", (1, 4, 6, 6), _weight(5, 3, 3, 3), {}, "cannot take 4 input channels"),
        ("Conv", (1, 4, 2, 6), _weight(5, 4, 3, 3), {}, "a window of 3 does not fit axis 2"),
        ("ConvTranspose", (1, 4, 6, 6), _weight(3, 2, 3, 3), {}, "cannot take 4 input channels"),
        ("MatMul", (2, 5), _weight(4, 3), {}, r"weight \[3, 4\] cannot take an input of shape \[2, 5\]"),
        ("Add", (2, 3), _weight(4), {}, r"shapes \[2, 3\] and \[4\] do not broadcast"),
    ],
)
def test_a_node_that_does_not_fit_is_refused_in_one_line_naming_it(
    tmp_path, op, x_shape, weight, attrs, reason
):
    nodes = [helper.make_node(op, ["x", "w"], ["y"], name="misfit", **attrs)]
    model = make_model(nodes, {"x": x_shape}, ["y"], 17, inits={"w": weight})
    output = model.graph.output[0].type.tensor_type
    if not output.HasField("shape"):  # onnx's inference gives a misfit none; the checker wants one
        output.shape.dim.add().dim_value = 1
    with pytest.raises(UnsupportedOpError) as caught:
        load_onnx(save(model, tmp_path)).graph({"x": x_shape})
    message = str(caught.value)
    assert "\n" not in message and first_line(caught.value, 1000) == message
    assert f"node 'misfit' ({op}, opset 17): the node does not fit its inputs [{list(x_shape)}]" in message
    assert re.search(reason, message), message
