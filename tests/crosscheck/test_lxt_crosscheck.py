"""lrpaudit's AttnLRP and CP-LRP input relevance against LXT 2.1's efficient mode (``lxt.efficient``), in float64.

LXT runs in one subprocess for the whole module (``tests/helpers/lxt_reference.py``: its monkey patches change
``torch.nn.LayerNorm`` and the transformers modules for the whole process) on the models of the session's
``transformer_export`` files, built with the same weights: Hugging Face BERT, GPT-2 (sdpa) and ViT under AttnLRP,
GPT-2 under LXT's CP-LRP map, torchvision's VisionTransformer under LXT's ``vit_torch`` map (CP-LRP inside the
attention). lrpaudit audits the legacy ONNX, dynamo ONNX and traced TorchScript files.

Where the definitions differ, and how each difference is modelled:
- epsilon: LXT's efficient mode computes input x gradient, which is LRP with every stabilizer at 0; lrpaudit's
  ``attnlrp`` and ``cp-lrp`` presets put epsilon 1e-6 on linear layers, products and norms (their maps differ from
  LXT's by up to 1e-3 of scale on these models). Modelled: the presets with every stabilizer at 0
  (``transformer_configs.exact_config``).
- activations: LXT's identity rule for GELU and tanh passes ``fn(x) / (x + 1e-10) * g``, lrpaudit's ``pass`` the
  relevance itself. Modelled: LXT run with that constant at 0 (``exact``); as shipped, LXT's maps differ from
  lrpaudit's by the constant's effect, 8e-10 to 7e-9 of scale here (held to 1e-7).
- LayerNorm: both hold the standard deviation constant and keep the mean in the map (AttnLRP Prop. 3.4); its
  beta, like every bias (the final classifier's too) and the position and token-type embeddings, keeps its share
  in both (lrpaudit ``bias: absorb``; LXT adds it normally, so input x gradient leaves it out). The same.
  The ONNX files hold each LayerNorm epsilon in float32 (the TorchScript files the double): compared with LXT
  run with those epsilons (``onnx``).
- products: LXT divides the gradients of Q and K by 4 and of V by 2 (or of Q K^T and A V by 2 each, in its copy of
  BERT), lrpaudit's ``uniform`` halves each product's relevance between its factors: the same; under CP-LRP LXT
  stops the gradient at Q and K, lrpaudit holds the attention weights constant: the same.
- the output relevance is ``onehot * logit`` at the predicted class in both (a backward pass seeded with the
  one-hot, then input x gradient); text relevance is read at the word embeddings (LXT's ``inputs_embeds``,
  lrpaudit's token input) and summed over the embedding dimension, per token.
What remains is asserted at rounding level: 1e-12 of the map's scale.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import lrpaudit
from lrpaudit import AuditRequest
from tests.helpers.transformer_configs import exact_config
from tests.helpers.transformer_models import example_input

ROOT = Path(__file__).resolve().parents[2]
FORMATS = ("legacy", "dynamo", "traced")
# case: (model, attention implementation of its files, the lrpaudit preset whose definitions LXT's map has)
CASES = {
    "bert": ("bert", "eager", "attnlrp"),
    "gpt2": ("gpt2", "sdpa", "attnlrp"),
    "vit_hf": ("vit_hf", "eager", "attnlrp"),
    "gpt2_cp": ("gpt2", "sdpa", "cp-lrp"),
    "vit_tv_cp": ("vit_tv", "eager", "cp-lrp"),
}
ROUNDING = 1e-12
SHIPPED = 1e-7


@pytest.fixture(scope="module")
def lxt(tmp_path_factory) -> dict[str, np.ndarray]:
    """LXT's arrays (``VARIANT.CASE.FIELD``), from one subprocess."""
    out = tmp_path_factory.mktemp("lxt") / "lxt.npz"
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    command = [sys.executable, "-m", "tests.helpers.lxt_reference", str(out)]
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    with np.load(out) as arrays:
        return dict(arrays)


@pytest.fixture(scope="module")
def configs(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("exact")
    return {preset: exact_config(folder, preset) for preset in ("attnlrp", "cp-lrp")}


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).max() / np.abs(b).max())


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("case", list(CASES))
def test_relevance_equals_lxt_where_the_definitions_match(transformer_export, lxt, configs, case, fmt):
    name, attn, preset = CASES[case]
    result = lrpaudit.run_audit(
        AuditRequest(
            transformer_export(name, fmt, attn),
            config=configs[preset],
            inputs=example_input(name, 2).numpy(),
            keep_relevance=True,
            fidelity="off",  # the files' forward is checked in tests/frontends
        )
    )
    (key,) = [k for k in result.relevance if k not in ("targets", "output_relevance")]
    ours, targets = result.relevance[key], result.relevance["targets"]
    reference = "exact" if fmt == "traced" else "onnx"
    want = lxt[f"{reference}.{case}.relevance"]
    assert ours.shape == want.shape
    np.testing.assert_array_equal(targets, lxt[f"{reference}.{case}.target"])
    # the same function: the explained logit of LXT's patched model is lrpaudit's output relevance
    logits = lxt[f"{reference}.{case}.logits"].reshape(len(targets), -1)[np.arange(len(targets)), targets]
    explained = result.relevance["output_relevance"].reshape(len(targets), -1)[
        np.arange(len(targets)), targets
    ]
    assert _rel(explained, logits) <= ROUNDING
    assert _rel(ours, want) <= ROUNDING, f"{case} {fmt}: {_rel(ours, want):.2e}"
    if fmt == "traced":  # LXT as shipped: its identity rule's 1e-10 moves the map a little, nothing else
        assert _rel(ours, lxt[f"shipped.{case}.relevance"]) <= SHIPPED
