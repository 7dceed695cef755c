"""The Python API: load a model, check its forward pass, run the LRP audit over an input set.

import lrpaudit
from lrpaudit.rules import Rule
result = lrpaudit.audit("model.onnx", Rule("epsilon"), random=8)
print(result.verdict, result.layer_rows()[0])
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .audit import UNEXPLAINED_BOUND, LayerAudit, SampleAudit, Tolerance, sample_verdict, samples_from
from .errors import InputError
from .fidelity import FidelityResult, check_fidelity
from .forward import cast_params
from .frontends import load_model
from .inputs import Batch, array_batches, file_batches, random_batches
from .inputs.limits import check_batch_memory
from .inputs.shapes import check_shape_names, fixed_batch
from .ir import Graph
from .passes import strip_output_softmax
from .propagate import RuleChoice, propagate, resolve_rules
from .verify import RuleCheck, verify_rules

__all__ = ["AuditResult", "audit", "inspect_model", "load_model"]

DTYPES = {"float64": torch.float64, "float32": torch.float32}


@dataclass
class AuditResult:
    """Everything one audit of one model with one configuration found."""

    model_path: str
    model_format: str
    model_sha256: str
    dtype: str
    device: str
    tolerance: Tolerance
    layers: list[LayerAudit]
    samples: list[SampleAudit]
    fidelity: FidelityResult | None
    notes: list[str] = field(default_factory=list)
    rule_checks: list[RuleCheck] | None = None
    relevance: dict[str, np.ndarray] | None = None
    config: dict = field(default_factory=dict)
    elapsed_s: float | None = None  # wall-clock seconds of the audit (load excluded); JUnit/JSON timings

    @property
    def bound(self) -> float:
        return UNEXPLAINED_BOUND[self.dtype]

    def layer_rows(self) -> list[dict]:
        """One row per node, aggregated over samples (the worst sample's figures)."""
        return [layer.aggregate_row(self.tolerance.gate, self.bound) for layer in self.layers]

    def sample_layer_rows(self, position: int) -> list[dict]:
        """The per-node rows of the ``position``-th sample."""
        return [layer.sample_row(position, self.tolerance.gate, self.bound) for layer in self.layers]

    @property
    def verdict(self) -> str:
        failed = any(row["verdict"] != "pass" for row in self.layer_rows())
        failed = failed or any(s.verdict != "pass" for s in self.samples)
        return "fail" if failed else "pass"


def _batches(model, inputs, random: int | None, seed: int, batch_size: int, input_shapes) -> Iterable[Batch]:
    declared = model.declared_shapes()
    check_shape_names(input_shapes, declared, model.path)
    fixed = fixed_batch(declared)
    if fixed is not None:
        batch_size = fixed  # the model only accepts this many samples at a time
        if inputs is None and random and random % fixed:
            raise InputError(
                f"{model.path}: the model takes batches of exactly {fixed}; --random {random} is not a multiple"
            )
    if inputs is None:
        if not random:
            raise InputError("no inputs: give input files or a number of random samples")
        return random_batches(declared, random, batch_size, seed, input_shapes)
    if isinstance(inputs, (str, Path)):
        return file_batches(inputs, declared, batch_size)
    if isinstance(inputs, np.ndarray):
        inputs = {next(iter(declared)): inputs}
    if isinstance(inputs, dict):
        return array_batches(inputs, declared, batch_size)
    return inputs


def audit(
    model,
    rules: RuleChoice,
    inputs=None,
    *,
    random: int | None = None,
    seed: int = 0,
    batch_size: int = 16,
    init: str = "logit",
    target=None,
    dtype: str = "float64",
    device: str = "cpu",
    tolerance: Tolerance | None = None,
    explain: str = "logits",
    check_forward: bool = True,
    verify: bool = False,
    keep_relevance: bool = False,
    rule_sources: dict[str, str] | None = None,
    input_shapes: dict[str, tuple[int, ...]] | None = None,
    on_batch: Callable[[int, int], None] | None = None,
    allow_empty: bool = False,
) -> AuditResult:
    """Audit LRP conservation of ``model`` (path or loaded model) under ``rules`` on an input set.

    Inputs stream in batches of ``batch_size``: memory holds one batch's activations. The forward pass is proven
    against the model's runtime on every batch before relevance is propagated.

    An audit that checks nothing is an InputError unless ``allow_empty``: no samples, a graph with no nodes, or
    samples whose output relevance is all exactly zero (nothing to explain; with some such samples the audit
    runs and a note names them).
    """
    model = load_model(model, input_shapes) if isinstance(model, (str, Path)) else model
    _check_device(device)
    started = time.perf_counter()
    tolerance = tolerance or Tolerance()
    torch_dtype = DTYPES[dtype]
    layers: dict[str, LayerAudit] = {}
    samples: list[SampleAudit] = []
    fidelity: FidelityResult | None = None
    notes: list[str] = []
    checks: list[RuleCheck] | None = None
    saved: dict[str, list[np.ndarray]] = {}
    prepared: dict[tuple, tuple] = {}  # per input shape: (graph, rules, params in the propagation dtype)
    for batch in _batches(model, inputs, random, seed, batch_size, input_shapes):
        key = tuple(sorted(_shapes(batch).items()))
        if key not in prepared:
            graph = _graph_for(model, batch, explain)
            if not graph.nodes and not allow_empty:
                raise InputError(
                    f"{model.path}: nothing to audit: the graph has no layers (its output is its input); "
                    "pass --allow-empty to accept"
                )
            check_batch_memory(graph, torch_dtype.itemsize, str(model.path))
            prepared[key] = (graph, resolve_rules(graph, rules), cast_params(graph, torch_dtype, device))
        graph, chosen, params = prepared[key]
        if check_forward:
            fidelity = _worse(fidelity, check_fidelity(model, model.graph(_shapes(batch)), _feeds(batch)))
        feeds = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in batch.arrays.items()}
        try:
            result = propagate(graph, feeds, chosen, init, target, torch_dtype, device, params=params)
        except InputError as exc:  # e.g. a target out of range: name the model it does not fit
            raise InputError(f"{model.path}: {exc}") from exc
        notes = result.notes
        for node, record in zip(graph.nodes, result.records):
            if node.id not in layers:
                source = (rule_sources or {}).get(node.id, "default" if node.op not in _LINEAR else "rules")
                layers[node.id] = LayerAudit(
                    node.id, node.op, record.rule, source, record.bias_mode, tolerance.for_node(node.id)
                )
            layers[node.id].add(record)
        batch_samples = samples_from(result, batch.sources, batch.first_index)
        for position, sample in enumerate(batch_samples):
            offset = len(samples) + position
            verdicts = [
                layer.sample_row(offset, tolerance.gate, UNEXPLAINED_BOUND[dtype])["verdict"]
                for layer in layers.values()
            ]
            sample.verdict = sample_verdict(sample, verdicts, tolerance)
        samples.extend(batch_samples)
        if keep_relevance:
            for name, tensor in result.input_relevance.items():
                saved.setdefault(name, []).append(tensor.detach().cpu().numpy())
            saved.setdefault("targets", []).append(result.targets.cpu().numpy())
            saved.setdefault("output_relevance", []).append(result.output_relevance.detach().cpu().numpy())
        if verify and checks is None:
            checks = verify_rules(graph, feeds, chosen, init, target, torch_dtype)
        if on_batch:
            on_batch(len(samples), batch.size)
    notes = notes + _nothing_to_explain(model, samples, inputs, allow_empty)
    if samples and not layers:
        notes.append("the audit checked nothing: the graph has no layers (its output is its input)")
    return AuditResult(
        model_path=str(model.path),
        model_format=model.format,
        model_sha256=model.sha256(),
        dtype=dtype,
        device=device,
        tolerance=tolerance,
        layers=list(layers.values()),
        samples=samples,
        fidelity=fidelity,
        notes=notes,
        rule_checks=checks,
        relevance={k: np.concatenate(v) for k, v in saved.items()} if keep_relevance else None,
        elapsed_s=time.perf_counter() - started,
    )


