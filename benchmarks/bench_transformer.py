"""A transformer row: lrpaudit against LXT 2.1 (efficient mode) and a plain forward + backward, same BERT, same ids.

    python benchmarks/bench_transformer.py                   # the default grid (see --help)
    python benchmarks/bench_transformer.py --sizes small --batches 1 8 --repeats 5 --threads 1

The model: Hugging Face ``BertForSequenceClassification`` built from a config with random weights (seeded),
explained from its word embeddings for the predicted class. lrpaudit reads it as a legacy ONNX file with
``input_ids`` (audited from the embedding lookup), under the ``attnlrp`` preset. Measured per (size, batch,
dtype), medians over ``--repeats`` interleaved runs after one warm-up, in one process:

  phase 1 (torch's modules as shipped)    (a) forward  (b) forward + backward: input x gradient at the embeddings
                                          (d) lrpaudit full audit (the onnxruntime fidelity check excluded, as in
                                              bench.py)  (e) lrpaudit propagation alone
  phase 2 (after ``lxt.efficient.monkey_patch``, which changes torch.nn.LayerNorm and the BERT modules for the
          whole process)                  (c) LXT: the patched model's input x gradient  (d) again

Ratios printed: (d)/(b) and (e)/(b) from phase 1, (d)/(c) from phase 2 (each side by side). ``--process`` also
times whole processes (``time``-like wall clock, imports and model loading included): ``lrpaudit check`` on the
file, a script running LXT on the same weights, and one running the plain forward + backward. Not part of the
test run: timings never go in tests.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from bench import measure_interleaved as interleaved  # the round-robin medians of the CNN benchmark

warnings.filterwarnings("ignore")

# name: (hidden, layers, heads, intermediate, sequence length)
SIZES = {"tiny": (32, 2, 2, 48, 8), "small": (256, 4, 4, 1024, 128)}
VOCAB = 1000
ROOT = Path(__file__).resolve().parents[1]


def config(size: str):
    import transformers

    hidden, layers, heads, intermediate, length = SIZES[size]
    return transformers.BertConfig(
        vocab_size=VOCAB,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=intermediate,
        max_position_embeddings=max(length, 16),
        num_labels=3,
        attn_implementation="eager",
    )


class IdsToLogits(torch.nn.Module):
    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=input_ids).logits


def build(size: str, state: Path | None = None) -> torch.nn.Module:
    """The model (eval mode); its weights from ``state`` when given, else seeded random ones."""
    import transformers

    torch.manual_seed(0)
    model = transformers.BertForSequenceClassification(config(size)).eval()
    if state is not None:
        model.load_state_dict(torch.load(state, weights_only=True))
    return model


def ids(size: str, batch: int) -> torch.Tensor:
    length = SIZES[size][4]
    return torch.randint(0, VOCAB, (batch, length), generator=torch.Generator().manual_seed(1))


def export(model: torch.nn.Module, example: torch.Tensor, path: Path) -> None:
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        torch.onnx.export(
            IdsToLogits(model),
            (example,),
            str(path),
            dynamo=False,
            opset_version=17,
            input_names=["input_ids"],
            output_names=["logits"],
            dynamic_axes={"input_ids": {0: "batch"}, "logits": {0: "batch"}},
        )


def input_x_gradient(model: torch.nn.Module, input_ids: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Relevance per token: input x gradient at the word embeddings, for the predicted class."""
    embeds = model.get_input_embeddings()(input_ids).detach().to(dtype).requires_grad_(True)
    logits = model(inputs_embeds=embeds).logits
    logits[torch.arange(len(logits)), logits.argmax(1)].sum().backward()
    return (embeds * embeds.grad).sum(-1)


def lrpaudit_methods(path: Path, input_ids: torch.Tensor, dtype: str) -> dict:
    import lrpaudit
    from lrpaudit.config import load_config
    from lrpaudit.forward import embed_inputs
    from lrpaudit.frontends import load_model
    from lrpaudit.propagate import propagate

    loaded = load_model(path)
    config = load_config(preset="attnlrp").with_overrides(dtype=dtype)
    graph = loaded.graph({"input_ids": tuple(input_ids.shape)})
    torch_dtype = getattr(torch, dtype)
    feeds = embed_inputs(graph, {"input_ids": input_ids}, torch_dtype)
    arrays = {"input_ids": input_ids.numpy()}

    def audit():
        lrpaudit.audit(loaded, config, arrays, batch_size=len(input_ids), fidelity="off")

    def engine():
        propagate(graph, feeds, config, dtype=torch_dtype)

    return {"audit": audit, "engine": engine}


def prepare(size: str, workdir: Path) -> tuple[Path, Path]:
    """The model's weights and its ONNX file (written once per size)."""
    state, path = workdir / f"bert-{size}.pt", workdir / f"bert-{size}.onnx"
    if not path.exists():
        model = build(size)
        torch.save(model.state_dict(), state)
        export(model, ids(size, 2), path)
    return state, path


def phase1(size: str, batch: int, dtype: str, repeats: int, workdir: Path) -> dict:
    """(a), (b), (d), (e) with torch's modules as shipped."""
    torch_dtype = getattr(torch, dtype)
    state, path = prepare(size, workdir)
    input_ids = ids(size, batch)
    plain = build(size, state).to(torch_dtype)

    def forward():
        with torch.no_grad():
            plain(input_ids=input_ids)

    def forward_backward():
        input_x_gradient(plain, input_ids, torch_dtype)

    times = interleaved(
        {"forward": forward, "fwd_bwd": forward_backward, **lrpaudit_methods(path, input_ids, dtype)}, repeats
    )
    row = {"size": size, "batch": batch, "dtype": dtype, **{f"{k}_s": v for k, v in times.items()}}
    row["d/b"], row["e/b"] = row["audit_s"] / row["fwd_bwd_s"], row["engine_s"] / row["fwd_bwd_s"]
    return row


