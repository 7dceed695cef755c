"""The biased CNN the config tests audit (every preset has something to do on it), and its legacy export."""

from __future__ import annotations

import contextlib
import io
import warnings
from pathlib import Path

import torch
from torch import nn


class SmallCNN(nn.Module):
    """conv+relu+maxpool+conv+relu+avgpool+linear+relu+linear, every layer biased; optional input BatchNorm."""

    def __init__(self, input_bn: bool = False, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.bn0 = nn.BatchNorm2d(3) if input_bn else nn.Identity()
        self.conv1, self.relu1, self.pool1 = nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)
        self.conv2, self.relu2, self.pool2 = nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.AvgPool2d(2)
        self.fc1, self.relu3, self.fc2 = nn.Linear(16 * 4 * 4, 32), nn.ReLU(), nn.Linear(32, 10)
        if input_bn:
            with torch.no_grad():
                self.bn0.running_mean.uniform_(-0.5, 0.5)
                self.bn0.running_var.uniform_(0.5, 2.0)
                self.bn0.weight.uniform_(0.5, 1.5)
                self.bn0.bias.uniform_(-0.3, 0.3)

    def forward(self, x):
        x = self.pool1(self.relu1(self.conv1(self.bn0(x))))
        x = self.pool2(self.relu2(self.conv2(x)))
        return self.fc2(self.relu3(self.fc1(torch.flatten(x, 1))))


def export_small(model: nn.Module, path: Path) -> Path:
    sink = io.StringIO()
    with warnings.catch_warnings(), contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model.eval(),
            (torch.randn(1, 3, 16, 16),),
            str(path),
            dynamo=False,
            input_names=["x"],
            output_names=["y"],
            dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}},
        )
    return path
