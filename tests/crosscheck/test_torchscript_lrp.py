"""The same model as a TorchScript archive and as an ONNX export gives the same LRP input relevance.

Both files are made from one float32 torch model; lrpaudit loads each through its own frontend, folds
BatchNorm itself in float64 (the ONNX export keeps its BatchNorm nodes, the archive has aten::batch_norm) and
propagates in float64. Node ids differ between the formats (ONNX node names vs module paths), so the rules are
chosen by op through the presets. The maps must agree to 1e-10 of their scale.
"""

from __future__ import annotations

import textwrap
import warnings

import numpy as np
import pytest
import torch

import lrpaudit
from lrpaudit.config import load_config
from lrpaudit.frontends import load_model
from tests.helpers.reference_models import build, example_input, export_onnx

MODELS = ("cnn_bn", "residual", "resnet_like", "mlp_bn", "se_net")
PRESETS = ("epsilon", "epsilon-plus-flat", "epsilon-alpha2-beta1", "conservative")


def _float32_eps(model: torch.nn.Module) -> torch.nn.Module:
    """BatchNorm eps as the float32 value ONNX stores (an attribute is float32; TorchScript keeps a double).

    Otherwise the two files encode scales that differ by ~1e-13 relative, which ill-conditioned denominators
    (tiny stabilizers) amplify to ~1e-9: a difference in the files, not in lrpaudit.
    """
    for module in model.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.eps = float(np.float32(module.eps))
    return model


def _trace(model, example, path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.trace(model, (example,), check_trace=False).save(str(path))
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ts_vs_onnx")
    made = {}
    for name in MODELS:
        model, example = _float32_eps(build(name)), example_input(name, batch=2)
        onnx_path = export_onnx(model, example, folder / f"{name}.onnx", dynamo=False, opset=17, fold=False)
        made[name] = (onnx_path, _trace(model, example, folder / f"{name}.pt"))
    return made


def _relevance(path, preset: str, inputs: np.ndarray) -> tuple[np.ndarray, object]:
    model = load_model(path, {"*": inputs.shape} if str(path).endswith(".pt") else None)
    config = load_config(preset=preset)
    graph = model.graph({model.input_names[0]: inputs.shape})
    assignment = config.assign(graph)
    result = lrpaudit.audit(
        model, assignment.rules, {model.input_names[0]: inputs}, init=config.init, keep_relevance=True
    )
    return result.relevance[model.input_names[0]], result


@pytest.mark.parametrize("preset", PRESETS)
@pytest.mark.parametrize("name", MODELS)
def test_torchscript_relevance_equals_onnx_relevance(files, name, preset):
    onnx_path, pt_path = files[name]
    inputs = example_input(name, batch=3, seed=7).numpy()
    from_onnx, onnx_result = _relevance(onnx_path, preset, inputs)
    from_pt, pt_result = _relevance(pt_path, preset, inputs)
    scale = np.abs(from_onnx).max()
    assert scale > 0
    assert np.abs(from_pt - from_onnx).max() <= 1e-10 * scale
    # Same rules landed on the same number of nodes, and the same verdict follows.
    assert sorted(r["rule"] for r in onnx_result.layer_rows()) == sorted(
        r["rule"] for r in pt_result.layer_rows()
    )
    assert onnx_result.verdict == pt_result.verdict


def test_relevance_differs_between_presets(files):
    """The equality above is not trivially true: different rules give visibly different maps."""
    onnx_path, _ = files["cnn_bn"]
    inputs = example_input("cnn_bn", batch=2, seed=3).numpy()
    epsilon, _ = _relevance(onnx_path, "epsilon", inputs)
    plus_flat, _ = _relevance(onnx_path, "epsilon-plus-flat", inputs)
    assert np.abs(epsilon - plus_flat).max() > 1e-3 * np.abs(epsilon).max()


def test_name_matched_rule_lands_on_the_module_path(files, tmp_path):
    """Node ids of a .pt file are module paths, so a config can target one layer by name."""
    _, pt_path = files["resnet_like"]
    inputs = example_input("resnet_like", batch=2).numpy()
    model = load_model(pt_path, {"*": inputs.shape})
    graph = model.graph({model.input_names[0]: inputs.shape})
    convs = [n.id for n in graph.nodes if n.op == "conv"]
    target = convs[2]
    config_file = tmp_path / "lrp.yaml"
    config_file.write_text(
        textwrap.dedent(
            f"""\
            version: 1
            extends: epsilon
            rules:
              - match: {{name: "{target}"}}
                rule: alphabeta
                alpha: 2
                beta: 1
                bias: ignore
            """
        )
    )
    assignment = load_config(config_file).assign(graph)
    assert assignment.rules[target].name == "alphabeta" and assignment.rules[target].bias == "ignore"
    assert assignment.sources[target].endswith("lrp.yaml:4")
    others = [node_id for node_id in convs if node_id != target]
    assert all(assignment.rules[node_id].name == "epsilon" for node_id in others)
    # The module path itself, not an op name, is what matched.
    assert "." in target and not target.startswith("/")
