"""The TorchScript frontend: every reference model, traced and scripted, saved and loaded.

Oracles:
* the ScriptModule itself, float32: max |IR - ScriptModule| <= 1e-5 of the output scale, for the final output and,
  through ``check_fidelity(intermediates=True)``, for every IR value that is also a value of the TorchScript graph
  (those come from the graph's own aten ops, run by the interpreter);
* the eager torch model in float64: the float64 IR forward matches ``model.double()`` to <= 1e-12 of the output
  scale (BatchNorm is folded by lrpaudit in float64; TorchScript never folds it);
* structure: node ids are module paths, BatchNorm after conv/linear is folded into the node of the conv/linear.

Refusals (exception type and message, and the CLI's exit code 2 with one line): the fused transformer kernel, an
unknown aten op, value-dependent code, in-place writes through a view, and files that are not TorchScript archives
(which must never be unpickled).
"""

from __future__ import annotations

import copy
import hashlib
import pickle
import warnings
import zipfile

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner
from torch import nn

from lrpaudit.cli import main
from lrpaudit.errors import InputError, ModelError, UnsupportedOpError
from lrpaudit.fidelity import check_fidelity
from lrpaudit.forward import run_forward
from lrpaudit.frontends import load_model
from lrpaudit.frontends.torchscript import TorchScriptModel, load_torchscript
from lrpaudit.ir import LINEAR_TYPE
from tests.helpers.numeric import rel_diff
from tests.helpers.reference_models import MODELS, build, example_input

RTOL_F32 = 1e-5
RTOL_F64 = 1e-12
MODES = ("traced", "scripted")


def save_torchscript(model: nn.Module, example, path, mode: str, no_grad: bool = False):
    """``torch.jit.trace`` (on ``example``) or ``torch.jit.script``, then ``save``; deprecation warnings muted."""
    example = example if isinstance(example, tuple) else (example,)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with torch.no_grad() if no_grad else torch.enable_grad():
            if mode == "traced":
                module = torch.jit.trace(model, example, check_trace=False)
            else:
                module = torch.jit.script(model)
        module.save(str(path))
    return path


def load(path, shapes=None) -> TorchScriptModel:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return load_model(path, shapes)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """``saved(name, mode)`` -> path of the reference model's archive, written once per module (and worker)."""
    folder = tmp_path_factory.mktemp("torchscript")
    cache: dict[tuple, object] = {}

    def get(name: str, mode: str):
        if (name, mode) not in cache:
            path = folder / f"{name}-{mode}.pt"
            cache[(name, mode)] = save_torchscript(build(name), example_input(name), path, mode)
        return cache[(name, mode)]

    return get


