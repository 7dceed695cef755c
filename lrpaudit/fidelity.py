"""Proof that the IR forward computes the same function as the real runtime (onnxruntime or TorchScript)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from .errors import FidelityError
from .forward import embed_inputs, run_forward
from .ir import Graph
from .verdicts import relative

# Max |IR - reference| relative to the reference output's scale (max |ref|) that counts as the same function, by
# the dtype the IR runs in.
DEFAULT_RTOL = {"float32": 1e-4, "float64": 1e-10}
# The floor set by the file's own precision: the runtime rounds every op of a float16 (bfloat16) model to 11 (8)
# significant bits (unit roundoff 4.9e-4, 3.9e-3), far above the IR's float32/float64 rounding. The floors are
# ~20 and ~13 unit roundoffs: measured deviations of float16 torchvision CNNs are 2e-4..4e-4 of the scale, while
# a mistranslated op deviates by a sizeable fraction of it.
FILE_PRECISION_RTOL = {"float16": 1e-2, "bfloat16": 5e-2}


def file_precision_rtol(graph: Graph) -> float:
    """The tolerance floor of the least precise graph input's dtype (0 for float32/float64 files)."""
    return max((FILE_PRECISION_RTOL.get(dtype, 0.0) for dtype in graph.input_dtypes.values()), default=0.0)


@dataclass
class TensorDiff:
    name: str
    node: str
    max_abs_diff: float
    scale: float

    @property
    def rel_diff(self) -> float:
        return relative(self.max_abs_diff, self.scale)


@dataclass
class FidelityResult:
    reference: str
    dtype: str
    max_abs_diff: float
    max_rel_diff: float
    tolerance: float
    passed: bool
    first_diverging: str | None = None
    tensors: list[TensorDiff] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {
            "reference": self.reference,
            "dtype": self.dtype,
            "max_abs_diff": self.max_abs_diff,
            "max_rel_diff": self.max_rel_diff,
            "tolerance": self.tolerance,
            "passed": self.passed,
            "first_diverging": self.first_diverging,
        }