_LINEAR = ("linear", "conv", "conv_transpose", "affine")


def _check_device(device: str) -> None:
    try:
        kind = torch.device(device).type
    except (RuntimeError, TypeError) as exc:
        raise InputError(f"--device {device!r}: not a device (cpu, cuda or cuda:N)") from exc
    if kind == "cuda" and not torch.cuda.is_available():
        raise InputError(f"--device {device}: no CUDA device is available here")
    if kind not in ("cpu", "cuda"):
        raise InputError(f"--device {device!r}: lrpaudit runs on cpu or cuda")


def _nothing_to_explain(model, samples: list[SampleAudit], inputs, allow_empty: bool) -> list[str]:
    """Notes on samples with no output relevance; an InputError if the audit checked nothing at all.

    Decision: a sample whose output relevance is exactly zero (``init: logit`` and a target logit of exactly 0)
    has nothing to explain. It is never divided by zero: its ``rel_error`` is the absolute leak (so relevance
    created from nothing still fails), it is flagged ``nothing_to_explain`` in the JSON report, and a note lists
    it. If no sample has anything to explain, the audit checked nothing.
    """
    where = f" {inputs}" if isinstance(inputs, (str, Path)) else ""
    if not samples:
        if allow_empty:
            return ["the audit checked nothing: no samples"]
        raise InputError(
            f"{model.path}: the audit checked nothing: the inputs{where} hold no samples; "
            "pass --allow-empty to accept an empty audit"
        )
    empty = [sample.index for sample in samples if sample.output_scale == 0]
    if not empty:
        return []
    if len(empty) == len(samples) and not allow_empty:
        raise InputError(
            f"{model.path}: the audit checked nothing: the explained output is exactly 0 for all {len(samples)} "
            "samples (no relevance to explain); use init: one or another --target, or pass --allow-empty"
        )
    shown = ", ".join(map(str, empty[:5])) + (", ..." if len(empty) > 5 else "")
    return [
        f"{len(empty)} of {len(samples)} samples have nothing to explain (the explained output is exactly 0): "
        f"their checks are vacuous (samples {shown})"
    ]


