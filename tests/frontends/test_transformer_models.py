"""Transformer-era model files load into the IR: torchvision ConvNeXt, Swin and VisionTransformer, Hugging Face BERT,
GPT-2 and ViT (random weights from configs), each as legacy ONNX, dynamo ONNX and TorchScript traced under no_grad.

For every file: the canonical IR uses only ops with an LRP treatment (the vocabulary below, written out here rather
than imported), its float32 forward matches the runtime (onnxruntime / the ScriptModule) within 1e-4 of the output
scale, every intermediate tensor included for the small models, and its float64 forward matches the torch model run
in float64 to ~1e-15 of the output scale (1e-10 asserted). Two references are the model's own float32 steps, so
the expected gap is known: Hugging Face ViT's eager attention computes its softmax in float32 even in a float64
model (the reference is then the sdpa model with the same weights), and swin_t's files hold ``(C // heads) ** -0.5``
computed in float32 by the trace/exporters (C // heads = 32: a relative rounding of 1.7e-8; the reduced Swin, with
16 per head, is held to 1e-10).
"""

from __future__ import annotations

import functools

import numpy as np
import onnx
import pytest
import torch

from lrpaudit.errors import UnsupportedOpError
from lrpaudit.fidelity import check_fidelity
from lrpaudit.forward import embed_inputs, run_forward
from lrpaudit.frontends import load_model
from tests.helpers.transformer_models import MODELS, VOCAB, build, example_input

# The IR ops that have (or are planned to have) an LRP rule: anything else in a canonical graph is a bug.
PLANNED = {
    *("linear", "conv", "conv_transpose", "affine", "maxpool", "avgpool", "global_avgpool", "mean"),
    *("relu", "leaky_relu", "sigmoid", "tanh", "gelu", "silu", "elu", "hardswish", "hardsigmoid", "clip"),
    *("softplus", "erf", "lrn", "reshape", "permute", "concat", "slice", "gather", "pad", "expand", "roll"),
    *(
        "where",
        "add",
        "add_const",
        "mul_const",
        "mul",
        "matmul",
        "einsum",
        "softmax",
        "layernorm",
        "groupnorm",
    ),
}
FORMATS = ("legacy", "dynamo", "traced")
SMALL = [
    *[("bert", "eager", f, None) for f in FORMATS],
    ("bert", "eager", "legacy", 14),  # LayerNorm decomposed (ReduceMean, Sub, Pow, Sqrt, Div), fused back
    ("bert", "sdpa", "legacy", None),
    ("bert", "sdpa", "traced", None),
    ("bert_embeds", "eager", "legacy", None),
    ("bert_embeds", "eager", "traced", None),
    ("gpt2", "eager", "legacy", None),
    ("gpt2", "eager", "traced", None),
    *[("gpt2", "sdpa", f, None) for f in FORMATS],  # dynamo: torch's NaN guard after the softmax
    ("gpt2", "sdpa", "dynamo", 23),  # the fused ONNX Attention op, causal
    *[("vit_hf", "eager", f, None) for f in FORMATS],
    ("vit_hf", "sdpa", "legacy", None),
    ("vit_hf", "sdpa", "traced", None),
    *[("vit_tv", "eager", f, None) for f in FORMATS],
    ("swin_small", "eager", "legacy", None),
    ("swin_small", "eager", "traced", None),
    ("convnext_small", "eager", "traced", None),
    ("convnext_small", "eager", "legacy", 11),  # LayerNorm2d decomposed over the channels-last axis
    ("encoder", "eager", "traced", None),
]
FULL = [(name, "eager", f, None) for name in ("convnext_tiny", "swin_t") for f in FORMATS]
# What the file must contain for the case to prove the expansion of a fused kernel.
FUSED = {
    ("bert", "sdpa", "traced"): "aten::scaled_dot_product_attention",
    ("gpt2", "sdpa", "traced"): "aten::scaled_dot_product_attention",
    ("vit_hf", "sdpa", "traced"): "aten::scaled_dot_product_attention",
    ("vit_tv", "eager", "traced"): "aten::_native_multi_head_attention",
    ("encoder", "eager", "traced"): "aten::_transformer_encoder_layer_fwd",
    ("gpt2", "sdpa", "dynamo"): "Attention",  # with opset 23
}
TOLERANCE_64 = {"swin_t": 1e-7}
REFERENCE_ATTN = {("vit_hf", "eager"): "sdpa"}


def _case_id(case) -> str:
    name, attn, fmt, opset = case
    return f"{name}-{attn}-{fmt}" + (f"-opset{opset}" if opset else "")


def _file_ops(path) -> set[str]:
    if str(path).endswith(".pt"):
        return {node.kind() for node in torch.jit.load(str(path)).inlined_graph.nodes()}
    return {node.op_type for node in onnx.load(str(path)).graph.node}


@functools.lru_cache(maxsize=2)
def _reference(name: str, attn: str) -> torch.nn.Module:
    """The torch model in float64 (built once for the formats of one model: the full-size ones take a second)."""
    return build(name, attn).double()


