"""Node ids are module paths in every format a torch model is saved in, so configs and baselines carry over.

Oracles: (1) the module tree of a real model: the legacy ONNX export, the dynamo export (BatchNorm fused into its
convolution by the exporter's optimizer), the traced and the scripted TorchScript archive give the same id for every
node, equal to the path in ``named_modules()`` for each weighted layer; (2) hand-written node names and metadata for
the parsing rules (legacy scopes, a module's repeated call, hostile strings, files that record no scope);
(3) an ONNX audit's JSON report gates the TorchScript twin's audit through ``--baseline`` row for row, and a
baseline written when ids were ONNX node names is still matched through ``node_name``.
"""

from __future__ import annotations

import copy
import json

import onnx
import pytest
import torch
from onnx import helper
from torch import nn

from lrpaudit import AuditRequest, run_audit
from lrpaudit.frontends import load_model
from lrpaudit.frontends.onnx.scopes import NAME_SCOPES, Scope, node_scopes
from lrpaudit.ir import WEIGHTED
from lrpaudit.reports.baseline import compare
from lrpaudit.reports.json_report import build_report
from tests.frontends.test_torchscript import save_torchscript
from tests.helpers.cli import run_cli
from tests.helpers.paths import SAMPLES
from tests.helpers.reference_models import export_onnx, randomize_batchnorm