def _shapes(batch: Batch) -> dict[str, tuple[int, ...]]:
    return {name: tuple(a.shape) for name, a in batch.arrays.items()}


def _feeds(batch: Batch) -> dict[str, np.ndarray]:
    return {name: np.ascontiguousarray(a) for name, a in batch.arrays.items()}


def _graph_for(model, batch: Batch, explain: str) -> Graph:
    graph = model.graph(_shapes(batch))
    return strip_output_softmax(graph) if explain == "logits" else graph


def _worse(old: FidelityResult | None, new: FidelityResult) -> FidelityResult:
    return new if old is None or new.max_rel_diff >= old.max_rel_diff else old


def inspect_model(
    path: str | Path,
    random: int = 1,
    seed: int = 0,
    intermediates: bool = True,
    input_shapes: dict[str, tuple[int, ...]] | None = None,
) -> tuple[object, Graph, FidelityResult]:
    """Load a model, build the canonical IR for ``random`` seeded samples and check it against the runtime."""
    model = load_model(path, input_shapes)
    declared = model.declared_shapes()
    count = fixed_batch(declared) or random
    batch = next(iter(random_batches(declared, count, count, seed, input_shapes)))
    graph = model.graph(_shapes(batch))
    check_batch_memory(graph, 4, str(model.path))
    result = check_fidelity(model, graph, _feeds(batch), dtype="float32", intermediates=intermediates)
    return model, graph, result
