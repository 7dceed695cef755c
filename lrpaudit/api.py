"""The Python API and the only orchestration: an :class:`AuditRequest` in, an :class:`AuditResult` out.

    import lrpaudit
    from lrpaudit import Rule
    result = lrpaudit.audit("model.onnx", Rule("epsilon"), random=8)        # rules given in code
    result = lrpaudit.run_audit(lrpaudit.AuditRequest("model.onnx", preset="epsilon-plus-flat", random=8))
    print(result.verdict, result.layer_rows()[0]["rel_error"])

An audit: resolve the config (file, preset or rules given in code, then the request's overrides), load the model,
and for each input shape build the canonical IR, strip a trailing softmax (``explain: logits``), assign a rule to
every node and make the tolerance; then stream the inputs batch by batch through the forward check and the LRP
pass, and finalize the figures and verdicts once. The command line builds a request and calls :func:`run_audit`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from .config import Config, load_config
from .errors import ConfigError, InputError
from .fidelity import (
    FIDELITY_MODES,
    FidelityCoverage,
    FidelityResult,
    check_batch,
    compares_batch,
    worse_fidelity,
)
from .forward import cast_params, embed_inputs, token_relevance
from .frontends import load_model
from .inputs import Batch, Pending, first_shapes, peek_shapes, plan_arrays, plan_files, plan_random
from .inputs.limits import check_batch_memory
from .inputs.shapes import check_shape_names, fixed_batch, name_unnamed
from .inputs.sharding import Shard
from .ir import Graph
from .passes import strip_output_softmax
from .propagate import propagate
from .results import AuditAccumulator, AuditResult, ShardRecord, check_not_vacuous, finalize, sample_notes
from .rules.assign import Assignment, RuleChoice, assign
from .verdicts import Tolerance
from .verify import RuleCheck, verify_rules

__all__ = ["AuditRequest", "AuditResult", "audit", "load_model", "run_audit"]

DTYPES = {"float64": torch.float64, "float32": torch.float32}
DEFAULT_PRESET = "epsilon-plus-flat"


@dataclass(frozen=True)
class AuditRequest:
    """One audit of one model under one configuration, on one input set.

    Rules come from exactly one of ``config`` (a config file, or an already loaded :class:`Config`), ``preset``
    or ``rules`` (a Rule, a mapping of node ids to rules, or a function of the node); with none of them the
    ``epsilon-plus-flat`` preset is used. ``dtype``, ``target``, ``gate``, ``init`` and ``explain`` override the
    config's settings when given (command-line flags); ``tolerance`` replaces its tolerance entirely.
    Inputs: ``inputs`` (a .npy/.npz file or folder, an array, arrays by input name, or batches) or ``random``
    seeded samples. ``input_shapes`` fixes dynamic dimensions (``{"*": shape}`` means the first input).
    ``trust_code`` loads a TorchScript archive even when its code defines ``__setstate__`` or calls ops with
    side effects (``--trust-code``).
    ``shard`` audits only that shard's batches; whether it checked anything is then decided when the shards are
    merged. ``fidelity`` says which batches the forward check compares with the model's runtime: ``sample`` (the
    first batch, the first of each other batch size, and a seeded one in 8 of the rest, seeded by ``seed``),
    ``all`` or ``off`` (:func:`lrpaudit.fidelity.compares_batch`); the result records what was compared.
    """

    model: str | Path | object
    config: str | Path | Config | None = None
    preset: str | None = None
    rules: RuleChoice | None = None
    inputs: object = None
    random: int | None = None
    seed: int = 0
    batch_size: int = 16
    input_shapes: Mapping[str, tuple[int, ...]] | None = None
    dtype: str | None = None
    target: str | int | None = None
    gate: str | None = None
    init: str | None = None
    explain: str | None = None
    tolerance: Tolerance | None = None
    device: str = "cpu"
    fidelity: str = "sample"  # which batches the forward check compares: sample | all | off
    verify: bool = False
    keep_relevance: bool = False
    keep_inputs: bool = False  # keep the input arrays too (heatmap overlays)
    layer_rtol: float | None = None
    end_to_end_rtol: float | None = None
    allow_empty: bool = False
    trust_code: bool = False  # load a TorchScript archive whose code fails the check (README: Security)
    shard: Shard | None = None
    on_batch: Callable[[int, int], None] | None = field(default=None, compare=False)
    on_warning: Callable[[str], None] | None = field(default=None, compare=False)

    def for_model(self, model) -> AuditRequest:
        """The same audit of another model (``check MODEL...``)."""
        return replace(self, model=model)


@dataclass(frozen=True)
class Prepared:
    """What one input shape needs: the canonical graph, a rule per node, the tolerance, the cast params."""

    graph: Graph
    assignment: Assignment
    tolerance: Tolerance
    params: dict


def audit(model, rules: RuleChoice | Config, inputs=None, **options) -> AuditResult:
    """Audit LRP conservation of ``model`` (a path or a loaded model) under ``rules`` on an input set.

    ``rules`` is a Rule, a mapping of node ids to rules, a function of the node, or a loaded config; ``options``
    are the other fields of :class:`AuditRequest` (``random``, ``batch_size``, ``tolerance``, ...).
    """
    if isinstance(rules, Config):
        return run_audit(AuditRequest(model, config=rules, inputs=inputs, **options))
    return run_audit(AuditRequest(model, rules=rules, inputs=inputs, **options))


def resolve_config(request: AuditRequest) -> Config:
    """The request's configuration: the file, preset or defaults, with the request's settings on top."""
    given = [request.config is not None, request.preset is not None, request.rules is not None]
    if sum(given) > 1:
        raise ConfigError("give one of a config file, a preset or rules, not several")
    if isinstance(request.config, Config):
        config = request.config
    elif request.rules is not None:
        config = Config()
    else:
        preset = request.preset if request.config is not None or request.preset else DEFAULT_PRESET
        config = load_config(request.config, None if request.config is not None else preset)
    # the target is not a config override: an explicit index is checked against the model's output instead
    return config.with_overrides(
        dtype=request.dtype,
        gate=request.gate,
        init=request.init,
        explain=request.explain,
        layer_rtol=request.layer_rtol,
        end_to_end_rtol=request.end_to_end_rtol,
    )


def open_model(request: AuditRequest):
    """The loaded model and the request's input shapes keyed by input name."""
    model = request.model
    if isinstance(model, (str, Path)):
        shapes = dict(request.input_shapes) if request.input_shapes else None
        model = load_model(model, shapes, trust_code=request.trust_code)
    if (
        request.input_shapes is None
        and isinstance(request.inputs, (str, Path))
        and hasattr(model, "set_input_shapes")
    ):
        try:
            model.declared_shapes()
        except InputError:  # a scripted archive records no example input: take the shape from the inputs
            model.set_input_shapes(peek_shapes(request.inputs, model.input_names))
    return model, name_unnamed(dict(request.input_shapes or {}) or None, model.input_names)