def phase2(row: dict, repeats: int, workdir: Path) -> dict:
    """(c) and (d) again, LXT's patches applied (for good: every phase 1 runs first)."""
    size, batch, dtype = row["size"], row["batch"], row["dtype"]
    torch_dtype = getattr(torch, dtype)
    state, path = prepare(size, workdir)
    input_ids = ids(size, batch)
    _patch_lxt()
    patched = build(size, state).to(torch_dtype)  # built after the patch: LXT's BERT classes
    times = interleaved(
        {
            "lxt": lambda: input_x_gradient(patched, input_ids, torch_dtype),
            **lrpaudit_methods(path, input_ids, dtype),
        },
        repeats,
    )
    row = {**row, "lxt_s": times["lxt"], "audit2_s": times["audit"]}
    row["d/c"] = row["audit2_s"] / row["lxt_s"]
    return row


_PATCHED = False


def _patch_lxt() -> None:
    global _PATCHED
    if not _PATCHED:
        from lxt.efficient import monkey_patch
        from transformers.models.bert import modeling_bert

        with contextlib.redirect_stdout(io.StringIO()):
            monkey_patch(modeling_bert)
        _PATCHED = True


HEADER = (
    "| size | batch | dtype | (a) fwd s | (b) fwd+bwd s | (c) LXT s | (d) audit s | (d) with LXT loaded s "
    "| (e) engine s | (d)/(b) | (d)/(c) | (e)/(b) |"
)


def print_row(row: dict) -> None:
    print(
        f"| {row['size']} | {row['batch']} | {row['dtype']} | {row['forward_s']:.4f} | {row['fwd_bwd_s']:.4f} | "
        f"{row['lxt_s']:.4f} | {row['audit_s']:.4f} | {row['audit2_s']:.4f} | {row['engine_s']:.4f} | "
        f"{row['d/b']:.2f} | {row['d/c']:.2f} | {row['e/b']:.2f} |",
        flush=True,
    )


SCRIPT = """
import sys, torch
sys.path.insert(0, {bench!r})
from bench_transformer import build, ids, input_x_gradient
torch.set_num_threads({threads})
{patch}
model = build({size!r}, {state!r})
input_x_gradient(model, ids({size!r}, {batch}), torch.float32)
"""
PATCH = "from lxt.efficient import monkey_patch\nfrom transformers.models.bert import modeling_bert\n" + (
    "monkey_patch(modeling_bert)"
)


def whole_processes(size: str, batch: int, threads: int, repeats: int, workdir: Path) -> None:
    """Wall clock of whole processes (imports, loading, one explanation; medians of ``repeats``)."""
    state, path = workdir / f"bert-{size}.pt", workdir / f"bert-{size}.onnx"
    np.save(workdir / "ids.npy", ids(size, batch).numpy())
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    bench = str(Path(__file__).resolve().parent)
    commands = {
        "lrpaudit check (float32, attnlrp, fidelity check and report included)": [
            *(sys.executable, "-c", "from lrpaudit.cli import main; main()"),
            *(
                "check",
                str(path),
                "--preset",
                "attnlrp",
                "--dtype",
                "float32",
                "--inputs",
                str(workdir / "ids.npy"),
            ),
            *("-q", "--exit-zero"),
        ],
    }
    for label, patch in (("LXT script (float32)", PATCH), ("plain forward+backward script (float32)", "")):
        code = SCRIPT.format(
            bench=bench, threads=threads, patch=patch, size=size, state=str(state), batch=batch
        )
        commands[label] = [sys.executable, "-c", textwrap.dedent(code)]
    for label, command in commands.items():
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            subprocess.run(command, check=True, env=env, capture_output=True, cwd=ROOT)
            times.append(time.perf_counter() - start)
        print(
            f"- {size}, batch {batch}: {label}: {statistics.median(times):.2f} s (median of {repeats})",
            flush=True,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", default=["tiny", "small"], choices=list(SIZES))
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 8])
    parser.add_argument("--dtypes", nargs="+", default=["float32", "float64"])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--process", action="store_true", help="also time whole processes")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    import lxt
    import transformers

    load = os.getloadavg()
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, load average {load[0]:.2f} {load[1]:.2f} "
        f"{load[2]:.2f}; torch {torch.__version__}, transformers {transformers.__version__}, "
        f"lxt {getattr(lxt, '__version__', '2.1')}, threads {torch.get_num_threads()}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        cases = [(s, b, d) for s in args.sizes for d in args.dtypes for b in args.batches]
        rows = [phase1(size, batch, dtype, args.repeats, workdir) for size, batch, dtype in cases]
        print(HEADER)
        print("|" + "---|" * 12)
        for row in rows:
            print_row(phase2(row, args.repeats, workdir))
        if args.process:
            print("\nwhole processes:")
            for size in args.sizes:
                whole_processes(size, max(args.batches), args.threads, args.repeats, workdir)
    load = os.getloadavg()
    print(f"load average after: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")


if __name__ == "__main__":
    main()
