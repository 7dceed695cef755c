"""Side-by-side timing of lrpaudit against a plain forward/backward and Zennit, in one process, same inputs.

    python benchmarks/bench.py                       # the default grid (see --help)
    python benchmarks/bench.py --models resnet18 --batches 1 8 --dtypes float32 --repeats 5

Measured per (model, batch, dtype), medians over ``--repeats`` interleaved runs after one warm-up:
  (a) forward only                       (b) forward + plain backward (the floor for LRP)
  (c) Zennit attribution: EpsilonPlusFlat (with the ResNet/VGG canonizer) and plain Epsilon
  (d) lrpaudit full audit: ``lrpaudit.audit`` with the same composite (propagation, per-node accounting,
      aggregation and verdicts; the onnxruntime fidelity check is excluded, it is a one-off per batch)
  (e) lrpaudit propagation alone: ``propagate`` (the engine with its per-node records)
Ratios printed: (d)/(b), (d)/(c), (e)/(b). Peak memory (``--memory``): each method runs once in a fresh process
after the same set-up; the growth of its peak RSS (VmHWM, reset through /proc/self/clear_refs) over the RSS
before the run. Also the load time of a 100+ MB ONNX file (VGG16's weights). Not part of the test run: timings
never go in tests.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import io
import json
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch

warnings.filterwarnings("ignore")


def _status(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    return 0


def peak_growth(fn) -> int:
    """Peak RSS growth (bytes) of one first run in this process: VmHWM reset, then compared with the RSS before.

    Run in a fresh process per method (``--child``), so that no allocator cache from an earlier method hides it.
    """
    gc.collect()
    base = _status("VmRSS")
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")
    fn()
    return max(_status("VmHWM") - base, 0)


def build(name: str) -> torch.nn.Module:
    import torchvision

    torch.manual_seed(0)
    return getattr(torchvision.models, name)(weights=None).eval()


def export(model: torch.nn.Module, example: torch.Tensor, path: Path) -> None:
    with contextlib.redirect_stdout(io.StringIO()):
        torch.onnx.export(
            model,
            (example,),
            str(path),
            dynamo=False,
            opset_version=17,
            input_names=["x"],
            dynamic_axes={"x": {0: "b"}},
        )


def zennit_composite(name: str, kind: str):
    from zennit.composites import EpsilonPlusFlat, LayerMapComposite
    from zennit.rules import Epsilon, Norm, Pass
    from zennit.torchvision import ResNetCanonizer, VGGCanonizer
    from zennit.types import Activation, AvgPool, Linear

    canonizers = [ResNetCanonizer()] if name.startswith("resnet") else [VGGCanonizer()]
    if kind == "epsilon_plus_flat":
        return EpsilonPlusFlat(canonizers=canonizers)
    return LayerMapComposite(
        layer_map=[(Activation, Pass()), (AvgPool, Norm()), (Linear, Epsilon())], canonizers=canonizers
    )


def lrpaudit_rules(graph, kind: str):
    from lrpaudit.rules import Rule

    linear_types = [n for n in graph.nodes if n.op in ("linear", "conv", "conv_transpose", "affine")]
    first = linear_types[0].id

    def choose(node):
        if kind == "epsilon":
            return Rule("epsilon") if node.op in ("linear", "conv", "conv_transpose", "affine") else None
        if node.id == first:
            return Rule("flat")
        if node.op in ("conv", "conv_transpose"):
            return Rule("zplus")
        if node.op in ("linear", "affine"):
            return Rule("epsilon")
        return None

    return choose


def methods(name: str, batch: int, dtype: str, workdir: Path) -> dict:
    """The five measured callables for one case, all on the same model weights and inputs."""
    from zennit.attribution import Gradient

    import lrpaudit
    from lrpaudit.frontends import load_model
    from lrpaudit.propagate import propagate

    torch_dtype = {"float32": torch.float32, "float64": torch.float64}[dtype]
    model = build(name)
    x = torch.randn(batch, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    onnx_path = workdir / f"{name}.onnx"
    if not onnx_path.exists():
        export(model, x[:1], onnx_path)
    model = model.to(torch_dtype)
    xt = x.to(torch_dtype)
    loaded = load_model(onnx_path)
    graph = loaded.graph({"x": tuple(x.shape)})

    def forward():
        with torch.no_grad():
            model(xt)

    def forward_backward():
        inp = xt.clone().requires_grad_(True)
        out = model(inp)
        out.max(dim=1).values.sum().backward()

    table = {"forward": forward, "fwd_bwd": forward_backward}
    for kind in ("epsilon_plus_flat", "epsilon"):

        def zennit_run(kind=kind):
            composite = zennit_composite(name, kind)
            inp = xt.clone().requires_grad_(True)
            with Gradient(model=model, composite=composite) as attributor:
                out = model(inp).detach()
                onehot = torch.zeros_like(out)
                onehot[torch.arange(batch), out.argmax(1)] = 1.0
                attributor(inp, onehot)

        rules = lrpaudit_rules(graph, kind)

        def full_audit(rules=rules):
            lrpaudit.audit(loaded, rules, {"x": x.numpy()}, batch_size=batch, dtype=dtype, fidelity="off")

        def engine_only(rules=rules):
            propagate(graph, {"x": xt}, rules, dtype=torch_dtype)

        table[f"zennit_{kind}"] = zennit_run
        table[f"audit_{kind}"] = full_audit
        table[f"engine_{kind}"] = engine_only
    return table


def child_memory(name: str, batch: int, dtype: str, method: str, workdir: Path) -> None:
    """Entry point of a ``--child`` process: print the peak RSS growth of one method in MB."""
    fn = methods(name, batch, dtype, workdir)[method]
    print(json.dumps({"peak_mb": peak_growth(fn) / 2**20}))


def memory_of(name: str, batch: int, dtype: str, method: str, workdir: Path) -> float:
    command = [sys.executable, __file__, "--child", name, str(batch), dtype, method, str(workdir)]
    out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])["peak_mb"]


def measure_interleaved(table: dict, repeats: int) -> dict[str, float]:
    """Median seconds per method, with the methods' runs interleaved round-robin after one warm-up each.

    Interleaving spreads any transient load on a shared machine over every method alike, so the ratios printed
    side by side stay fair even when the absolute times wobble.
    """
    for fn in table.values():
        fn()
    samples: dict[str, list[float]] = {key: [] for key in table}
    for _ in range(repeats):
        for key, fn in table.items():
            start = time.perf_counter()
            fn()
            samples[key].append(time.perf_counter() - start)
    return {key: statistics.median(values) for key, values in samples.items()}


def run_case(name: str, batch: int, dtype: str, repeats: int, workdir: Path, memory: bool) -> list[dict]:
    table = methods(name, batch, dtype, workdir)
    times = measure_interleaved(table, repeats)
    mem = {key: memory_of(name, batch, dtype, key, workdir) for key in table} if memory else {}
    rows = []
    for kind in ("epsilon_plus_flat", "epsilon"):
        b, c, d, e = (
            times["fwd_bwd"],
            times[f"zennit_{kind}"],
            times[f"audit_{kind}"],
            times[f"engine_{kind}"],
        )
        row = {
            "model": name,
            "batch": batch,
            "dtype": dtype,
            "composite": kind,
            "forward_s": times["forward"],
            "fwd_bwd_s": b,
            "zennit_s": c,
            "audit_s": d,
            "engine_s": e,
            "d/b": d / b,
            "d/c": d / c,
            "e/b": e / b,
            "mem_fwd_bwd_mb": mem.get("fwd_bwd", float("nan")),
            "mem_zennit_mb": mem.get(f"zennit_{kind}", float("nan")),
            "mem_audit_mb": mem.get(f"audit_{kind}", float("nan")),
        }
        row["mem_ratio_audit_zennit"] = row["mem_audit_mb"] / row["mem_zennit_mb"] if memory else float("nan")
        rows.append(row)
        print_row(row)
    return rows


HEADER = (
    "| model | batch | dtype | composite | fwd s | fwd+bwd s | zennit s | audit s | engine s | (d)/(b) | (d)/(c) "
    "| (e)/(b) | peak MB fwd+bwd / zennit / audit | mem audit/zennit |"
)


def print_row(row: dict) -> None:
    print(
        f"| {row['model']} | {row['batch']} | {row['dtype']} | {row['composite']} | {row['forward_s']:.3f} | "
        f"{row['fwd_bwd_s']:.3f} | {row['zennit_s']:.3f} | {row['audit_s']:.3f} | {row['engine_s']:.3f} | "
        f"{row['d/b']:.2f} | {row['d/c']:.2f} | {row['e/b']:.2f} | {row['mem_fwd_bwd_mb']:.0f} / "
        f"{row['mem_zennit_mb']:.0f} / {row['mem_audit_mb']:.0f} | {row['mem_ratio_audit_zennit']:.2f} |",
        flush=True,
    )


def load_time(workdir: Path) -> None:
    """Load time of VGG16 as ONNX (~550 MB of float32 weights): file read + check + IR build."""
    from lrpaudit.frontends import load_model

    path = workdir / "vgg16.onnx"
    network = build("vgg16")
    if not path.exists():
        export(network, torch.randn(1, 3, 224, 224), path)
    start = time.perf_counter()
    model = load_model(path)
    read = time.perf_counter() - start
    model.graph({"x": (1, 3, 224, 224)})
    total = time.perf_counter() - start
    size = path.stat().st_size / 2**20
    print(f"\nload of {path.name} ({size:.0f} MB): read+check {read:.2f} s, read+check+IR {total:.2f} s")
    # the target: building the IR under 0.5x one float32 forward at batch 1 (torch's, warm)
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        network(x)
        forwards = []
        for _ in range(5):
            begin = time.perf_counter()
            network(x)
            forwards.append(time.perf_counter() - begin)
    # each build timed on its own: the first read (cold page cache) is no baseline for the later ones
    builds = []
    for _ in range(3):
        model = load_model(path)
        begin = time.perf_counter()
        model.graph({"x": (1, 3, 224, 224)})
        builds.append(time.perf_counter() - begin)
    forward, ir_build = statistics.median(forwards), statistics.median(builds)
    print(
        f"IR build of {path.name} (read+check excluded) {ir_build:.2f} s, float32 forward at batch 1 "
        f"{forward:.3f} s: {ir_build / forward:.1f}x (target < 0.5x)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["resnet18", "vgg16", "resnet50"])
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 8])
    parser.add_argument("--dtypes", nargs="+", default=["float32", "float64"])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip-load", action="store_true")
    parser.add_argument(
        "--memory", action="store_true", help="also measure peak memory (one process per method)"
    )
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--child", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.child:
        name, batch, dtype, method, workdir = args.child
        child_memory(name, int(batch), dtype, method, Path(workdir))
        return
    print(
        f"machine: {platform.processor() or platform.machine()}, torch {torch.__version__}, threads {torch.get_num_threads()}"
    )
    print(HEADER)
    print("|" + "---|" * 15)
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        for name in args.models:
            for dtype in args.dtypes:
                for batch in args.batches:
                    run_case(name, batch, dtype, args.repeats, workdir, args.memory)
        if not args.skip_load:
            load_time(workdir)


if __name__ == "__main__":
    main()