SHAPE = (1, 3, 8, 8)


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(4, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.relu = nn.ReLU()

    def forward(self, x):
        return self.relu(self.bn(self.conv(x)) + x)


class Tree(nn.Module):
    """Sequential in Sequential, a ModuleList iterated (never called), a module called twice, a functional add
    and nested ``cat``s, a Sequential child called directly, ops at the top level."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU())
        self.blocks = nn.ModuleList([Block(), Block()])
        self.act = nn.ReLU()
        self.seq = nn.Sequential(nn.Sequential(nn.Conv2d(4, 4, 1), nn.Tanh()), nn.Conv2d(4, 4, 1))
        self.head = nn.Linear(4, 3)

    def forward(self, x):
        x = self.stem(x)
        for block in self.blocks:
            x = block(x)
        y = self.seq(x)
        x = torch.cat([self.act(y), torch.cat([x, y], 1)], 1)
        x = self.act(self.seq[1](x[:, :4]))
        return self.head(torch.flatten(x.mean((2, 3), keepdim=True), 1))


IDS = [
    "stem.0",
    "stem.2",
    "blocks.0.conv",
    "blocks.0.add",
    "blocks.0.relu",
    "blocks.1.conv",
    "blocks.1.add",
    "blocks.1.relu",
    "seq.0.0",
    "seq.0.1",
    "seq.1",
    "act",
    "concat",
    "slice",
    "seq.1:2",
    "act:2",
    "global_avgpool",
    "reshape",
    "head",
]


@pytest.fixture(scope="module")
def tree_files(export_cache):
    torch.manual_seed(0)
    model = randomize_batchnorm(Tree(), 0).eval()
    x = torch.randn(SHAPE)
    return {
        "legacy": export_cache(
            "ids-tree-legacy.onnx", lambda p: export_onnx(model, x, p, dynamo=False, opset=17, fold=False)
        ),
        "dynamo": export_cache(
            "ids-tree-dynamo.onnx", lambda p: export_onnx(model, x, p, dynamo=True, opset=18, fold=True)
        ),
        "traced": export_cache("ids-tree-traced.pt", lambda p: save_torchscript(model, x, p, "traced")),
        "scripted": export_cache("ids-tree-scripted.pt", lambda p: save_torchscript(model, x, p, "scripted")),
    }, dict(model.named_modules())


@pytest.mark.parametrize("fmt", ["legacy", "dynamo", "traced", "scripted"])
def test_every_format_names_every_node_by_its_module(tree_files, fmt):
    files, modules = tree_files
    model = load_model(files[fmt], {"*": SHAPE})
    graph = model.graph({model.input_names[0]: SHAPE})
    assert [node.id for node in graph.nodes] == IDS
    for node in graph.nodes:
        if node.op in WEIGHTED:
            assert isinstance(modules[node.id.split(":")[0]], (nn.Conv2d, nn.Linear)), node.id
    (concat,) = [node for node in graph.nodes if node.op == "concat"]
    assert len(concat.inputs) == 3  # the nested cat is flattened in every format
    names = {node.origin.get("node_name") for node in graph.nodes}
    if fmt == "legacy":
        assert "/blocks.0/conv/Conv" in names and "/act_1/Relu" in names
    elif fmt.endswith("ed"):
        assert names == {None}  # TorchScript nodes have no names of their own


def node(name: str, op_type: str = "Relu", scopes: str | None = None) -> onnx.NodeProto:
    proto = helper.make_node(op_type, ["x"], [f"{name}_out"], name=name)
    if scopes is not None:
        entry = proto.metadata_props.add()
        entry.key, entry.value = NAME_SCOPES, scopes
    return proto


def scopes_of(*nodes: onnx.NodeProto) -> list[Scope | None]:
    graph = helper.make_graph(list(nodes), "g", [], [])
    return node_scopes(helper.make_model(graph))


def test_legacy_names_rebuild_full_paths_and_read_repeats():
    got = scopes_of(
        node("/features/features.1/block/block.0/block.0.0/Conv", "Conv"),
        node("/layer1/layer1.0/relu/Relu"),
        node("/layer1/layer1.0/relu_1/Relu"),  # relu's second call: a relu sits beside it
        node("/only_1/Relu"),  # a module named only_1: nothing named only beside it
        node("/Flatten", "Flatten"),
    )
    assert [s.path for s in got] == [
        "features.1.block.0.0",
        "layer1.0.relu",
        "layer1.0.relu",
        "only_1",
        "",
    ]


def test_names_that_are_not_scopes_keep_the_node_name():
    got = scopes_of(
        node("n18"),  # the onnx model zoo
        node("model/conv2d/Conv2D", "Conv"),  # another exporter
        node("/features/Conv", "Relu"),  # the last part is not the op type
        node("/fea\x1b[31mtures/Relu"),  # a terminal escape in a scope
        node("/a b/Relu"),
    )
    assert got == [None] * 5


def test_dynamo_metadata_gives_the_path_and_hostile_values_are_ignored():
    good = "['', 'layer1', 'layer1.0', 'layer1.0.conv1', 'conv2d_3']"
    got = scopes_of(
        node("node_Conv_1", "Conv", good),
        node("a", "Relu", "['', 'relu']"),
        node("b", "Relu", "__import__('os').system('true')"),
        node("c", "Relu", "['', 'x\\n', 'relu']"),
        node("d", "Relu", "[1, 2]"),
    )
    assert got[:2] == [Scope("layer1.0.conv1"), Scope("")]
    assert got[2:] == [None, None, None]


@pytest.fixture(scope="module")
def twin_reports():
    def report(path):
        result = run_audit(
            AuditRequest(path, preset="epsilon-plus-flat", inputs=SAMPLES / "digits_samples.npy")
        )
        return build_report([result]), result

    return report(SAMPLES / "digits_cnn.onnx"), report(SAMPLES / "digits_cnn.pt")


def test_an_onnx_baseline_gates_its_torchscript_twin(twin_reports, tmp_path):
    (onnx_report, onnx_result), (ts_report, ts_result) = twin_reports
    assert [r["id"] for r in onnx_result.layer_rows()] == [r["id"] for r in ts_result.layer_rows()]
    assert onnx_report["runs"][0]["layers"][0]["node_name"] == "/features/features.0/Conv"
    assert ts_report["runs"][0]["layers"][0]["node_name"] is None
    result = compare(ts_report, onnx_report)
    rows, samples = len(ts_result.layers), len(ts_result.samples)
    assert result.compared == rows + samples and not result.new_layers and not result.vanished_layers
    assert not result.new_runs and not result.vanished_runs and not result.failed
    # the same relevance bookkeeping: a regression in the twin is found row by row
    worse = copy.deepcopy(ts_report)
    row = next(r for r in worse["runs"][0]["layers"] if r["id"] == "features.4")
    row["rel_error"] *= 3
    regressions = compare(worse, onnx_report).regressions
    assert [c.item for c in regressions] == ["features.4"]
    path = tmp_path / "onnx.json"
    path.write_text(json.dumps(onnx_report))
    cli = run_cli(
        "check", SAMPLES / "digits_cnn.pt", "--inputs", SAMPLES / "digits_samples.npy", "--baseline", path
    )
    assert cli.exit_code == 0  # with a baseline only regressions fail, and there is none
    assert "0 regressions" in cli.stderr and "0 new layers, 0 vanished layers (compared 26 rows" in cli.stderr


def test_a_baseline_whose_ids_were_onnx_node_names_still_matches(twin_reports):
    (onnx_report, onnx_result), _ = twin_reports
    old = copy.deepcopy(onnx_report)
    for row in old["runs"][0]["layers"]:
        row["id"], row["node_name"] = row["node_name"], None
    result = compare(onnx_report, old)
    assert result.compared == len(onnx_result.layers) + len(onnx_result.samples)
    assert not result.new_layers and not result.vanished_layers and not result.failed


def test_a_node_the_optimizer_created_without_metadata_goes_to_its_readers_module():
    made = helper.make_node("Split", ["x"], ["a", "b"], name="node_Split_300", num_outputs=2)
    readers = [
        node_with(
            "node_Conv_1",
            "Conv",
            ["a"],
            "['', 'stage2', 'stage2.1', 'stage2.1.branch2', 'stage2.1.branch2.0', 'conv2d']",
        ),
        node_with("node_cat", "Concat", ["b"], "['', 'stage2', 'stage2.1', 'cat']"),
    ]
    lone = helper.make_node("Relu", ["c_in"], ["c"], name="node_Relu_9")
    reader = node_with("node_Conv_2", "Conv", ["c"], "['', 'head', 'head.0', 'conv2d_1']")
    got = scopes_of(made, *readers, lone, reader)
    assert got[0] == Scope("stage2.1")  # the deepest module holding both readers
    assert got[3] == Scope("head")  # one reader: its parent module


def node_with(name: str, op_type: str, inputs: list[str], scopes: str) -> onnx.NodeProto:
    proto = helper.make_node(op_type, inputs, [f"{name}_out"], name=name)
    entry = proto.metadata_props.add()
    entry.key, entry.value = NAME_SCOPES, scopes
    return proto
