"""Text models with integer token-id inputs, audited from their embedding lookup: seeded draws of valid ids, id
files, the per-token relevance (the sum over the embedding dimension) against a dense oracle, and the refusals
(float arrays for ids, ids out of range), through the API and the command line, for ONNX and TorchScript."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import lrpaudit
from lrpaudit import Rule
from lrpaudit.inputs import random_batches
from tests.helpers.cli import run_cli
from tests.helpers.transformer_models import export_module

VOCAB, TOKENS, DIM = 11, 6, 4


class Bag(nn.Module):
    """Embedding -> mean over the tokens -> linear: no attention, so the existing rules audit it."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.embed, self.head = nn.Embedding(VOCAB, DIM), nn.Linear(DIM, 3)

    def forward(self, input_ids):
        return self.head(self.embed(input_ids).mean(1))


@pytest.fixture(scope="module", params=["legacy", "traced"])
def bag_file(request, tmp_path_factory):
    path = tmp_path_factory.mktemp("bag") / f"bag.{'pt' if request.param == 'traced' else 'onnx'}"
    ids = torch.randint(0, VOCAB, (2, TOKENS), generator=torch.Generator().manual_seed(0))
    return export_module(Bag().eval(), ids, path, request.param, "input_ids")


def dense_token_relevance(ids: np.ndarray) -> np.ndarray:
    """epsilon(1e-6) on the head with its bias absorbed, the norm rule (stabilizer 1e-6) on the mean, logit init on
    the predicted class, then the sum over the embedding dimension: written out with numpy."""
    model = Bag()
    table = model.embed.weight.detach().double().numpy()
    weight, bias = (t.detach().double().numpy() for t in (model.head.weight, model.head.bias))
    e = table[ids]  # (N, T, D)
    m = e.mean(axis=1)  # (N, D)
    z = m @ weight.T + bias  # (N, 3)
    target = z.argmax(axis=1)
    r_out = np.zeros_like(z)
    r_out[np.arange(len(z)), target] = z[np.arange(len(z)), target]
    sign = lambda v: np.where(v >= 0, 1.0, -1.0)  # noqa: E731
    r_m = m * ((r_out / (z + 1e-6 * sign(z))) @ weight)
    r_e = (e / TOKENS) * (r_m / (m + 1e-6 * sign(m)))[:, None, :]
    return r_e.sum(axis=2)


def test_random_draws_are_valid_seeded_token_ids():
    declared = {"input_ids": [None, TOKENS], "x": [None, 2]}
    a = [b.arrays for b in random_batches(declared, 5, 2, 7, vocab={"input_ids": VOCAB})]
    b = [b.arrays for b in random_batches(declared, 5, 2, 7, vocab={"input_ids": VOCAB})]
    ids = np.concatenate([batch["input_ids"] for batch in a])
    assert ids.dtype == np.int64 and ids.shape == (5, TOKENS) and ids.min() >= 0 and ids.max() < VOCAB
    assert len(np.unique(ids)) > 3 and a[0]["x"].dtype == np.float32
    assert all(np.array_equal(x["input_ids"], y["input_ids"]) for x, y in zip(a, b))


def test_per_token_relevance_matches_the_dense_oracle(bag_file):
    model = lrpaudit.load_model(bag_file)
    assert model.integer_inputs == ["input_ids"]
    result = lrpaudit.audit(
        bag_file, Rule("epsilon", epsilon=1e-6), random=5, batch_size=2, keep_relevance=True
    )
    relevance = result.relevance["input_ids"]
    assert relevance.shape == (5, TOKENS)
    ids = np.concatenate(
        [
            b.arrays["input_ids"]
            for b in random_batches({"input_ids": [None, TOKENS]}, 5, 2, 0, vocab={"input_ids": VOCAB})
        ]
    )
    assert np.allclose(relevance, dense_token_relevance(ids), rtol=1e-9, atol=1e-12)
    assert any(
        "relevance of each token is the sum over its 4 embedding dimensions" in n for n in result.notes
    )
    assert result.fidelity.passed


def test_cli_token_ids_from_a_file_and_save_relevance(bag_file, tmp_path):
    ids = np.random.default_rng(3).integers(0, VOCAB, (4, TOKENS)).astype(np.int32)
    np.save(tmp_path / "ids.npy", ids)
    out = tmp_path / "rel.npz"
    args = ("--inputs", tmp_path / "ids.npy", "--save-relevance", out, "--preset", "epsilon", "--exit-zero")
    result = run_cli("check", bag_file, *args)
    assert result.exit_code == 0, result.output
    saved = np.load(out)
    assert saved["input_ids"].shape == (4, TOKENS)
    assert np.allclose(saved["input_ids"], dense_token_relevance(ids.astype(np.int64)), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize(
    "array,needles",
    [
        (np.zeros((2, TOKENS), np.float32), ["input 'input_ids' takes integer token ids", "float32"]),
        (np.full((2, TOKENS), VOCAB), [f"token id {VOCAB} (sample 0) is outside 0..{VOCAB - 1}"]),
    ],
    ids=["float-array", "out-of-range"],
)
def test_cli_bad_token_ids_exit_2_with_one_line(bag_file, tmp_path, array, needles):
    np.save(tmp_path / "ids.npy", array)
    result = run_cli("check", str(bag_file), "--inputs", str(tmp_path / "ids.npy"))
    assert result.exit_code == 2, result.output
    lines = [line for line in result.stderr.splitlines() if line.startswith("lrpaudit: error:")]
    assert len(lines) == 1 and all(needle in lines[0] for needle in needles), result.stderr
