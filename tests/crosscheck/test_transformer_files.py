"""Attention blocks as real files (legacy and dynamo ONNX, traced TorchScript, float64; the block of
tests/helpers/attention_block.py): lrpaudit's relevance against ``x * grad`` of the torch module itself with the
AttnLRP / CP-LRP gradient modifications, and every layer's residual at rounding under the attnlrp and cp-lrp
presets. With every stabilizer at 0 the rules equal input x gradient of the modified forward (DESIGN section 12).
"""

from __future__ import annotations

import pytest
import torch

import lrpaudit
from lrpaudit.config import load_config
from tests.helpers.attention_block import EXPORTS, block_example, block_files, block_model
from tests.helpers.numeric import rel_diff

LRP0_CONFIG = """version: 1
rules:
  - match: {op: linear}
    rule: zero
  - match: {op: [matmul, einsum, mul]}
    rule: RULE
    epsilon: 0.0
  - match: {op: softmax}
    rule: taylor
  - match: {op: [add, mean]}
    rule: norm
    stabilizer: 0.0
"""


@pytest.fixture(scope="module")
def files(export_cache):
    return block_files(export_cache)


def _expected(mode: str):
    model, x = block_model(), block_example().requires_grad_(True)
    model.mode = mode
    out = model(x)
    target = out.detach().argmax(dim=1)
    (grad,) = torch.autograd.grad(out[torch.arange(3), target].sum(), x)
    return (x * grad).detach().numpy(), target


@pytest.mark.parametrize("mode", ["attnlrp", "cp"])
@pytest.mark.parametrize("exporter", EXPORTS)
def test_relevance_equals_gradient_times_input_of_the_modified_module(files, tmp_path, exporter, mode):
    config = tmp_path / "lrp0.yaml"
    config.write_text(LRP0_CONFIG.replace("RULE", "uniform" if mode == "attnlrp" else "constant_factor"))
    expected, target = _expected(mode)
    x = block_example().numpy()
    result = lrpaudit.audit(
        str(files[exporter]),
        load_config(str(config)),
        x,
        target=target.tolist(),
        keep_relevance=True,
    )
    (name,) = [key for key in result.relevance if key not in ("targets", "output_relevance")]
    assert result.fidelity.passed
    assert rel_diff(result.relevance[name], expected) <= 1e-10


@pytest.mark.parametrize("preset", ["attnlrp", "cp-lrp"])
@pytest.mark.parametrize("exporter", EXPORTS)
def test_presets_explain_every_layer_of_real_files(files, exporter, preset):
    result = lrpaudit.audit(
        str(files[exporter]),
        load_config(preset=preset).with_overrides(gate="explained"),
        block_example().numpy(),
    )
    rows = result.layer_rows()
    assert result.verdict == "pass", [r["hint"] for r in rows if r["verdict"] != "pass"]
    assert max(row["rel_residual"] for row in rows) <= 1e-12
    softmax = [row for row in rows if row["op"] == "softmax"]
    assert len(softmax) == 1 and softmax[0]["rule"] == "taylor"
    if preset == "attnlrp":
        assert softmax[0]["largest_category"] == "absorbed_softmax"
    else:  # the attention weights are constant: nothing reaches the softmax
        assert softmax[0]["r_received"] == 0.0