def prepare(model, config: Config, rules: RuleChoice | None, request: AuditRequest, shapes) -> Prepared:
    """The graph for one input shape with its rules, tolerance and params (once per shape)."""
    graph = model.graph(shapes)
    if config.explain == "logits":
        stripped = strip_output_softmax(graph)
        # nothing stripped: the model's own graph, so that the forward check can share the audit's forward
        graph = stripped if stripped.outputs != graph.outputs else graph
    if not graph.nodes and not request.allow_empty:
        raise InputError(
            f"{model.path}: nothing to audit: the graph has no layers (its output is its input); "
            "pass --allow-empty to accept"
        )
    dtype = DTYPES[config.dtype]
    check_batch_memory(graph, dtype.itemsize, str(model.path))
    assignment = assign(graph, rules if rules is not None else config).complete()
    tolerance = request.tolerance or config.tolerance(graph)
    return Prepared(graph, assignment, tolerance, cast_params(graph, dtype, request.device))


def run_audit(request: AuditRequest) -> AuditResult:
    """Run one audit (see the module docstring). Inputs stream in batches: memory holds one batch's activations.

    An audit that checks nothing is an InputError unless ``allow_empty``: no samples, a graph with no nodes, or
    samples whose output relevance is all exactly zero (nothing to explain; with some such samples the audit
    runs and a note names them).
    """
    check_device(request.device)
    if request.fidelity not in FIDELITY_MODES:
        raise InputError(f"fidelity {request.fidelity!r}: expected one of {', '.join(FIDELITY_MODES)}")
    config = resolve_config(request)
    model, input_shapes = open_model(request)
    if request.keep_relevance:
        check_relevance_names(model)
    if request.inputs is None and not request.random:
        raise InputError("no inputs: give --inputs PATH or --random N")
    started = time.perf_counter()
    torch_dtype = DTYPES[config.dtype]
    target = request.target if request.target is not None else config.target
    target = None if target in ("predicted", "pred") else target
    accumulator = AuditAccumulator()
    fidelity: FidelityResult | None = None
    compared = FidelityCoverage(request.fidelity, request.seed)
    sizes: set[int] = set()  # the batch sizes planned so far: the first batch of each size is compared
    graph_notes: list[str] = []
    token_names: set[str] = set()
    warnings: list[str] = []
    checks: list[RuleCheck] | None = None
    saved: dict[str, list[np.ndarray]] = {}
    kept: dict[str, list[np.ndarray]] = {}
    prepared: dict[tuple, Prepared] = {}
    tolerance = request.tolerance or config.tolerance(Graph([], [], []))
    total = 0
    for number, pending in enumerate(_plan(model, request, input_shapes)):
        total += pending.size
        new_size = pending.size not in sizes
        sizes.add(pending.size)
        if request.shard is not None and not request.shard.owns(number):
            continue
        batch = pending.read()
        shapes = _shapes(batch)
        key = tuple(sorted(shapes.items()))
        if key not in prepared:
            prepared[key] = prepare(model, config, request.rules, request, shapes)
            for warning in prepared[key].assignment.warnings:
                if warning not in warnings:
                    warnings.append(warning)
                    if request.on_warning:
                        request.on_warning(warning)
        step = prepared[key]
        tolerance = step.tolerance
        raw = {name: torch.from_numpy(np.ascontiguousarray(a)) for name, a in batch.arrays.items()}
        try:
            # the prologue: token ids -> their embeddings, the inputs of the IR (ir.TokenInput)
            feeds = embed_inputs(step.graph, raw, torch_dtype, batch.first_index)
            values = None  # the activations, when the forward check already computed them
            if compares_batch(request.fidelity, request.seed, number, new_size):
                found, values = check_batch(
                    model, shapes, step, _feeds(batch), feeds, torch_dtype, request.device
                )
                fidelity = worse_fidelity(fidelity, found)
                compared = compared.with_batch(number, batch.size)
            rules = step.assignment.rules
            result = propagate(
                step.graph,
                feeds,
                rules,
                config.init,
                target,
                torch_dtype,
                request.device,
                values=values,
                params=step.params,
            )
        except InputError as exc:  # e.g. a target out of range: name the model it does not fit
            raise InputError(f"{model.path}: {exc}") from exc
        result.input_relevance = token_relevance(step.graph, result.input_relevance)
        graph_notes = result.notes + _token_notes(step.graph)
        token_names.update(token.name for token in step.graph.token_inputs)
        accumulator.add_records(result.records, step.assignment.sources)
        accumulator.add_samples(result, batch.sources, batch.first_index)
        if request.keep_relevance:
            for name, tensor in result.input_relevance.items():
                saved.setdefault(name, []).append(tensor.detach().cpu().numpy())
            saved.setdefault("targets", []).append(result.targets.cpu().numpy())
            saved.setdefault("output_relevance", []).append(result.output_relevance.detach().cpu().numpy())
        if request.keep_inputs:
            for name, array in batch.arrays.items():
                kept.setdefault(name, []).append(np.asarray(array))
        if request.verify and checks is None:
            checks = verify_rules(step.graph, feeds, rules, config.init, target, torch_dtype)
        if request.on_batch:
            request.on_batch(len(accumulator.samples), batch.size)
    layers, samples = finalize(accumulator.layer_data(), accumulator.samples, tolerance, config.dtype)
    if request.shard is None:
        check_not_vacuous(str(model.path), samples, _inputs_text(request.inputs), request.allow_empty)
    return AuditResult(
        model_path=str(model.path),
        model_format=model.format,
        model_sha256=model.sha256(),
        dtype=config.dtype,
        device=request.device,
        tolerance=tolerance,
        layers=layers,
        samples=samples,
        fidelity=fidelity,
        fidelity_compared=compared,
        notes=tuple(graph_notes + sample_notes(samples, bool(layers))),
        rule_checks=tuple(checks) if checks is not None else None,
        relevance={k: np.concatenate(v) for k, v in saved.items()} if request.keep_relevance else None,
        inputs={k: np.concatenate(v) for k, v in kept.items()} if request.keep_inputs else None,
        token_inputs=tuple(sorted(token_names)),
        config=_config_record(config, request),
        elapsed_s=time.perf_counter() - started,
        warnings=tuple(warnings),
        shard=_shard_record(request, total),
    )


