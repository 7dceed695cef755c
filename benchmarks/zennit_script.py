"""A user's Zennit script: the other side of the whole-process comparison in ``benchmarks/whole.py``.

    python benchmarks/zennit_script.py vgg16 vgg16.pth x8.npy --batch-size 8 --out zennit.json

What someone writes to check conservation with Zennit on the same weights and inputs that ``lrpaudit check``
reads: build the torchvision model, load its state dict, read the inputs, attribute the predicted logit with
``EpsilonPlusFlat`` (the model's canonizer) batch by batch, and write each sample's logit and relevance sum as
JSON. float32, torch's default threads, CPU.
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch
import torchvision
from zennit.attribution import Gradient
from zennit.composites import EpsilonPlusFlat
from zennit.torchvision import ResNetCanonizer, VGGCanonizer


def predicted_logit(output: torch.Tensor) -> torch.Tensor:
    """The output relevance: the predicted class's logit, zero elsewhere (lrpaudit's ``init: logit``)."""
    target = output.argmax(dim=1, keepdim=True)
    return torch.zeros_like(output).scatter(1, target, output.gather(1, target))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("weights")
    parser.add_argument("inputs")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    model = getattr(torchvision.models, args.model)(weights=None)
    model.load_state_dict(torch.load(args.weights, weights_only=True))
    model.eval()
    inputs = np.load(args.inputs, mmap_mode="r")
    canonizer = ResNetCanonizer() if args.model.startswith("resnet") else VGGCanonizer()
    rows = []
    with Gradient(model=model, composite=EpsilonPlusFlat(canonizers=[canonizer])) as attributor:
        for start in range(0, len(inputs), args.batch_size):
            x = torch.from_numpy(np.array(inputs[start : start + args.batch_size], dtype=np.float32))
            output, relevance = attributor(x.requires_grad_(True), predicted_logit)
            logit = predicted_logit(output).sum(dim=1).detach()
            total = relevance.detach().sum(dim=tuple(range(1, relevance.dim())))
            rows += [{"logit": float(a), "relevance": float(b)} for a, b in zip(logit, total)]
    with open(args.out, "w", encoding="utf-8") as handle:
        json.dump({"samples": rows}, handle)


if __name__ == "__main__":
    main()