def check_model_file(transformer_export, name, attn, fmt, opset, intermediates, batch=2):
    path = transformer_export(name, fmt, attn, opset)
    fused = FUSED.get((name, attn, fmt)) if (fmt != "dynamo" or opset == 23) else None
    if fused:
        assert fused in _file_ops(path)  # the file really holds the fused kernel
    model = load_model(path)
    (input_name,) = model.input_names
    x = example_input(name, batch)
    graph = model.graph({input_name: tuple(x.shape)})
    assert {node.op for node in graph.nodes} <= PLANNED
    if MODELS[name].token_ids:
        assert model.integer_inputs == [input_name]
        (token,) = graph.token_inputs
        assert token.name == input_name and graph.inputs == [token.embedded] and token.vocab == VOCAB
    else:
        assert graph.inputs == [input_name] and not graph.token_inputs
    fidelity = check_fidelity(model, graph, {input_name: x.numpy()}, intermediates=intermediates)
    assert fidelity.passed and fidelity.max_rel_diff <= 1e-4
    if intermediates:
        assert len(fidelity.tensors) >= 3  # intermediates too (a fused kernel is one aten tensor)
    reference = _reference(name, REFERENCE_ATTN.get((name, attn), attn))
    x64 = x if MODELS[name].token_ids else x.double()
    with torch.no_grad():
        want = reference(x64)
    values = run_forward(graph, embed_inputs(graph, {input_name: x64}, torch.float64), torch.float64)
    got = values[graph.outputs[0]]
    assert float((got - want).abs().max() / want.abs().max()) <= TOLERANCE_64.get(name, 1e-10)
    return graph


@pytest.mark.parametrize("case", SMALL, ids=_case_id)
def test_small_transformer_file_loads_and_matches(transformer_export, case):
    check_model_file(transformer_export, *case, intermediates=True)


@pytest.mark.parametrize("case", FULL, ids=_case_id)
def test_full_size_torchvision_file_loads_and_matches(transformer_export, case):
    """convnext_tiny and swin_t at 32x32 (28M parameters each, one export per format and session)."""
    graph = check_model_file(transformer_export, *case, intermediates=False)
    assert sum(node.op == "layernorm" for node in graph.nodes) == {"convnext_tiny": 23, "swin_t": 29}[case[0]]


@pytest.mark.parametrize(
    "name,attn,fmt",
    [("vit_tv", "eager", "legacy"), ("vit_tv", "eager", "dynamo"), ("gpt2", "sdpa", "dynamo")],
)
@pytest.mark.parametrize("batch", [1, 3])
def test_other_batch_sizes(transformer_export, name, attn, fmt, batch):
    """Dynamic-batch files at a batch of one (the batch axis is a size-1 atom anywhere) and of three: vit_tv's
    attention is sequence first inside (the batch on axis 1, merged with heads and positions)."""
    check_model_file(transformer_export, name, attn, fmt, None, intermediates=False, batch=batch)


def test_ir_values_keep_the_batch_first(transformer_export):
    """Inside torchvision's attention the IR computes batch-first forms of the sequence-first values."""
    model = load_model(transformer_export("vit_tv", "legacy"))
    graph = model.graph({"x": (3, 3, 16, 16)})
    assert all(graph.shapes[node.output][0] == 3 for node in graph.nodes)
    assert any(node.output.endswith("::batch_first") for node in graph.nodes)


def test_gpt2_sequence_classification_reading_ids_is_refused(tmp_path):
    """GPT2ForSequenceClassification finds the last non-padding token from the ids themselves: data, refused."""
    import transformers

    from tests.helpers.transformer_models import TextLogits, export_module, randomize

    config = transformers.GPT2Config(
        vocab_size=VOCAB, n_embd=32, n_layer=1, n_head=2, n_positions=16, pad_token_id=0, num_labels=2
    )
    model = randomize(TextLogits(transformers.GPT2ForSequenceClassification(config)), 0).eval()
    for fmt in ("legacy", "traced"):
        path = export_module(
            model, torch.randint(1, VOCAB, (2, 8)), tmp_path / f"gpt2cls.{fmt}", fmt, "input_ids"
        )
        with pytest.raises(UnsupportedOpError, match="reads the integer input 'input_ids' as numbers"):
            load_model(path).graph({"input_ids": (2, 8)})


def test_attention_mask_given_as_an_input_is_refused(tmp_path):
    """A mask is data (it changes per sample and carries no relevance): refused with a clear message."""
    from tests.helpers.transformer_models import _bert, export_module, randomize

    class WithMask(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = _bert("eager")

        def forward(self, input_ids, attention_mask):
            return self.model(input_ids=input_ids, attention_mask=attention_mask).logits

    model = randomize(WithMask(), 0).eval()
    ids, mask = torch.randint(0, VOCAB, (2, 8)), torch.ones(2, 8, dtype=torch.long)
    for fmt in ("legacy", "traced"):
        path = export_module(
            model, (ids, mask), tmp_path / f"masked.{fmt}", fmt, ("input_ids", "attention_mask")
        )
        with pytest.raises(UnsupportedOpError, match="integer input 'attention_mask' as numbers"):
            load_model(path).graph({"input_ids": (2, 8), "attention_mask": (2, 8)})


def test_token_ids_feed_the_runtime_and_embeddings_feed_the_ir(transformer_export):
    """The runtime gets the raw ids; the IR gets ``table[ids]``; token ids out of range are refused by name."""
    from lrpaudit.errors import InputError

    model = load_model(transformer_export("bert", "legacy"))
    graph = model.graph({"input_ids": (2, 8)})
    (token,) = graph.token_inputs
    ids = torch.tensor(np.random.default_rng(1).integers(0, VOCAB, (2, 8)))
    feeds = embed_inputs(graph, {"input_ids": ids}, torch.float64)
    assert torch.equal(feeds[token.embedded], token.table[ids])
    bad = ids.clone()
    bad[1, 3] = VOCAB
    with pytest.raises(InputError, match=rf"token id {VOCAB} \(sample 1\) is outside 0..{VOCAB - 1}"):
        embed_inputs(graph, {"input_ids": bad})