def _shard_record(request: AuditRequest, total: int) -> ShardRecord | None:
    if request.shard is None:
        return None
    if request.inputs is None:
        inputs = f"random {request.random} seed {request.seed}"
    else:
        inputs = _inputs_text(request.inputs) or type(request.inputs).__name__
    return ShardRecord(
        index=request.shard.index,
        count=request.shard.count,
        total_samples=total,
        batch_size=request.batch_size,
        inputs=inputs,
        target=request.target,
        allow_empty=request.allow_empty,
    )


RELEVANCE_KEYS = ("targets", "output_relevance")


def check_relevance_names(model) -> None:
    """The kept relevance holds one map per graph input plus ``RELEVANCE_KEYS``: an input with one of those names
    would be overwritten, so it is refused before the audit (InputError)."""
    clash = [name for name in model.input_names if name in RELEVANCE_KEYS]
    if clash:
        raise InputError(
            f"{model.path}: graph input {clash[0]!r} has the name of a key the relevance maps reserve "
            f"({', '.join(RELEVANCE_KEYS)}), so --save-relevance cannot store it; rename the input or audit "
            "without --save-relevance"
        )


def _config_record(config: Config, request: AuditRequest) -> dict:
    """How reports name and describe the run's configuration."""
    if request.rules is not None:
        return {}
    return {
        "name": config.name,
        "path": str(config.path) if config.path else None,
        "sha256": config.sha256,
        "resolved": config.resolved(),
    }


