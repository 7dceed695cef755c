"""Train and export the sample vision transformer on scikit-learn's 8x8 handwritten digits (no downloads).

Run from the repository root:  python sample_models/make_vit.py
Needs the dev extra (scikit-learn, torchvision). Deterministic: fixed seeds, single-threaded training, the split of
make_samples.py. Writes, next to this file: digits_vit.onnx (legacy exporter, opset 17, dynamic batch; about 100 KB)
and its test accuracy as the ``digits_vit`` line of RESULTS.md.

The model is torchvision's VisionTransformer at its smallest useful size: 2x2 patches of the 8x8 image (16 tokens
and a class token), hidden size 32, 2 heads of 16, 2 encoder layers, MLP size 64, LayerNorm everywhere, a softmax
inside each attention, GELU in the MLPs. Its patch embedding takes one channel instead of torchvision's three.
"""

from __future__ import annotations

import contextlib
import io
import warnings
from pathlib import Path

import numpy as np
import torch
from make_samples import SEED, accuracy, load_data, train
from torch import nn

HERE = Path(__file__).resolve().parent


def digits_vit() -> nn.Module:
    from torchvision.models import VisionTransformer

    model = VisionTransformer(
        image_size=8, patch_size=2, num_layers=2, num_heads=2, hidden_dim=32, mlp_dim=64, num_classes=10
    )
    model.conv_proj = nn.Conv2d(1, 32, kernel_size=2, stride=2)
    return model


def export(model: nn.Module, example: torch.Tensor, path: Path) -> None:
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (example,),
            str(path),
            dynamo=False,
            opset_version=17,
            input_names=["input"],
            output_names=["logits"],
            dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
        )


def main() -> None:
    torch.set_num_threads(1)
    x_train, x_test, y_train, y_test = load_data()
    torch.manual_seed(SEED)
    model = train(digits_vit(), x_train, y_train, flat=False, epochs=80)
    acc = accuracy(model, x_test, y_test, flat=False)
    export(model, torch.from_numpy(x_test[:2]), HERE / "digits_vit.onnx")
    results = HERE / "RESULTS.md"
    lines = [line for line in results.read_text().splitlines() if not line.startswith("- digits_vit:")]
    lines.append(f"- digits_vit: {acc:.4f} ({len(y_test)} test images)")
    results.write_text("\n".join(lines) + "\n")
    print(f"digits_vit: test accuracy {acc:.4f}")
    assert np.array_equal(np.load(HERE / "digits_samples.npy"), x_test[:16])  # the README's samples


if __name__ == "__main__":
    main()