def compare(name: str, node: str, ours: torch.Tensor, ref: np.ndarray) -> TensorDiff:
    ours_np = ours.detach().cpu().numpy().astype(np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    if ours_np.shape != ref.shape:
        return TensorDiff(name, node, float("inf"), 1.0)
    finite = np.isfinite(ref)
    if not np.array_equal(np.isfinite(ours_np), finite) or not np.array_equal(
        ours_np[~finite], ref[~finite], equal_nan=True
    ):
        return TensorDiff(name, node, float("inf"), 1.0)  # NaN/Inf where the runtime has none, or vice versa
    # Both runtimes agree on every NaN/Inf (e.g. a NaN weight): the finite entries are compared as usual.
    diff = np.abs(ours_np[finite] - ref[finite])
    max_diff = float(diff.max()) if diff.size else 0.0
    scale = float(np.abs(ref[finite]).max()) if finite.any() else 0.0
    return TensorDiff(name, node, max_diff, scale)


def check_fidelity(
    model,
    graph: Graph,
    feeds: dict[str, np.ndarray],
    dtype: str = "float32",
    rtol: float | None = None,
    intermediates: bool = False,
    raise_on_failure: bool = True,
    values: dict[str, torch.Tensor] | None = None,
) -> FidelityResult:
    """Run the IR forward and the model's own runtime on the same inputs and compare.

    ``feeds`` are the model's inputs (token ids as ids: the IR gets their embeddings, ``forward.embed_inputs``).
    ``values``: the IR forward of ``graph`` on these feeds in ``dtype``, if the caller already ran it (the audit's
    own forward); else it is run here.

    Final outputs are always compared; with ``intermediates`` every IR value that is also a tensor of the source
    model is compared too, and the first one beyond tolerance (in graph order) is named. The default tolerance
    follows the IR's dtype and the file's precision (a float16 model is compared to 1e-2 of the scale).
    """
    rtol = max(DEFAULT_RTOL[dtype], file_precision_rtol(graph)) if rtol is None else rtol
    torch_dtype = torch.float32 if dtype == "float32" else torch.float64
    tensors = {k: torch.from_numpy(np.asarray(v)) for k, v in feeds.items()}
    if values is None:
        values = run_forward(graph, embed_inputs(graph, tensors, torch_dtype), dtype=torch_dtype)
    output_names = graph.source.get("output_names", graph.outputs)
    tensor_names: list[tuple[str, str, str]] = []  # (ir value, source name, node id)
    if intermediates:
        for node in graph.nodes:
            source_name = node.origin.get("onnx_output") or node.origin.get("source_output")
            if source_name == node.output:
                tensor_names.append((node.output, source_name, node.id))
    producers = graph.producers()
    for ir_name, source_name in zip(graph.outputs, output_names):
        node_id = producers[ir_name].id if ir_name in producers else ir_name
        if (ir_name, source_name, node_id) not in tensor_names:
            tensor_names.append((ir_name, source_name, node_id))
    reference = model.reference_outputs(feeds, [s for _, s, _ in tensor_names] if intermediates else None)
    diffs = [
        compare(src, node_id, values[ir], reference[src])
        for ir, src, node_id in tensor_names
        if src in reference
    ]
    final = [d for d in diffs if d.name in output_names]
    max_abs = max((d.max_abs_diff for d in final), default=0.0)
    max_rel = max((d.rel_diff for d in final), default=0.0)
    first = next((d for d in diffs if d.rel_diff > rtol), None)
    result = FidelityResult(
        reference=model.reference_name if hasattr(model, "reference_name") else "onnxruntime",
        dtype=dtype,
        max_abs_diff=max_abs,
        max_rel_diff=max_rel,
        tolerance=rtol,
        passed=first is None,
        first_diverging=first.node if first else None,
        tensors=diffs,
    )
    if first is not None and raise_on_failure:
        raise FidelityError(
            f"{model.path}: the IR forward differs from {result.reference} at node {first.node!r} "
            f"(tensor {first.name!r}): max abs diff {first.max_abs_diff:.3g} = {first.rel_diff:.3g} of scale "
            f"> tolerance {rtol:g}{_precision_note(graph, rtol)}; refusing to audit a different function"
        )
    return result


def _precision_note(graph: Graph, rtol: float) -> str:
    floor = file_precision_rtol(graph)
    if floor and rtol == floor:
        worst = min(graph.input_dtypes.values(), key=lambda d: -FILE_PRECISION_RTOL.get(d, 0.0))
        return f" (set by the file's {worst} precision)"
    return ""


def check_batch(model, shapes, audited, feeds_np, feeds, dtype, device):
    """The forward check of one audited batch: (its FidelityResult, the activations it computed or None).

    The check runs the model's graph for these shapes in float32. ``audited`` (``.graph``, ``.params``: what the
    audit runs) on that same graph in float32 (no softmax stripped) runs the very same forward, so its
    activations are computed once (``feeds``: the IR's inputs, on the audit's params and device), checked, and
    handed to the propagation. ``feeds_np``: the model's own inputs, for its runtime.
    """
    reference = model.graph(shapes)
    values = None
    if audited.graph is reference and dtype == torch.float32:
        values = run_forward(reference, feeds, dtype, device, audited.params)
    return check_fidelity(model, reference, feeds_np, values=values), values


def worse_fidelity(old: FidelityResult | None, new: FidelityResult | None) -> FidelityResult | None:
    """The fidelity result with the larger deviation (the one reports show).

    Ordered by (max_rel_diff, max_abs_diff), ties to ``new``: an order-free choice, so the shards of an audit,
    merged in any order, show the result the unsharded audit shows.
    """
    if new is None:
        return old
    if old is None:
        return new
    return new if (new.max_rel_diff, new.max_abs_diff) >= (old.max_rel_diff, old.max_abs_diff) else old


# ---------------------------------------------------------------- which batches are compared

# ``sample`` (the default): the first batch, the first batch of every other batch size (a graph is built per input
# shape, so each graph is proven), and a seeded one in SAMPLE_ONE_IN of the other batches; ``all``: every batch;
# ``off``: none (the report says so).
FIDELITY_MODES = ("sample", "all", "off")
SAMPLE_ONE_IN = 8
_STREAM = 0xF1DE  # keeps the fidelity draws apart from the seeded input draws (inputs.sample_generator)


def compares_batch(mode: str, seed: int, number: int, new_size: bool) -> bool:
    """Whether batch ``number`` (from 0, in the audit's order) is compared with the runtime.

    A function of (mode, seed, batch number, whether its size is new) alone, so that each shard of a sharded audit
    compares exactly the batches the unsharded audit compares.
    """
    if mode == "off":
        return False
    if mode == "all" or number == 0 or new_size:
        return True
    return int(np.random.default_rng([seed, number, _STREAM]).integers(SAMPLE_ONE_IN)) == 0


@dataclass(frozen=True)
class FidelityCoverage:
    """What the forward check compared: its mode and seed, the batches (numbered from 0 in the audit's order)
    and the number of samples they hold."""

    mode: str
    seed: int
    batches: tuple[int, ...] = ()
    samples: int = 0

    def with_batch(self, number: int, size: int) -> FidelityCoverage:
        return FidelityCoverage(self.mode, self.seed, (*self.batches, number), self.samples + size)

    def merged(self, other: FidelityCoverage) -> FidelityCoverage:
        """The coverage of two shards of one audit together (disjoint batches)."""
        batches = tuple(sorted({*self.batches, *other.batches}))
        return FidelityCoverage(self.mode, self.seed, batches, self.samples + other.samples)

    def as_dict(self) -> dict:
        return {"mode": self.mode, "seed": self.seed, "batches": list(self.batches), "samples": self.samples}
