"""Train and export the shipped sample models on scikit-learn's 8x8 handwritten digits (no downloads).

Run from the repository root:  python sample_models/make_samples.py
Needs the dev extra (scikit-learn). Deterministic: fixed seeds, single-threaded training, fixed split.
Writes, next to this file: digits_{mlp,cnn,resnet}.onnx and .pt, digits_samples.npy (16 held-out images,
shape (16, 1, 8, 8), pixel values scaled to [0, 1]), digits_samples_flat.npy (the same, shape (16, 64)),
digits_labels.npy and RESULTS.md (test accuracy of each model; make_vit.py adds the sample ViT's).
"""

from __future__ import annotations

import contextlib
import io
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

HERE = Path(__file__).resolve().parent
SEED = 0


class DigitsMLP(nn.Module):
    """64 -> 32 -> 16 -> 10 with biases (the classic biased MLP)."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 16), nn.ReLU(), nn.Linear(16, 10)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class DigitsCNN(nn.Module):
    """Conv + BatchNorm + ReLU + MaxPool, twice, then a biased classifier."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 8, 3, padding=1),
            nn.BatchNorm2d(8),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(8, 16, 3, padding=1),
            nn.BatchNorm2d(16),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(16 * 2 * 2, 32), nn.ReLU(), nn.Linear(32, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


class BasicBlock(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(out)) + x)


class DigitsResNet(nn.Module):
    """A stem, two residual blocks, global average pooling and a linear head."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, 12, 3, padding=1, bias=False), nn.BatchNorm2d(12), nn.ReLU())
        self.layer1 = nn.Sequential(BasicBlock(12), BasicBlock(12))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(12, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(self.layer1(self.stem(x))), 1))


def load_data() -> tuple[np.ndarray, ...]:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = (digits.images / 16.0).astype(np.float32)[:, None]
    return train_test_split(images, digits.target, test_size=0.25, random_state=SEED, stratify=digits.target)


def train(model: nn.Module, x: np.ndarray, y: np.ndarray, flat: bool, epochs: int = 60) -> nn.Module:
    torch.manual_seed(SEED)
    inputs = torch.from_numpy(x.reshape(len(x), -1) if flat else x)
    labels = torch.from_numpy(y).long()
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    generator = torch.Generator().manual_seed(SEED)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(inputs), generator=generator)
        for start in range(0, len(inputs), 64):
            batch = order[start : start + 64]
            optimizer.zero_grad()
            loss = nn.functional.cross_entropy(model(inputs[batch]), labels[batch])
            loss.backward()
            optimizer.step()
    return model.eval()


def accuracy(model: nn.Module, x: np.ndarray, y: np.ndarray, flat: bool) -> float:
    with torch.no_grad():
        inputs = torch.from_numpy(x.reshape(len(x), -1) if flat else x)
        return float((model(inputs).argmax(1).numpy() == y).mean())


def export(model: nn.Module, example: torch.Tensor, stem: str) -> None:
    """ONNX with the legacy exporter (one file, dynamic batch) and a traced TorchScript archive."""
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (example,),
            str(HERE / f"{stem}.onnx"),
            dynamo=False,
            opset_version=17,
            input_names=["input"],
            output_names=["logits"],
            dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
        )
        traced = torch.jit.trace(model, example)
        torch.jit.save(traced, str(HERE / f"{stem}.pt"))


def main() -> None:
    torch.set_num_threads(1)
    x_train, x_test, y_train, y_test = load_data()
    lines = ["# Sample models: test accuracy on the held-out 25% of sklearn's digits", ""]
    for stem, factory, flat in (
        ("digits_mlp", DigitsMLP, True),
        ("digits_cnn", DigitsCNN, False),
        ("digits_resnet", DigitsResNet, False),
    ):
        torch.manual_seed(SEED)
        model = train(factory(), x_train, y_train, flat)
        acc = accuracy(model, x_test, y_test, flat)
        example = torch.from_numpy(x_test[:2].reshape(2, -1) if flat else x_test[:2])
        export(model, example, stem)
        lines.append(f"- {stem}: {acc:.4f} ({len(y_test)} test images)")
        print(f"{stem}: test accuracy {acc:.4f}")
    np.save(HERE / "digits_samples.npy", x_test[:16])
    np.save(HERE / "digits_samples_flat.npy", x_test[:16].reshape(16, -1))
    np.save(HERE / "digits_labels.npy", y_test[:16].astype(np.int64))
    results = HERE / "RESULTS.md"
    if results.exists():  # make_vit.py's line stays
        lines += [line for line in results.read_text().splitlines() if line.startswith("- digits_vit:")]
    results.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
