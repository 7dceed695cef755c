"""Whole processes, as a user runs them: ``lrpaudit check`` against a user's Zennit script, start-up, imports, and
the sample-scaling series. Every repetition is a fresh process; the commands of one table are alternated
(round robin, the order reversed every other repetition) so that load from other work on a shared machine falls
on all of them alike; medians are printed, with the load average before and after each table.

    python benchmarks/whole.py compare --models resnet18 resnet50 vgg16 --batches 1 8 --repeats 5
    python benchmarks/whole.py startup --repeats 15
    python benchmarks/whole.py imports --repeats 7
    python benchmarks/whole.py scaling --samples 16 256 4096 --repeats 3

``compare``: per (model, batch): ``lrpaudit check MODEL.onnx --preset epsilon-plus-flat --inputs xB.npy
--batch-size B --dtype float32 --json-report r.json -q`` (the forward check on, as by default) against
``benchmarks/zennit_script.py`` (torchvision model + state dict, ``EpsilonPlusFlat`` with the model's canonizer,
each sample's logit and relevance sum written as JSON) on the same weights (random, seed 0; exported once to ONNX
with the legacy exporter, opset 17, and saved as a state dict) and the same float32 inputs (one batch of B
samples, 224x224). Peak memory: the child's maximum resident set (``os.wait4``). ``scaling``: ``lrpaudit check
sample_models/digits_cnn.onnx --random N --batch-size 16`` (float64, the default) for each N: seconds and peak
memory. Not part of the tests: timings never go in tests.
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
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ZENNIT = Path(__file__).resolve().parent / "zennit_script.py"
# `lrpaudit ...` as the console script runs it, with this checkout's package first on the path
LRPAUDIT = [
    sys.executable,
    "-c",
    "import sys; sys.argv[0] = 'lrpaudit'; from lrpaudit.cli import main; main()",
]


def run(command: list[str], env: dict | None = None, codes=(0, 1, 2)) -> tuple[float, float, int]:
    """(wall seconds, peak RSS in MiB, exit code) of one process (exit 1: a failing audit, 2: a usage error)."""
    start = time.perf_counter()
    child = subprocess.Popen(
        command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env or os.environ.copy()
    )
    _, status, usage = os.wait4(child.pid, 0)
    elapsed = time.perf_counter() - start
    child.returncode = os.waitstatus_to_exitcode(status)
    stderr = child.stderr.read().decode(errors="replace") if child.stderr else ""
    if child.returncode not in codes:
        raise SystemExit(f"{' '.join(map(str, command))} failed ({child.returncode}):\n{stderr}")
    return elapsed, usage.ru_maxrss / 1024, child.returncode


def alternated(commands: dict[str, list[str]], repeats: int, warmup: bool = True) -> dict[str, dict]:
    """Median seconds and peak MiB per command, the commands run round robin (order reversed every other round)
    after one warm-up round (page cache, .pyc files)."""
    names = list(commands)
    if warmup:
        for name in names:
            run(commands[name])
    seconds: dict[str, list[float]] = {name: [] for name in names}
    peaks: dict[str, list[float]] = {name: [] for name in names}
    for index in range(repeats):
        for name in names if index % 2 == 0 else reversed(names):
            elapsed, peak, _ = run(commands[name])
            seconds[name].append(elapsed)
            peaks[name].append(peak)
    return {
        name: {
            "s": statistics.median(seconds[name]),
            "min_s": min(seconds[name]),
            "mb": statistics.median(peaks[name]),
        }
        for name in names
    }


def load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} {five:.2f} {fifteen:.2f}"


# ------------------------------------------------------------------------------------------------ the files


def prepare(workdir: Path, models: list[str], batches: list[int]) -> None:
    """Weights (seed 0) as ONNX and as a state dict, and one float32 input batch per batch size (seed 0)."""
    import numpy as np
    import torch
    import torchvision

    for name in models:
        onnx_path, weights = workdir / f"{name}.onnx", workdir / f"{name}.pth"
        if onnx_path.exists() and weights.exists():
            continue
        torch.manual_seed(0)
        model = getattr(torchvision.models, name)(weights=None).eval()
        torch.save(model.state_dict(), weights)
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            torch.onnx.export(
                model,
                (torch.randn(1, 3, 224, 224),),
                str(onnx_path),
                dynamo=False,
                opset_version=17,
                input_names=["x"],
                dynamic_axes={"x": {0: "b"}},
            )
    for batch in batches:
        path = workdir / f"x{batch}.npy"
        if not path.exists():
            x = np.random.default_rng(0).standard_normal((batch, 3, 224, 224)).astype(np.float32)
            np.save(path, x)


def compare(args) -> None:
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    prepare(workdir, args.models, args.batches)
    print(
        "| model | batch | lrpaudit s | zennit s | lrpaudit / zennit | peak MiB lrpaudit / zennit | load before / after |"
    )
    print("|---|---|---|---|---|---|---|")
    for name in args.models:
        for batch in args.batches:
            inputs, report = workdir / f"x{batch}.npy", workdir / "r.json"
            check = [*LRPAUDIT, "check", str(workdir / f"{name}.onnx"), "--preset", "epsilon-plus-flat"]
            check += ["--inputs", str(inputs), "--batch-size", str(batch), "--dtype", "float32"]
            check += ["--json-report", str(report), "-q", *args.extra]
            zennit = [sys.executable, str(ZENNIT), name, str(workdir / f"{name}.pth"), str(inputs)]
            zennit += ["--batch-size", str(batch), "--out", str(workdir / "z.json")]
            before = load()
            got = alternated({"lrpaudit": check, "zennit": zennit}, args.repeats)
            ours, theirs = got["lrpaudit"], got["zennit"]
            print(
                f"| {name} | {batch} | {ours['s']:.2f} | {theirs['s']:.2f} | **{ours['s'] / theirs['s']:.2f}** | "
                f"{ours['mb']:.0f} / {theirs['mb']:.0f} | {before} / {load()} |",
                flush=True,
            )


def startup(args) -> None:
    commands = {
        "python -c 'import click, rich'": [sys.executable, "-c", "import click, rich"],
        "lrpaudit --help": [*LRPAUDIT, "--help"],
        "lrpaudit --version": [*LRPAUDIT, "--version"],
        "lrpaudit presets": [*LRPAUDIT, "presets"],
        "lrpaudit presets epsilon": [*LRPAUDIT, "presets", "epsilon"],
        "lrpaudit rules": [*LRPAUDIT, "rules"],
        "lrpaudit check (usage error: no model)": [*LRPAUDIT, "check"],
        "lrpaudit check m.onnx --random 2 --inputs x.npy": [*LRPAUDIT, "check", "m.onnx", "--random", "2"]
        + ["--inputs", "x.npy"],
        "lrpaudit check m.onnx --shard 1/2 --baseline b.json": [
            *LRPAUDIT,
            "check",
            "m.onnx",
            "--shard",
            "1/2",
        ]
        + ["--baseline", "b.json"],
    }
    print(f"load before: {load()}")
    got = alternated(commands, args.repeats)
    base = got["python -c 'import click, rich'"]["s"]
    print("| command | median ms | min ms | / bare click+rich |")
    print("|---|---|---|---|")
    for name, value in got.items():
        print(f"| `{name}` | {value['s'] * 1e3:.0f} | {value['min_s'] * 1e3:.0f} | {value['s'] / base:.2f} |")
    print(f"load after: {load()}")


def imports(args) -> None:
    statements = {
        "python (nothing)": "pass",
        "import torch": "import torch",
        "import onnx": "import onnx",
        "import onnxruntime": "import onnxruntime",
        "import lrpaudit.api (what check loads)": "import lrpaudit.api, lrpaudit.frontends.onnx",
        "import torch, torchvision, zennit (the Zennit script)": "import torch, torchvision, zennit.composites, "
        "zennit.torchvision, zennit.attribution",
    }
    print(f"load before: {load()}")
    got = alternated({k: [sys.executable, "-c", v] for k, v in statements.items()}, args.repeats)
    print("| imports | median s | min s |")
    print("|---|---|---|")
    for name, value in got.items():
        print(f"| `{name}` | {value['s']:.2f} | {value['min_s']:.2f} |")
    print(f"load after: {load()}")


def scaling(args) -> None:
    model = REPO / "sample_models" / args.model
    with tempfile.TemporaryDirectory() as tmp:
        commands = {
            n: [*LRPAUDIT, "check", str(model), "--random", str(n), "--batch-size", str(args.batch_size)]
            + ["--json-report", str(Path(tmp) / "r.json"), "-q", *args.extra]
            for n in args.samples
        }
        print(f"load before: {load()}")
        got = alternated({str(n): c for n, c in commands.items()}, args.repeats)
    print(
        f"| samples ({args.model}, batches of {args.batch_size}) | median s | s per sample beyond the first "
        "batch size | peak MiB |"
    )
    print("|---|---|---|---|")
    first = got[str(args.samples[0])]["s"]
    for n in args.samples:
        value = got[str(n)]
        per = (value["s"] - first) / (n - args.samples[0]) * 1e3 if n != args.samples[0] else float("nan")
        print(f"| {n} | {value['s']:.2f} | {per:.2f} ms | {value['mb']:.0f} |")
    print(f"load after: {load()}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="what", required=True)
    one = sub.add_parser("compare")
    one.add_argument("--models", nargs="+", default=["resnet18", "resnet50", "vgg16"])
    one.add_argument("--batches", nargs="+", type=int, default=[1, 8])
    one.add_argument("--repeats", type=int, default=5)
    one.add_argument("--workdir", default=str(Path(tempfile.gettempdir()) / "lrpaudit-bench"))
    one.add_argument(
        "--extra", nargs="*", default=[], help="more `lrpaudit check` flags (e.g. --fidelity all)"
    )
    one.set_defaults(fn=compare)
    two = sub.add_parser("startup")
    two.add_argument("--repeats", type=int, default=15)
    two.set_defaults(fn=startup)
    three = sub.add_parser("imports")
    three.add_argument("--repeats", type=int, default=7)
    three.set_defaults(fn=imports)
    four = sub.add_parser("scaling")
    four.add_argument("--model", default="digits_cnn.onnx")
    four.add_argument("--samples", nargs="+", type=int, default=[16, 256, 4096])
    four.add_argument("--batch-size", type=int, default=16)
    four.add_argument("--repeats", type=int, default=3)
    four.add_argument("--extra", nargs="*", default=[])
    four.set_defaults(fn=scaling)
    args = parser.parse_args()
    import torch

    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, torch "
        f"{torch.__version__} ({torch.get_num_threads()} threads by default)"
    )
    args.fn(args)


if __name__ == "__main__":
    main()
