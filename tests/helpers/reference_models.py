"""Small plain-torch reference models (no torchvision) and an ONNX export helper, shared by the test suite.

Every model is built from a seed, has randomized BatchNorm statistics (so that a wrong folding shows up in the
numbers) and is returned in eval mode. ``MODELS`` maps a name to ``(factory, input_shape)``, where the input shape
excludes the batch dimension:

    from tests.helpers.reference_models import MODELS, example_input   # tests/ is a package

    factory, shape = MODELS["cnn_bn"]
    model = factory(seed=0)
    x = example_input("cnn_bn", batch=2)
"""

from __future__ import annotations

import contextlib
import io
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

ModelFactory = Callable[..., nn.Module]


def randomize_batchnorm(model: nn.Module, seed: int) -> nn.Module:
    """Give every BatchNorm non-trivial running statistics and affine parameters (deterministic per seed)."""
    gen = torch.Generator().manual_seed(seed + 1000)
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            n = module.num_features
            with torch.no_grad():
                module.running_mean.copy_(0.5 * torch.randn(n, generator=gen))
                module.running_var.copy_(0.5 + 1.5 * torch.rand(n, generator=gen))
                module.weight.copy_(0.5 + torch.rand(n, generator=gen))
                module.bias.copy_(0.3 * torch.randn(n, generator=gen))
    return model


def _finish(model: nn.Module, seed: int) -> nn.Module:
    return randomize_batchnorm(model, seed).eval()


def conv_bn(c_in: int, c_out: int, k: int = 3, stride: int = 1, groups: int = 1) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, k, stride, k // 2, groups=groups, bias=False), nn.BatchNorm2d(c_out)]


# ---------------------------------------------------------------- the models


def mlp_bn(seed: int = 0) -> nn.Module:
    """Linear + BatchNorm1d + ReLU twice, then a linear head; every Linear has a bias."""
    torch.manual_seed(seed)
    model = nn.Sequential(
        nn.Linear(20, 32),
        nn.BatchNorm1d(32),
        nn.ReLU(),
        nn.Linear(32, 16),
        nn.BatchNorm1d(16),
        nn.ReLU(),
        nn.Linear(16, 5),
    )
    return _finish(model, seed)


def cnn_bn(seed: int = 0) -> nn.Module:
    """Conv+BN+ReLU, max pool, conv+BN+ReLU, padded average pool (count_include_pad=True), linear head."""
    torch.manual_seed(seed)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        nn.AvgPool2d(3, stride=2, padding=1),
        nn.Flatten(),
        nn.Linear(16 * 4 * 4, 10),
    )
    return _finish(model, seed)


class ResidualBlock(nn.Module):
    """conv-bn-relu-conv-bn plus a skip (identity, or 1x1 conv + BN when the shape changes), then relu."""

    def __init__(self, c_in: int, c_out: int, stride: int = 1):
        super().__init__()
        self.conv1, self.bn1 = conv_bn(c_in, c_out, 3, stride)
        self.conv2, self.bn2 = conv_bn(c_out, c_out, 3, 1)
        self.relu = nn.ReLU()
        self.downsample = None
        if stride != 1 or c_in != c_out:
            self.downsample = nn.Sequential(*conv_bn(c_in, c_out, 1, stride))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        skip = x if self.downsample is None else self.downsample(x)
        return self.relu(out + skip)