def float64_reference(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return copy.deepcopy(model).double()(x.double())


# ---------------------------------------------------------------- reference models


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", list(MODELS))
def test_reference_model_matches_script_module_and_float64_torch(saved, name, mode):
    model = build(name)
    _, sample_shape = MODELS[name]
    # A traced archive records its example input; a scripted one needs the shape from the caller.
    ts = load(saved(name, mode), None if mode == "traced" else {"*": (2, *sample_shape)})
    (input_name,) = ts.input_names
    assert ts.declared_shapes() == {input_name: [None, *sample_shape]}
    for batch in (2, 3):
        x = example_input(name, batch=batch, seed=1)
        graph = ts.graph({input_name: tuple(x.shape)})
        result = check_fidelity(
            ts, graph, {input_name: x.numpy()}, "float32", rtol=RTOL_F32, intermediates=True
        )
        assert result.passed and result.max_rel_diff <= RTOL_F32, result.as_dict()
        assert result.reference == "torchscript"
        assert len(result.tensors) == len(graph.nodes)  # every IR node's output was compared
        out64 = run_forward(graph, {input_name: x.double()}, dtype=torch.float64)[graph.outputs[0]]
        assert rel_diff(out64, float64_reference(model, x)) <= RTOL_F64


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", list(MODELS))
def test_node_ids_are_module_paths_and_batchnorm_is_folded(saved, name, mode):
    model = build(name)
    _, sample_shape = MODELS[name]
    ts = load(saved(name, mode), {"*": (2, *sample_shape)})
    graph = ts.graph({ts.input_names[0]: (2, *sample_shape)})
    modules = dict(model.named_modules())
    weighted = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.Linear)
    batchnorms = [m for m in modules.values() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    assert not [n.id for n in graph.nodes if n.op == "affine"]
    linear_nodes = [n for n in graph.nodes if n.op in LINEAR_TYPE]
    assert len(linear_nodes) == sum(isinstance(m, weighted) for m in modules.values())
    for node in linear_nodes:
        assert isinstance(modules.get(node.id), weighted), node.id
        assert node.origin["frontend"] == "torchscript"
    folded = [n for n in linear_nodes if "aten::batch_norm" in n.origin["ops"]]
    assert len(folded) == len(batchnorms)
    assert len({n.id for n in graph.nodes}) == len(graph.nodes)


def test_float64_archive_matches_its_script_module_to_float64_precision(tmp_path):
    model = build("resnet_like").double()
    x = example_input("resnet_like", dtype=torch.float64)
    ts = load(save_torchscript(model, x, tmp_path / "double.pt", "traced"))
    graph = ts.graph({"x": tuple(x.shape)})
    assert graph.input_dtypes == {"x": "float64"}
    result = check_fidelity(ts, graph, {"x": x.numpy()}, "float64", rtol=RTOL_F64, intermediates=True)
    assert result.passed and len(result.tensors) == len(graph.nodes)


RESNET_IDS = [
    "stem.0",
    "stem.2",
    "stem.3",
    "layer1.conv1",
    "layer1.relu",
    "layer1.conv2",
    "layer1.add",
    "layer1.relu:2",
    "layer2.0.conv1",
    "layer2.0.relu",
    "layer2.0.conv2",
    "layer2.0.downsample.0",
    "layer2.0.add",
    "layer2.0.relu:2",
    "layer2.1.conv1",
    "layer2.1.relu",
    "layer2.1.conv2",
    "layer2.1.add",
    "layer2.1.relu:2",
    "pool",
    "reshape",
    "fc",
]


@pytest.mark.parametrize("mode", MODES)
def test_resnet_ids(saved, mode):
    ts = load(saved("resnet_like", mode), {"*": (2, 3, 16, 16)})
    graph = ts.graph({"x": (2, 3, 16, 16)})
    assert [n.id for n in graph.nodes] == RESNET_IDS
    conv = graph.node("layer2.0.downsample.0")
    assert conv.op == "conv" and conv.origin["ops"][-1] == "aten::batch_norm"
    assert conv.origin["weight"] == "layer2.0.downsample.0.weight"
    assert graph.node("layer1.add").op == "add"


def test_traced_and_scripted_ids_agree(saved):
    for name, (_, sample_shape) in MODELS.items():
        ids = []
        for mode in MODES:
            ts = load(saved(name, mode), {"*": (2, *sample_shape)})
            ids.append([n.id for n in ts.graph({ts.input_names[0]: (2, *sample_shape)}).nodes])
        assert ids[0] == ids[1], name


@pytest.mark.slow
def test_torchvision_mobilenet_v3(tmp_path):
    """Hardswish, squeeze-excitation gates, in-place ReLU/Dropout, and a root ``self._forward_impl``-style call
    chain whose module hierarchy starts with ``SELF``: traced and scripted give the same module-path ids."""
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    model = torchvision.models.mobilenet_v3_small(weights=None).eval()
    x = torch.randn(1, 3, 32, 32)
    ids = []
    for mode in MODES:
        ts = load(save_torchscript(model, x, tmp_path / f"mobilenet-{mode}.pt", mode), {"x": (1, 3, 32, 32)})
        graph = ts.graph({"x": (1, 3, 32, 32)})
        assert check_fidelity(ts, graph, {"x": x.numpy()}, "float32", rtol=RTOL_F32).passed
        ids.append([n.id for n in graph.nodes])
        assert graph.node("features.1.block.1.mul").attrs["gate"] == 0  # scale * input
    assert ids[0] == ids[1]
    assert ids[0][:4] == ["features.0.0", "features.0.2", "features.1.block.0.0", "features.1.block.0.2"]


class Features(nn.Module):
    """A torchvision-style ``features`` / ``fc`` model with in-place ReLU."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(inplace=True), nn.MaxPool2d(2)
        )
        self.fc = nn.Linear(4 * 4 * 4, 5)

    def forward(self, x):
        return self.fc(torch.flatten(self.features(x), 1))


@pytest.fixture(scope="module")
def features_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("features")
    torch.manual_seed(0)
    model = Features().eval()
    x = torch.randn(2, 3, 8, 8)
    return {mode: save_torchscript(model, x, folder / f"features-{mode}.pt", mode) for mode in MODES}


@pytest.mark.parametrize("mode", MODES)
def test_model_interface(features_files, mode):
    path = features_files[mode]
    ts = load(path, {"x": (2, 3, 8, 8)})
    assert isinstance(ts, TorchScriptModel)
    assert (ts.format, ts.reference_name, ts.input_names) == ("torchscript", "torchscript", ["x"])
    assert ts.sha256() == hashlib.sha256(path.read_bytes()).hexdigest()
    graph = ts.graph({"x": (3, 3, 8, 8)})
    assert graph is ts.graph({"x": (3, 3, 8, 8)})  # cached per shape
    assert [(n.id, n.op) for n in graph.nodes] == [
        ("features.0", "conv"),
        ("features.2", "relu"),
        ("features.3", "maxpool"),
        ("reshape", "reshape"),
        ("fc", "linear"),
    ]
    assert graph.source["format"] == "torchscript" and graph.source["path"] == str(path)
    assert graph.inputs == ["x"] and graph.input_dtypes == {"x": "float32"}
    feeds = {"x": np.random.default_rng(0).standard_normal((3, 3, 8, 8)).astype(np.float32)}
    outputs = ts.reference_outputs(feeds)
    assert list(outputs) == graph.source["output_names"]
    assert outputs[graph.source["output_names"][0]].shape == (3, 5)


def test_declared_shapes(features_files):
    traced = load(features_files["traced"])
    assert traced.declared_shapes() == {"x": [None, 3, 8, 8]}  # the example recorded by torch.jit.trace
    scripted = load(features_files["scripted"])
    with pytest.raises(InputError, match="--input-shape"):
        scripted.declared_shapes()
    scripted.set_input_shapes({"*": (1, 3, 8, 8)})
    assert scripted.declared_shapes() == {"x": [None, 3, 8, 8]}
    with pytest.raises(InputError, match="forward takes"):
        load_torchscript(features_files["scripted"], {"y": (1, 3, 8, 8)})


# ---------------------------------------------------------------- op coverage and semantics


class Ops(nn.Module):
    """One model touching most converters: padding modes, same/transposed conv, pools, routing, arithmetic."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 3, padding=1, padding_mode="reflect")
        self.same = nn.Conv2d(6, 6, 4, padding="same")
        self.up = nn.ConvTranspose2d(6, 4, 3, stride=2, padding=1, output_padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.conv1d = nn.Conv1d(4, 4, 3, padding=1)
        self.prelu = nn.PReLU()
        self.lin = nn.Linear(8, 5)
        self.w = nn.Parameter(torch.randn(5, 3))
        self.b = nn.Parameter(torch.randn(3))
        self.drop = nn.Dropout(0.3)

    def forward(self, x):
        y = F.leaky_relu(self.conv(x), 0.1)
        y = F.elu(self.same(y)) + 0.5
        y = self.bn(self.up(y))
        y = F.hardswish(y) - F.hardsigmoid(y) * 2.0
        y = F.avg_pool2d(y, 2, ceil_mode=True)
        y = F.adaptive_avg_pool2d(y, (4, 2))
        a, b = torch.chunk(y, 2, dim=1)
        z = torch.cat([b, a, torch.tanh(a)], 1)
        z = z.permute(0, 2, 3, 1).contiguous().transpose(1, 2)
        z = z[:, 1] * 3 - z[:, 0] / 2
        z = F.pad(z, (1, 1))
        z = F.max_pool1d(self.prelu(self.conv1d(z)), 2, 2)
        z = torch.stack([z, torch.sigmoid(z)], dim=2).flatten(1)
        z = z.unsqueeze(1).squeeze(1)[:, 4:12]
        z = self.drop(F.gelu(self.lin(z)))
        z = torch.addmm(self.b, F.silu(z), self.w)
        z = z.clamp(-1.0, 1.0) + F.relu6(z) + F.hardtanh(z, -0.5, 0.5)
        z = -(1.0 - torch.matmul(z, self.w.t()))
        return F.log_softmax(z, dim=-1), torch.softmax(z[:, [0, 2, 4]], dim=1)


@pytest.mark.parametrize("mode", MODES)
def test_op_coverage_model(tmp_path, mode):
    torch.manual_seed(0)
    model = Ops().eval()
    with torch.no_grad():
        model.bn.running_mean.uniform_(-0.5, 0.5)
        model.bn.running_var.uniform_(0.5, 2.0)
    path = save_torchscript(model, torch.randn(2, 3, 8, 8), tmp_path / "ops.pt", mode)
    ts = load(path, {"x": (2, 3, 8, 8)})
    x = torch.randn(3, 3, 8, 8)
    graph = ts.graph({"x": tuple(x.shape)})
    ops = {n.op for n in graph.nodes}
    assert ops >= {
        "pad",
        "conv",
        "conv_transpose",
        "avgpool",
        "slice",
        "concat",
        "permute",
        "gather",
        "maxpool",
    }
    assert ops >= {"reshape", "linear", "clip", "add", "add_const", "mul_const", "log_softmax", "softmax"}
    assert (
        graph.node("conv").op == "conv" and graph.node("conv.pad").op == "pad"
    )  # the conv keeps the module path
    assert graph.node("up").origin["ops"] == [graph.node("up").origin["ops"][0], "aten::batch_norm"]
    result = check_fidelity(ts, graph, {"x": x.numpy()}, "float32", rtol=RTOL_F32, intermediates=True)
    assert result.passed and result.max_rel_diff <= RTOL_F32
    assert len(graph.outputs) == 2
    values = run_forward(graph, {"x": x.double()}, dtype=torch.float64)
    for name, ref in zip(graph.outputs, float64_reference(model, x)):
        assert rel_diff(values[name], ref) <= RTOL_F64


class Ops2(nn.Module):
    """3-D and 1-D convs, grouped dilated ConvTranspose1d + BN, dilated strided conv + BN without affine, replicate
    padding, ceil-mode max pool, adaptive max pool, BatchNorm1d after a linear on 3-D input (stays ``affine``)."""

    def __init__(self):
        super().__init__()
        self.c3 = nn.Conv3d(2, 4, (1, 3, 3), padding=(0, 1, 1))
        self.ct1 = nn.ConvTranspose1d(4, 6, 3, stride=2, groups=2, dilation=2)
        self.bn1 = nn.BatchNorm1d(6)
        self.cd = nn.Conv2d(4, 4, 3, dilation=2, stride=2, padding=2, bias=False)
        self.bn_plain = nn.BatchNorm2d(4, affine=False)
        self.mp = nn.MaxPool2d(3, stride=2, padding=1, ceil_mode=True)
        self.amp = nn.AdaptiveMaxPool2d((1, 3))
        self.lin3 = nn.Linear(3, 3)
        self.bnl = nn.BatchNorm1d(4)

    def forward(self, x):
        y = F.relu(self.c3(x)).squeeze(2)
        y = self.bn_plain(self.cd(y))
        y = self.amp(self.mp(F.pad(y, (0, 1, 0, 1), mode="replicate")))
        z = self.bn1(self.ct1(y.reshape(y.size(0), 4, 3)))
        w = self.bnl(self.lin3(y.flatten(2)[:, :, :3]))
        return z.mean(-1), w.softmax(1), F.avg_pool1d(z, 2, 2, 1, False, True)


class Positions(nn.Module):
    """A constant built with slice assignments (in-place writes through views of a constant run in place)."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(6, 6)
        self.register_buffer("scale", torch.full((6,), 0.5))

    def forward(self, x):
        pe = torch.zeros(x.shape[1], 6)
        pe[:, 0::2] = 1.0
        pe[1:, 1] += 2.0
        return self.fc(x + pe) * self.scale


class BufferWrite(nn.Module):
    def __init__(self):
        super().__init__()
        self.register_buffer("scale", torch.full((4,), 0.5))

    def forward(self, x):
        s = self.scale
        s.mul_(2.0)  # a stateful model: every call doubles its buffer
        return x * s


def test_graph_building_never_writes_the_model(tmp_path):
    path = save_torchscript(BufferWrite().eval(), None, tmp_path / "buffer.pt", "scripted")
    ts = load(path, {"x": (2, 4)})
    graph = ts.graph({"x": (2, 4)})
    assert float(ts.module.scale[0]) == 0.5
    assert float(graph.nodes[0].params["const"][0]) == 1.0


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(("cls", "shape"), [(Ops2, (2, 2, 1, 8, 8)), (Positions, (2, 3, 6))])
def test_more_ops(tmp_path, mode, cls, shape):
    torch.manual_seed(0)
    model = cls().eval()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
    path = save_torchscript(model, torch.randn(shape), tmp_path / "model.pt", mode)
    ts = load(path, {"x": shape})
    x = torch.randn((3, *shape[1:]))
    graph = ts.graph({"x": tuple(x.shape)})
    if cls is Ops2:
        assert graph.node("bnl").op == "affine" and graph.node("cd").origin["ops"][-1] == "aten::batch_norm"
        assert graph.node("ct1").op == "conv_transpose" and graph.node("amp").op == "maxpool"
    result = check_fidelity(ts, graph, {"x": x.numpy()}, "float32", rtol=RTOL_F32, intermediates=True)
    assert result.passed and len(result.tensors) == len(graph.nodes)
    values = run_forward(graph, {"x": x.double()}, dtype=torch.float64)
    refs = float64_reference(model, x)
    for name, ref in zip(graph.outputs, refs if isinstance(refs, tuple) else (refs,)):
        assert rel_diff(values[name], ref) <= RTOL_F64


class MatmulBias(nn.Module):
    def __init__(self):
        super().__init__()
        self.W = nn.Parameter(torch.randn(4, 3))
        self.b = nn.Parameter(torch.randn(3))
        self.proj = nn.Linear(3, 2, bias=False)

    def forward(self, x):
        return self.proj(torch.relu(x @ self.W + self.b)) + 1.5


@pytest.mark.parametrize("mode", MODES)
def test_matmul_plus_constant_is_one_linear_with_bias(tmp_path, mode):
    model = MatmulBias().eval()
    path = save_torchscript(model, torch.randn(2, 4), tmp_path / "mm.pt", mode)
    ts = load(path, {"x": (2, 4)})
    graph = ts.graph({"x": (3, 4)})
    assert [(n.id, n.op, sorted(n.params)) for n in graph.nodes] == [
        ("W", "linear", ["bias", "weight"]),
        ("relu", "relu", []),
        ("proj", "linear", ["bias", "weight"]),
    ]
    assert graph.node("W").origin["ops"] == ["aten::matmul", "aten::add"]
    x = torch.randn(3, 4)
    assert check_fidelity(ts, graph, {"x": x.numpy()}, "float32", rtol=RTOL_F32, intermediates=True).passed
    out = run_forward(graph, {"x": x.double()}, dtype=torch.float64)[graph.outputs[0]]
    assert rel_diff(out, float64_reference(model, x)) <= RTOL_F64


class Branchy(nn.Module):
    """Scripted control flow on shapes: a pool only for large inputs, and a loop."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.pool = nn.MaxPool2d(2)
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        y = torch.relu(self.conv(x))
        if y.shape[-1] > 8:
            y = self.pool(y)
        for _ in range(y.dim() - 2):
            y = y * 2.0
        return self.fc(y.mean([2, 3]))


def test_scripted_control_flow_is_taken_per_shape(tmp_path):
    path = save_torchscript(Branchy().eval(), None, tmp_path / "branchy.pt", "scripted")
    ts = load(path, {"x": (1, 3, 8, 8)})
    for size, has_pool in ((16, True), (8, False)):
        x = np.random.default_rng(size).standard_normal((2, 3, size, size)).astype(np.float32)
        graph = ts.graph({"x": x.shape})
        assert ("pool" in [n.id for n in graph.nodes]) is has_pool
        assert [n.op for n in graph.nodes].count("mul_const") == 2
        assert check_fidelity(ts, graph, {"x": x}, "float32", rtol=RTOL_F32, intermediates=True).passed


class InPlace(nn.Module):
    """``+=`` and ``relu_`` on a value whose pre-mutation alias is returned too."""

    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(4, 4)
        self.fc2 = nn.Linear(4, 4)

    def forward(self, x):
        y = self.fc1(x)
        skip = y
        y = self.fc2(y)
        y += skip
        y.relu_()
        return y, skip


@pytest.mark.parametrize("mode", MODES)
def test_inplace_ops_become_out_of_place(tmp_path, mode):
    path = save_torchscript(InPlace().eval(), torch.randn(2, 4), tmp_path / "inplace.pt", mode)
    ts = load(path, {"x": (2, 4)})
    graph = ts.graph({"x": (2, 4)})
    assert [(n.id, n.op) for n in graph.nodes] == [
        ("fc1", "linear"),
        ("fc2", "linear"),
        ("add", "add"),
        ("relu", "relu"),
    ]
    assert graph.node("relu").origin["ops"] == ["aten::relu_"]
    x = np.random.default_rng(0).standard_normal((2, 4)).astype(np.float32)
    result = check_fidelity(ts, graph, {"x": x}, "float32", rtol=RTOL_F32, intermediates=True)
    assert result.passed and len([d for d in result.tensors if d.name in graph.source["output_names"]]) == 2


class ViewMutation(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x):
        y = self.fc(x)
        z = y.view(y.shape[0], 2, 2)
        z.relu_()  # changes y through the view
        return y + 1.0


def test_inplace_write_through_a_view_is_refused(tmp_path):
    path = save_torchscript(ViewMutation().eval(), None, tmp_path / "view.pt", "scripted")
    with pytest.raises(UnsupportedOpError, match=r"in-place op \(aten::relu_\) changed it through a view"):
        load(path, {"x": (2, 4)}).graph({"x": (2, 4)})


class TwoInputs(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Linear(4, 3)
        self.b = nn.Linear(5, 3)

    def forward(self, x, z):
        return self.a(x) * torch.sigmoid(self.b(z))


@pytest.mark.parametrize("mode", MODES)
def test_two_inputs_and_gating(tmp_path, mode):
    path = save_torchscript(
        TwoInputs().eval(), (torch.randn(2, 4), torch.randn(2, 5)), tmp_path / "two.pt", mode
    )
    ts = load(path, {"x": (2, 4), "z": (2, 5)})
    assert ts.input_names == ["x", "z"]
    graph = ts.graph({"x": (2, 4), "z": (2, 5)})
    assert graph.inputs == ["x", "z"]
    assert graph.node("mul").attrs["gate"] == 1
    rng = np.random.default_rng(0)
    feeds = {
        "x": rng.standard_normal((2, 4)).astype(np.float32),
        "z": rng.standard_normal((2, 5)).astype(np.float32),
    }
    assert check_fidelity(ts, graph, feeds, "float32", rtol=RTOL_F32, intermediates=True).passed


# ---------------------------------------------------------------- refusals


class Encoder(nn.Module):
    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(8, 16)
        self.encoder = nn.TransformerEncoderLayer(16, 2, 32, batch_first=True)
        self.head = nn.Linear(16, 3)

    def forward(self, x):
        return self.head(self.encoder(self.proj(x)).mean(1))


@pytest.fixture(scope="module")
def transformer_file(tmp_path_factory):
    """A transformer traced under no_grad in eval mode: torch records the fused fast-path kernel."""
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = Encoder().eval()
    path = tmp_path_factory.mktemp("transformer") / "encoder.pt"
    return save_torchscript(model, torch.randn(2, 5, 8), path, "traced", no_grad=True)


def test_fused_transformer_kernel_is_expanded(transformer_file):
    """The fused encoder layer becomes IR ops (attention, layer norms, feed-forward), each checked against aten while
    it is built; the whole graph reproduces the ScriptModule."""
    ts = load(transformer_file)
    assert ts.declared_shapes() == {"x": [None, 5, 8]}
    assert "aten::_transformer_encoder_layer_fwd" in {n.kind() for n in ts.module.inlined_graph.nodes()}
    graph = ts.graph({"x": (2, 5, 8)})
    ops = {n.op for n in graph.nodes}
    assert {"layernorm", "matmul", "softmax", "linear", "relu", "add"} <= ops
    assert {n.origin["names"][0] for n in graph.nodes} == {"proj", "encoder", "head", ""}  # "": the mean
    x = torch.randn(2, 5, 8, generator=torch.Generator().manual_seed(1))
    assert check_fidelity(ts, graph, {"x": x.numpy()}, intermediates=True).passed


class Exp(nn.Module):
    def forward(self, x):
        return torch.exp(x)


class UnknownOp(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)
        self.act = Exp()

    def forward(self, x):
        return self.act(self.fc(x))


class ValueDependent(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x):
        y = self.fc(x)
        if bool(y.sum() > 0):
            y = y * 2.0
        return y


@pytest.mark.parametrize("mode", MODES)
def test_unknown_aten_op_is_refused_with_module_path(tmp_path, mode):
    path = save_torchscript(UnknownOp().eval(), torch.randn(2, 4), tmp_path / "unknown.pt", mode)
    with pytest.raises(
        UnsupportedOpError, match=r"aten::exp in module 'act' \(Exp\): unsupported op"
    ) as info:
        load(path, {"x": (2, 4)}).graph({"x": (2, 4)})
    assert str(path) in str(info.value)


def test_value_dependent_code_is_refused(tmp_path):
    path = save_torchscript(ValueDependent().eval(), None, tmp_path / "value.pt", "scripted")
    with pytest.raises(UnsupportedOpError, match="aten::sum"):
        load(path, {"x": (2, 4)}).graph({"x": (2, 4)})


def test_training_mode_trace_is_refused(tmp_path):
    model = build("mlp_bn").train()
    path = save_torchscript(model, example_input("mlp_bn"), tmp_path / "train.pt", "traced")
    with pytest.raises(
        UnsupportedOpError, match=r"aten::batch_norm in module '1' \(BatchNorm1d\): BatchNorm in training"
    ):
        load(path).graph({"input": (2, 20)})


@pytest.fixture
def no_unpickling(monkeypatch):
    """Fail the test if anything tries to unpickle or to hand the file to torch's loaders."""

    def forbidden(*args, **kwargs):
        raise AssertionError("a non-TorchScript file reached an unpickler or torch.jit.load")

    for target, name in [(pickle, "load"), (pickle, "loads"), (torch, "load"), (torch.jit, "load")]:
        monkeypatch.setattr(target, name, forbidden)


def _zip_without(source, target, suffix: str):
    with zipfile.ZipFile(source) as src, zipfile.ZipFile(target, "w") as dst:
        for item in src.infolist():
            if not item.filename.endswith(suffix):
                dst.writestr(item, src.read(item.filename))
    return target


@pytest.fixture
def bad_files(tmp_path, features_files):
    model = Features().eval()
    files = {}
    files["state_dict"] = tmp_path / "state_dict.pt"
    torch.save(model.state_dict(), files["state_dict"])
    files["module"] = tmp_path / "whole_module.pth"
    torch.save(model, files["module"])
    files["legacy"] = tmp_path / "legacy.pt"
    torch.save(model.state_dict(), files["legacy"], _use_new_zipfile_serialization=False)
    files["random"] = tmp_path / "random.pt"
    files["random"].write_bytes(np.random.default_rng(0).bytes(4096))
    files["no_constants"] = _zip_without(
        features_files["traced"], tmp_path / "no_constants.pt", "/constants.pkl"
    )
    files["export"] = tmp_path / "exported.pt2"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.export.save(torch.export.export(nn.Linear(2, 2), (torch.randn(1, 2),)), files["export"])
    files["truncated"] = tmp_path / "truncated.pt"
    files["truncated"].write_bytes(features_files["traced"].read_bytes()[:3000])
    return files


EXPECTED = {
    "state_dict": r"is a torch\.save archive \(a pickled state_dict or nn\.Module.*never loads pickles.*torch\.jit\.trace.*torch\.onnx\.export",
    "module": r"is a torch\.save archive",
    "legacy": r"is a legacy torch\.save pickle.*never loads pickles",
    "random": r"is not a TorchScript archive \(not a zip file",
    "no_constants": r"not a complete TorchScript archive \(missing .*constants\.pkl\)",
    "truncated": r"is not a TorchScript archive \(not a zip file",
    "export": r"is a torch\.export archive \(\.pt2\)",
}


@pytest.mark.parametrize("kind", list(EXPECTED))
def test_not_a_torchscript_archive(bad_files, no_unpickling, kind):
    with pytest.raises(ModelError, match=EXPECTED[kind]) as info:
        load_model(bad_files[kind])
    assert str(bad_files[kind]) in str(info.value)


# ---------------------------------------------------------------- command line


def run_cli(*args: str):
    return CliRunner().invoke(main, ["inspect", *[str(a) for a in args]])


@pytest.mark.parametrize("kind", ["state_dict", "random", "no_constants"])
def test_cli_not_a_torchscript_archive(bad_files, kind):
    result = run_cli(bad_files[kind], "--input-shape", "1,3,8,8")
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("lrpaudit: error: ")
    assert str(bad_files[kind]) in lines[0]


def test_cli_fused_kernel(transformer_file):
    result = run_cli(transformer_file, "--input-shape", "2,5,8")
    assert result.exit_code == 0, result.output
    assert "encoder" in result.stdout and "forward fidelity ok" in result.stderr


def test_cli_inspect_torchscript(features_files):
    traced = run_cli(features_files["traced"])  # the recorded example shape is enough
    assert traced.exit_code == 0, traced.output
    assert "features.0" in traced.stdout and "forward fidelity ok" in traced.stderr
    missing = run_cli(features_files["scripted"])
    assert missing.exit_code == 2
    assert len(missing.stderr.strip().splitlines()) == 1 and "--input-shape" in missing.stderr
    scripted = run_cli(features_files["scripted"], "--input-shape", "2,3,8,8")
    assert scripted.exit_code == 0, scripted.output
    assert "features.3" in scripted.stdout