def _token_notes(graph: Graph) -> list[str]:
    """How the relevance of token-id inputs is reported."""
    notes = []
    for token in graph.token_inputs:
        dims = token.table.shape[1]
        notes.append(
            f"input {token.name!r} holds token ids: the audit starts at their embedding lookup {token.embedded!r}, "
            f"and the relevance of each token is the sum over its {dims} embedding dimensions (shape (samples, "
            "tokens) in --save-relevance)"
        )
    return notes


def _plan(model, request: AuditRequest, input_shapes) -> Iterable[Pending]:
    """The request's batches, planned (nothing read yet): see :mod:`lrpaudit.inputs`."""
    declared = model.declared_shapes()
    check_shape_names(input_shapes, declared, model.path)
    integer = frozenset(model.integer_inputs)
    batch_size, inputs, random = request.batch_size, request.inputs, request.random
    fixed = fixed_batch(declared)
    if fixed is not None:
        batch_size = fixed  # the model only accepts this many samples at a time
        if inputs is None and random and random % fixed:
            raise InputError(
                f"{model.path}: the model takes batches of exactly {fixed}; --random {random} is not a multiple"
            )
    if inputs is None:
        vocab = model.token_vocab(first_shapes(declared, random, batch_size, input_shapes)) if integer else {}
        return plan_random(declared, random, batch_size, request.seed, input_shapes, vocab)
    if isinstance(inputs, (str, Path)):
        return plan_files(inputs, declared, batch_size, integer)
    if isinstance(inputs, np.ndarray):
        inputs = {next(iter(declared)): inputs}
    if isinstance(inputs, dict):
        return plan_arrays(inputs, declared, batch_size, integer)
    return (Pending(batch.size, batch.first_index, lambda batch=batch: batch) for batch in inputs)


def check_device(device: str) -> None:
    """``cpu``, ``cuda`` or ``cuda:N`` where such a device exists; else an InputError naming ``--device``."""
    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise InputError(f"--device {device!r}: not a device (cpu, cuda or cuda:N)") from exc
    if parsed.type not in ("cpu", "cuda") or (parsed.type == "cpu" and parsed.index not in (None, 0)):
        raise InputError(f"--device {device!r}: lrpaudit runs on cpu or cuda")
    if parsed.type == "cuda":
        if not torch.cuda.is_available():
            raise InputError(f"--device {device}: no CUDA device is available here")
        if (parsed.index or 0) >= torch.cuda.device_count():
            raise InputError(f"--device {device}: only {torch.cuda.device_count()} CUDA device(s) here")


def _inputs_text(inputs) -> str:
    """How messages name a request's inputs: the path given, else nothing."""
    return str(inputs) if isinstance(inputs, (str, Path)) else ""


def _shapes(batch: Batch) -> dict[str, tuple[int, ...]]:
    return {name: tuple(a.shape) for name, a in batch.arrays.items()}


def _feeds(batch: Batch) -> dict[str, np.ndarray]:
    return {name: np.ascontiguousarray(a) for name, a in batch.arrays.items()}