class ResidualNet(nn.Module):
    """A stem, one identity residual block, an average pool without padding counts, a linear head."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.block = ResidualBlock(8, 8)
        self.pool = nn.AvgPool2d(3, stride=2, padding=1, count_include_pad=False)
        self.head = nn.Linear(8 * 8 * 8, 6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.block(self.stem(x)))
        return self.head(torch.flatten(x, 1))


def residual(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return _finish(ResidualNet(), seed)


def depthwise_grouped(seed: int = 0) -> nn.Module:
    """Stem conv, depthwise conv + BN + ReLU6, grouped strided conv + BN, pointwise conv, global pool, head."""
    torch.manual_seed(seed)
    model = nn.Sequential(
        *conv_bn(3, 12),
        nn.ReLU(),
        *conv_bn(12, 12, groups=12),
        nn.ReLU6(),
        *conv_bn(12, 24, stride=2, groups=3),
        nn.ReLU(),
        nn.Conv2d(24, 16, 1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(16, 7),
    )
    return _finish(model, seed)


def conv_transpose(seed: int = 0) -> nn.Module:
    """Encoder-decoder: strided conv, grouped ConvTranspose2d + BN, ConvTranspose2d with output_padding."""
    torch.manual_seed(seed)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, stride=2, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.ConvTranspose2d(8, 8, 4, stride=2, padding=1, groups=2),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.ConvTranspose2d(8, 4, 3, stride=2, padding=1, output_padding=1),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.Conv2d(4, 2, 3, padding=1),
    )
    return _finish(model, seed)


class SqueezeExcite(nn.Module):
    """Squeeze-excitation with linear layers: x * sigmoid(fc2(relu(fc1(mean(x)))))."""

    def __init__(self, channels: int, reduction: int = 4):
        super().__init__()
        self.fc1 = nn.Linear(channels, channels // reduction)
        self.fc2 = nn.Linear(channels // reduction, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c = x.shape[0], x.shape[1]
        s = x.mean(dim=(2, 3))
        gate = torch.sigmoid(self.fc2(torch.relu(self.fc1(s))))
        return x * gate.view(b, c, 1, 1)


class SENet(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(*conv_bn(3, 16), nn.ReLU())
        self.se = SqueezeExcite(16)
        self.conv = nn.Sequential(*conv_bn(16, 16, stride=2), nn.ReLU())
        self.se2 = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(16, 4, 1), nn.ReLU(), nn.Conv2d(4, 16, 1))
        self.head = nn.Linear(16, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.se(self.stem(x))
        x = self.conv(x)
        x = x * torch.sigmoid(self.se2(x))
        return self.head(x.mean(dim=(2, 3)))


def se_net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return _finish(SENet(), seed)


def vgg_like(seed: int = 0) -> nn.Module:
    """Two conv-bn-relu stages with max pooling, then a Linear-ReLU-Dropout-Linear classifier."""
    torch.manual_seed(seed)
    model = nn.Sequential(
        *conv_bn(3, 8),
        nn.ReLU(),
        *conv_bn(8, 8),
        nn.ReLU(),
        nn.MaxPool2d(2),
        *conv_bn(8, 16),
        nn.ReLU(),
        *conv_bn(16, 16),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(16 * 4 * 4, 32),
        nn.ReLU(),
        nn.Dropout(0.5),
        nn.Linear(32, 10),
    )
    return _finish(model, seed)


class ResNetLike(nn.Module):
    """Stem (conv-bn-relu, padded max pool), three basic blocks (one downsampling), global average pool, fc."""

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.stem = nn.Sequential(*conv_bn(3, 16), nn.ReLU(), nn.MaxPool2d(3, stride=2, padding=1))
        self.layer1 = ResidualBlock(16, 16)
        self.layer2 = nn.Sequential(ResidualBlock(16, 32, stride=2), ResidualBlock(32, 32))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(32, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layer2(self.layer1(self.stem(x)))
        return self.fc(torch.flatten(self.pool(x), 1))


def resnet_like(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return _finish(ResNetLike(), seed)


MODELS: dict[str, tuple[ModelFactory, tuple[int, ...]]] = {
    "mlp_bn": (mlp_bn, (20,)),
    "cnn_bn": (cnn_bn, (3, 16, 16)),
    "residual": (residual, (3, 16, 16)),
    "depthwise_grouped": (depthwise_grouped, (3, 16, 16)),
    "conv_transpose": (conv_transpose, (3, 16, 16)),
    "se_net": (se_net, (3, 16, 16)),
    "vgg_like": (vgg_like, (3, 16, 16)),
    "resnet_like": (resnet_like, (3, 16, 16)),
}


def build(name: str, seed: int = 0) -> nn.Module:
    """The named reference model, in eval mode, with randomized BatchNorm statistics."""
    factory, _ = MODELS[name]
    return factory(seed=seed)


def example_input(
    name: str, batch: int = 2, seed: int = 0, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """A seeded standard-normal input batch for the named model."""
    _, shape = MODELS[name]
    gen = torch.Generator().manual_seed(seed)
    return torch.randn((batch, *shape), generator=gen, dtype=torch.float64).to(dtype)


# ---------------------------------------------------------------- ONNX export


def export_onnx(
    model: nn.Module,
    example: torch.Tensor,
    path: str | Path,
    dynamo: bool,
    opset: int,
    fold: bool = True,
    external_data: bool = False,
) -> Path:
    """Export ``model`` with input ``x`` (dynamic batch) and output ``y``; the exporter's chatter is swallowed.

    ``dynamo=True`` uses the torch.export-based exporter (``optimize=fold``); ``dynamo=False`` the legacy
    TorchScript exporter (``do_constant_folding=fold``). With ``fold=False`` the legacy exporter also skips its
    eval-mode peephole (``training=PRESERVE`` on an eval model), which otherwise folds Conv+BatchNorm in float32
    even without constant folding.
    """
    path = Path(path)
    sink = io.StringIO()
    with warnings.catch_warnings(), contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
        warnings.simplefilter("ignore")
        if dynamo:
            torch.onnx.export(
                model,
                (example,),
                str(path),
                dynamo=True,
                external_data=external_data,
                optimize=fold,
                opset_version=opset,
                input_names=["x"],
                output_names=["y"],
                dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=1024)},),
                verbose=False,
            )
        else:
            torch.onnx.export(
                model,
                (example,),
                str(path),
                dynamo=False,
                opset_version=opset,
                do_constant_folding=fold,
                training=torch.onnx.TrainingMode.EVAL if fold else torch.onnx.TrainingMode.PRESERVE,
                input_names=["x"],
                output_names=["y"],
                dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}},
            )
    return path
