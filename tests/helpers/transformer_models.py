"""Transformer-era models for the test suite, built from configs with random weights (no download, no hub), and
their files: legacy ONNX, dynamo ONNX and TorchScript traced under ``torch.no_grad()`` (as users trace; that is
where the fused attention kernels appear).

    from tests.helpers.transformer_models import MODELS, build, example_input, export

    model = build("bert", attn="sdpa")           # eval mode, float32, every weight random (seeded)
    x = example_input("bert", batch=2)            # token ids (int64) or a float tensor
    export("bert", "dynamo", path, attn="sdpa")   # "legacy" | "dynamo" | "traced"

Hugging Face models are wrapped so that the file takes one named tensor (``input_ids``, ``inputs_embeds`` or
``pixel_values``) and returns the logits. Head dimensions are 16 (``1 / sqrt(16)`` and every other constant the
exporters store in float32 are exact), so the float64 IR can match the float64 torch model to rounding; the
full-size torchvision ``convnext_tiny`` / ``swin_t`` (28M parameters) run at 32x32.
"""

from __future__ import annotations

import contextlib
import io
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

VOCAB = 40  # token ids of the text models: 0 .. VOCAB - 1


@dataclass(frozen=True)
class Spec:
    """A model: its factory ``make(attn)``, the input's name and per-sample shape, and whether it takes ids."""

    make: Callable[[str], nn.Module]
    input_name: str
    shape: tuple[int, ...]
    token_ids: bool = False


