"""Fixtures of the robustness tests."""

from __future__ import annotations

import types

import numpy as np
import pytest
import torch
from torch import nn

from tests.helpers.robustness import mlp, write


@pytest.fixture(scope="session")
def files(tmp_path_factory) -> types.SimpleNamespace:
    """A valid MLP (dynamic batch), inputs for it, and a traced TorchScript twin."""
    folder = tmp_path_factory.mktemp("robust")
    ns = types.SimpleNamespace(folder=folder)
    ns.onnx = write(mlp(), folder / "mlp.onnx")
    ns.inputs = folder / "x.npy"
    np.save(ns.inputs, np.random.default_rng(1).standard_normal((5, 3)).astype(np.float32))
    net = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2)).eval()
    ns.pt = folder / "mlp.pt"
    with torch.no_grad():
        torch.jit.trace(net, torch.randn(1, 3)).save(str(ns.pt))
    ns.net = net
    return ns
