"""LXT 2.1's efficient-mode relevance of the test models, computed in a process of its own.

    python -m tests.helpers.lxt_reference OUT.npz

LXT explains by monkey patching: ``lxt.efficient.monkey_patch`` replaces ``torch.nn.LayerNorm.forward``, the
Hugging Face model modules and ``torch.nn.MultiheadAttention.forward`` for the whole process. So it runs here, in a
subprocess of the test that needs it, and writes plain arrays ``VARIANT.CASE.FIELD``: the float64 logits, the
explained target (the argmax of the flattened logits, as lrpaudit's ``target: predicted``) and LXT's input
relevance (``input * gradient`` of the patched model, from a backward pass seeded with a one-hot at the target:
the output relevance is ``onehot * logit``). Text models are explained from their word embeddings
(``inputs_embeds``, summed over the embedding dimension: the relevance per token), images from their pixels, which
are the float32 samples the files get, in float64.

Cases (the models of ``transformer_models`` with their weights, in float64):
- ``bert``, ``gpt2``, ``vit_hf`` under AttnLRP: LXT's own patch maps for BERT and GPT-2; Hugging Face ViT has
  none in LXT 2.1, so its map is built from LXT's pieces the way its GPT-2 map is (identity-rule LayerNorm,
  ``patch_attention`` on the module's attention functions, the identity rule on the GELU). ViT runs with the
  sdpa attention: its eager attention computes the softmax in float32 even in a float64 model.
- ``gpt2_cp`` (LXT's CP-LRP map for GPT-2) and ``vit_tv_cp`` (LXT's ``vit_torch`` map for torchvision's
  VisionTransformer: CP-LRP inside the attention, AttnLRP outside).

Variants:
- ``shipped``: LXT as installed. Its identity rule for elementwise activations (GELU, tanh) has the backward
  ``fn(x) / (x + 1e-10) * g``;
- ``exact``: that constant at 0, so that the identity rule is the exact identity (lrpaudit's ``pass``);
- ``onnx``: as ``exact``, with every LayerNorm's epsilon rounded to float32, as ONNX files hold it.
"""

from __future__ import annotations

import argparse
import sys
import warnings

import numpy as np
import torch

BATCH = 2


def _explain(forward, x: torch.Tensor) -> dict[str, np.ndarray]:
    """Logits, target and ``x * grad`` (summed over the last axis for embeddings) of ``forward`` at ``x``."""
    x = x.detach().clone().requires_grad_(True)
    logits = forward(x)
    flat = logits.reshape(logits.shape[0], -1)
    target = flat.argmax(dim=1)
    flat[torch.arange(flat.shape[0]), target].sum().backward()
    return {
        "logits": logits.detach().numpy(),
        "target": target.numpy(),
        "relevance": (x * x.grad).detach().numpy(),
    }


def _text(name: str, attn: str, float32_eps: bool) -> dict[str, np.ndarray]:
    from tests.helpers.transformer_models import build, example_input

    hf = _epsilons(build(name, attn).double(), float32_eps).model
    embeds = hf.get_input_embeddings()(example_input(name, BATCH))
    result = _explain(lambda e: hf(inputs_embeds=e).logits, embeds)
    result["relevance"] = result["relevance"].sum(axis=-1)
    return result


def _image(name: str, attn: str, float32_eps: bool) -> dict[str, np.ndarray]:
    from tests.helpers.transformer_models import build, example_input

    model = _epsilons(build(name, attn).double(), float32_eps)
    forward = model if name == "vit_tv" else (lambda x: model.model(pixel_values=x).logits)
    return _explain(forward, example_input(name, BATCH).double())  # the float32 samples the files get


def _epsilons(model: torch.nn.Module, float32: bool) -> torch.nn.Module:
    """``model`` with its LayerNorm epsilons rounded to float32 (``float32``), else as built."""
    for module in model.modules():
        if float32 and isinstance(module, torch.nn.LayerNorm):
            module.eps = float(np.float32(module.eps))
    return model


def _variants(run) -> dict[str, dict[str, np.ndarray]]:
    """``run(float32_eps)`` under each variant (see the module docstring)."""
    from lxt.efficient.rules import identity_rule_implicit_fn

    forward = identity_rule_implicit_fn.forward
    shipped = forward.__defaults__
    results = {"shipped": run(False)}
    forward.__defaults__ = (0.0,)
    try:
        results["exact"], results["onnx"] = run(False), run(True)
    finally:
        forward.__defaults__ = shipped
    return results


def _patch_attnlrp() -> None:
    """LXT's AttnLRP maps for BERT and GPT-2, and one for Hugging Face ViT built from LXT's pieces."""
    from functools import partial

    from lxt.efficient import monkey_patch
    from lxt.efficient.patches import non_linear_forward, patch_attention, patch_method
    from transformers import activations
    from transformers.models.bert import modeling_bert
    from transformers.models.gpt2 import modeling_gpt2
    from transformers.models.vit import modeling_vit

    monkey_patch(modeling_bert)  # LayerNorm, Dropout, and LXT's copy of modeling_bert
    monkey_patch(modeling_gpt2)  # (LayerNorm is patched already: LXT warns and skips it)
    monkey_patch(
        modeling_vit,
        {
            modeling_vit: patch_attention,
            activations.GELUActivation: partial(patch_method, non_linear_forward, keep_original=True),
        },
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("out")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    warnings.simplefilter("ignore")
    from lxt.efficient import monkey_patch
    from lxt.efficient.patches import patch_cp_attention
    from torchvision.models import vision_transformer
    from transformers.models.gpt2 import modeling_gpt2

    gpt2_attention = (modeling_gpt2.eager_attention_forward, modeling_gpt2.ALL_ATTENTION_FUNCTIONS)
    _patch_attnlrp()
    cases = {
        "bert": _variants(lambda f32: _text("bert", "eager", f32)),
        "gpt2": _variants(lambda f32: _text("gpt2", "sdpa", f32)),
        "vit_hf": _variants(lambda f32: _image("vit_hf", "sdpa", f32)),
    }
    # GPT-2 under LXT's CP-LRP map: the AttnLRP wrappers of its attention functions undone first
    modeling_gpt2.eager_attention_forward, modeling_gpt2.ALL_ATTENTION_FUNCTIONS = gpt2_attention
    patch_cp_attention(modeling_gpt2)
    cases["gpt2_cp"] = _variants(lambda f32: _text("gpt2", "sdpa", f32))
    monkey_patch(vision_transformer)
    cases["vit_tv_cp"] = _variants(lambda f32: _image("vit_tv", "eager", f32))
    arrays = {
        f"{variant}.{case}.{key}": value
        for case, variants in cases.items()
        for variant, result in variants.items()
        for key, value in result.items()
    }
    np.savez(args.out, **arrays)


if __name__ == "__main__":
    sys.exit(main())
