"""Configs for the transformer cross-checks: a preset with every stabilizer at 0.

    from tests.helpers.transformer_configs import exact_config
    path = exact_config(folder, "attnlrp")   # or "cp-lrp"

``attnlrp`` with every epsilon at 0 is LXT 2.1's efficient mode (input x gradient of the patched model), and
``cp-lrp`` with every epsilon at 0 conserves a bias-free transformer exactly. The file extends the preset and
lists its own entries first (first match wins): LRP-0 on linear-type layers, the product rule of the preset,
``norm_identity``, residual adds and pools, and bias neurons (position embeddings, token types), all without a
stabilizer.
"""

from __future__ import annotations

from pathlib import Path

PRODUCT_RULE = {"attnlrp": "uniform", "cp-lrp": "constant_factor"}

TEMPLATE = """version: 1
extends: {preset}
rules:
  - match: {{op: [linear, conv, conv_transpose, affine]}}
    rule: zero
  - match: {{op: [matmul, einsum, mul]}}
    rule: {product}
    epsilon: 0.0
  - match: {{op: [layernorm, groupnorm]}}
    rule: norm_identity
    epsilon: 0.0
  - match: {{op: [add, mean, avgpool, global_avgpool]}}
    rule: norm
    stabilizer: 0.0
  - match: {{op: add_const}}
    rule: bias_neuron
    stabilizer: 0.0
"""


def exact_config(folder: Path, preset: str) -> Path:
    """``preset`` (attnlrp or cp-lrp) with every stabilizer at 0, written as ``folder/<preset>-exact.yaml``."""
    path = Path(folder) / f"{preset}-exact.yaml"
    path.write_text(TEMPLATE.format(preset=preset, product=PRODUCT_RULE[preset]))
    return path