class _Logits(nn.Module):
    """A Hugging Face model as ``forward(<input name>) -> logits``."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model


class TextLogits(_Logits):
    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=input_ids).logits


class EmbedsLogits(_Logits):
    def forward(self, inputs_embeds: torch.Tensor) -> torch.Tensor:
        return self.model(inputs_embeds=inputs_embeds).logits


class ImageLogits(_Logits):
    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.model(pixel_values=pixel_values).logits


def _bert(attn: str) -> nn.Module:
    import transformers

    config = transformers.BertConfig(
        vocab_size=VOCAB,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=48,
        max_position_embeddings=16,
        num_labels=3,
        attn_implementation=attn,
    )
    return transformers.BertForSequenceClassification(config)


def _gpt2(attn: str) -> nn.Module:
    import transformers

    config = transformers.GPT2Config(
        vocab_size=VOCAB, n_embd=32, n_layer=2, n_head=2, n_positions=16, attn_implementation=attn
    )
    return transformers.GPT2LMHeadModel(config)


def _vit_hf(attn: str) -> nn.Module:
    import transformers

    config = transformers.ViTConfig(
        image_size=16,
        patch_size=4,
        num_channels=3,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=48,
        num_labels=3,
        attn_implementation=attn,
    )
    return transformers.ViTForImageClassification(config)


def _vit_tv(attn: str) -> nn.Module:
    from torchvision.models import VisionTransformer

    return VisionTransformer(
        image_size=16, patch_size=4, num_layers=2, num_heads=2, hidden_dim=32, mlp_dim=48, num_classes=5
    )


def _convnext_small(attn: str) -> nn.Module:
    from torchvision.models.convnext import CNBlockConfig, ConvNeXt

    return ConvNeXt([CNBlockConfig(16, 32, 1), CNBlockConfig(32, None, 1)], num_classes=5)


def _swin_small(attn: str) -> nn.Module:
    """Stage 1 has 8x8 tokens and 4x4 windows: shifted windows (roll and the attention mask) are exercised."""
    from torchvision.models import SwinTransformer

    return SwinTransformer(
        patch_size=[4, 4], embed_dim=32, depths=[2, 2], num_heads=[2, 4], window_size=[4, 4], num_classes=5
    )


def _encoder(attn: str) -> nn.Module:
    """``nn.TransformerEncoder`` (batch first, post-norm, GELU) under a linear head."""
    layer = nn.TransformerEncoderLayer(32, 2, 48, dropout=0.0, activation="gelu", batch_first=True)
    return nn.Sequential(nn.TransformerEncoder(layer, 2, enable_nested_tensor=False), nn.Linear(32, 3))


def _encoder_bias_free(attn: str) -> nn.Module:
    """The ``encoder`` with no additive constant anywhere: every Linear and LayerNorm built with ``bias=False``
    (LayerNorm without beta), a bias-free head, no position embedding: the CP-LRP control run."""
    layer = nn.TransformerEncoderLayer(
        32, 2, 48, dropout=0.0, activation="gelu", batch_first=True, bias=False
    )
    return nn.Sequential(
        nn.TransformerEncoder(layer, 2, enable_nested_tensor=False), nn.Linear(32, 3, bias=False)
    )


def _convnext_tiny(attn: str) -> nn.Module:
    from torchvision.models import convnext_tiny

    return convnext_tiny()


def _swin_t(attn: str) -> nn.Module:
    from torchvision.models import swin_t

    return swin_t()


MODELS: dict[str, Spec] = {
    "bert": Spec(lambda attn: TextLogits(_bert(attn)), "input_ids", (8,), token_ids=True),
    "bert_embeds": Spec(lambda attn: EmbedsLogits(_bert(attn)), "inputs_embeds", (8, 32)),
    "gpt2": Spec(lambda attn: TextLogits(_gpt2(attn)), "input_ids", (8,), token_ids=True),
    "vit_hf": Spec(lambda attn: ImageLogits(_vit_hf(attn)), "pixel_values", (3, 16, 16)),
    "vit_tv": Spec(_vit_tv, "x", (3, 16, 16)),
    "convnext_small": Spec(_convnext_small, "x", (3, 32, 32)),
    "swin_small": Spec(_swin_small, "x", (3, 32, 32)),
    "encoder": Spec(_encoder, "x", (6, 32)),
    "encoder_bias_free": Spec(_encoder_bias_free, "x", (6, 32)),
    "convnext_tiny": Spec(_convnext_tiny, "x", (3, 32, 32)),
    "swin_t": Spec(_swin_t, "x", (3, 32, 32)),
}


def randomize(model: nn.Module, seed: int) -> nn.Module:
    """Every parameter random (seeded): norm weights ``1 + 0.2 N``, other vectors ``0.2 N``, matrices and tensors
    ``N / sqrt(fan_in)``. Zero or identity initializations (torchvision's zero ViT head, ConvNeXt's 1e-6 layer
    scale, unit LayerNorms) would hide mistakes."""
    gen = torch.Generator().manual_seed(seed)
    norms = (nn.LayerNorm, nn.GroupNorm, nn.modules.batchnorm._BatchNorm)
    with torch.no_grad():
        for module in model.modules():
            for name, param in module.named_parameters(recurse=False):
                noise = torch.randn(param.shape, generator=gen)
                if isinstance(module, norms) and name == "weight":
                    param.copy_(1.0 + 0.2 * noise)
                elif param.dim() <= 1:
                    param.copy_(0.2 * noise)
                else:
                    param.copy_(noise / max(1, param[0].numel()) ** 0.5)
    return model


def build(name: str, attn: str = "eager", seed: int = 0) -> nn.Module:
    """The named model in eval mode with random weights (deterministic per seed)."""
    torch.manual_seed(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = MODELS[name].make(attn)
    return randomize(model, seed).eval()


def example_input(
    name: str, batch: int = 2, seed: int = 0, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """Seeded token ids (int64, 0 .. VOCAB - 1) or a standard-normal float batch for the named model."""
    spec = MODELS[name]
    gen = torch.Generator().manual_seed(seed)
    if spec.token_ids:
        return torch.randint(0, VOCAB, (batch, *spec.shape), generator=gen)
    return torch.randn((batch, *spec.shape), generator=gen, dtype=torch.float64).to(dtype)


def export(name: str, fmt: str, path: Path, attn: str = "eager", opset: int | None = None) -> Path:
    """Write the named model as ``fmt`` (see ``export_module``)."""
    return export_module(build(name, attn), example_input(name), path, fmt, MODELS[name].input_name, opset)


def export_module(
    model: nn.Module,
    example: torch.Tensor | tuple[torch.Tensor, ...],
    path: Path,
    fmt: str,
    names: str | tuple[str, ...],
    opset: int | None = None,
) -> Path:
    """Write ``model`` as ``fmt``: ``legacy`` (ONNX from the TorchScript-based exporter, opset 17 unless ``opset``;
    before 17 it writes LayerNorm decomposed), ``dynamo`` (ONNX from torch.export, opset 20 unless ``opset``; 23
    writes the fused ``Attention`` op) or ``traced`` (torch.jit.trace under no_grad). ONNX files take a dynamic batch; the exporters' chatter is swallowed."""
    examples = example if isinstance(example, tuple) else (example,)
    names = names if isinstance(names, tuple) else (names,)
    sink = io.StringIO()
    with warnings.catch_warnings(), contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
        warnings.simplefilter("ignore")
        if fmt == "traced":
            with torch.no_grad():
                torch.jit.trace(model, examples, check_trace=False).save(str(path))
        elif fmt == "legacy":
            torch.onnx.export(
                model,
                examples,
                str(path),
                dynamo=False,
                opset_version=opset or 17,
                input_names=list(names),
                output_names=["logits"],
                dynamic_axes={**{n: {0: "batch"} for n in names}, "logits": {0: "batch"}},
            )
        else:
            batch = torch.export.Dim("batch", min=1, max=64)
            torch.onnx.export(
                model,
                examples,
                str(path),
                dynamo=True,
                external_data=False,
                opset_version=opset,
                input_names=list(names),
                output_names=["logits"],
                dynamic_shapes=tuple({0: batch} for _ in names),
                verbose=False,
            )
    return path
