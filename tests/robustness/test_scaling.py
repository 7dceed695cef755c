"""Work grows linearly with the graph: graph building (ONNX and TorchScript frontends, passes) and propagation.

No timing: the work is counted. Every line lrpaudit's own code executes during an audit is counted (a trace
function that follows only frames of the package), for the same block of ops repeated k, 2k and 3k times. For
linear work w(n) = a + b n, the second difference w(k) - 2 w(2k) + w(3k) is zero; an O(n^2) loop (a pass that scans
every node for each node, say) makes it 2 c k^2 > 0, a large share of the first difference.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from torch import nn

import lrpaudit
from lrpaudit import api
from lrpaudit.rules import Rule

PACKAGE = str(Path(lrpaudit.__file__).parent)


def counted_lines(run, prefix: str = PACKAGE) -> int:
    """How many lines of code in files under ``prefix`` (lrpaudit's package) ``run()`` executes."""
    count = 0

    def local(frame, event, arg):
        nonlocal count
        if event == "line":
            count += 1
        return local

    def calls(frame, event, arg):
        return local if frame.f_code.co_filename.startswith(prefix) else None

    old = sys.gettrace()
    sys.settrace(calls)
    try:
        run()
    finally:
        sys.settrace(old)
    return count


def assert_linear(work: dict[int, int]) -> None:
    small, middle, large = (work[k] for k in sorted(work))
    first = middle - small
    second = small - 2 * middle + large
    assert first > 0, work
    # exact zero for identical blocks; 1% leaves room for a data-dependent branch, a quadratic pass gives ~25%
    assert abs(second) <= 0.01 * first, f"work {work}: second difference {second} vs first {first}"


def onnx_blocks(blocks: int) -> onnx.ModelProto:
    """x[1, 2, 3, 3] -> blocks x (Conv + BatchNorm, Relu, the erf-GELU pattern, a sigmoid gate, a residual Add)
    -> Flatten -> Gemm -> Add (a bias to fuse) -> Softmax (stripped): every pass has work in every block."""
    rng = np.random.default_rng(0)
    nodes, inits = [], []

    def const(name, array):
        inits.append(numpy_helper.from_array(np.asarray(array, np.float32), name))
        return name

    x = "x"
    for b in range(blocks):
        p = f"b{b}_"
        w = const(p + "w", rng.standard_normal((2, 2, 3, 3)) * 0.3)
        nodes.append(helper.make_node("Conv", [x, w], [p + "c"], name=p + "conv", pads=[1, 1, 1, 1]))
        bn = [
            const(p + k, v)
            for k, v in (("s", [1.1, 0.9]), ("t", [0.1, -0.1]), ("m", [0, 0.1]), ("v", [1, 2]))
        ]
        nodes.append(helper.make_node("BatchNormalization", [p + "c", *bn], [p + "n"], name=p + "bn"))
        nodes.append(helper.make_node("Relu", [p + "n"], [p + "r"], name=p + "relu"))
        root2, one, half = const(p + "sqrt2", 2**0.5), const(p + "one", 1.0), const(p + "half", 0.5)
        nodes += [
            helper.make_node("Div", [p + "r", root2], [p + "g1"], name=p + "div"),
            helper.make_node("Erf", [p + "g1"], [p + "g2"], name=p + "erf"),
            helper.make_node("Add", [p + "g2", one], [p + "g3"], name=p + "plus"),
            helper.make_node("Mul", [p + "r", p + "g3"], [p + "g4"], name=p + "prod"),
            helper.make_node("Mul", [p + "g4", half], [p + "g"], name=p + "half_mul"),
            helper.make_node("Sigmoid", [p + "g"], [p + "sg"], name=p + "sigmoid"),
            helper.make_node("Mul", [p + "g", p + "sg"], [p + "gated"], name=p + "gate"),
            helper.make_node("Add", [p + "gated", x], [p + "out"], name=p + "residual"),
        ]
        x = p + "out"
    fw, fb = const("fw", rng.standard_normal((3, 18))), const("fb", [0.1, 0.2, 0.3])
    nodes += [
        helper.make_node("Flatten", [x], ["f"], name="flatten"),
        helper.make_node("MatMul", ["f", "fwt"], ["l"], name="matmul"),
        helper.make_node("Add", ["l", fb], ["lb"], name="bias"),
        helper.make_node("Softmax", ["lb"], ["y"], name="softmax", axis=1),
    ]
    inits.append(numpy_helper.from_array(numpy_helper.to_array(inits[-2]).T.copy(), "fwt"))
    graph = helper.make_graph(
        nodes,
        "blocks",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 2, 3, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 3])],
        [i for i in inits if i.name != fw],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


class Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 2, 3, padding=1)
        self.bn = nn.BatchNorm2d(2)
        self.fc = nn.Linear(3, 3)

    def forward(self, x):
        return torch.relu(self.fc(self.bn(self.conv(x)))) + x


def torchscript_blocks(blocks: int, path: Path) -> Path:
    torch.manual_seed(0)
    net = nn.Sequential(*[Block() for _ in range(blocks)], nn.Flatten(), nn.Linear(18, 3)).eval()
    with torch.no_grad():
        torch.jit.trace(net, torch.randn(1, 2, 3, 3)).save(str(path))
    return path


def _audit(path: Path):
    return lambda: api.audit(path, Rule("epsilon"), random=2, batch_size=2)


def test_onnx_graph_building_passes_and_propagation_are_linear(tmp_path):
    paths = {}
    for blocks in (1, 4, 8, 12):
        paths[blocks] = tmp_path / f"blocks{blocks}.onnx"
        paths[blocks].write_bytes(onnx_blocks(blocks).SerializeToString())
    graph = lrpaudit.load_model(paths[4]).graph({"x": (1, 2, 3, 3)})
    ops = {node.op for node in graph.nodes}
    # x * sigmoid(x) is fused into silu (passes/activations.py), the erf pattern into gelu
    assert {"conv", "gelu", "silu", "add", "linear", "softmax"} <= ops and not {
        "affine",
        "add_const",
    } & ops, ops
    counted_lines(_audit(paths[1]))  # imports and first-call caches are not the graph's work
    assert_linear({k: counted_lines(_audit(paths[k])) for k in (4, 8, 12)})


def test_torchscript_graph_building_and_propagation_are_linear(tmp_path):
    paths = {k: torchscript_blocks(k, tmp_path / f"blocks{k}.pt") for k in (1, 4, 8, 12)}
    counted_lines(_audit(paths[1]))
    assert_linear({k: counted_lines(_audit(paths[k])) for k in (4, 8, 12)})


@pytest.mark.parametrize("repeated", [True, False])
def test_the_counter_sees_quadratic_work(repeated):
    """The assertion can fail: a loop over all nodes per node is caught, a loop per node passes."""

    def run(n):
        def work():
            items = list(range(n))
            for item in items:
                _ = [other for other in items if other == item] if repeated else [item]

        return work

    work = {k: counted_lines(run(k), prefix=__file__) for k in (40, 80, 120)}
    if repeated:
        with pytest.raises(AssertionError, match="second difference"):
            assert_linear(work)
    else:
        assert_linear(work)
