"""The TorchScript frontend: a ``.pt`` archive -> canonical IR, plus the ScriptModule itself as the fidelity reference.

The archive's zip entries are checked *before* ``torch.jit.load`` (``archive``), so a pickle written by
``torch.save`` (a state_dict or a whole ``nn.Module``) is named for what it is and never unpickled, a zip bomb is
refused by its declared sizes, and code that does more than compute (``code_check``: ``__setstate__``, file,
process and network ops) is refused before any of it runs, unless the caller trusts it (``--trust-code``).

TorchScript files declare no input shapes. ``declared_shapes`` uses, in order: the shapes given by the caller
(``load_torchscript(path, input_shapes=...)``, which the CLI fills from ``--input-shape``), or the example input a
traced module recorded in its archive (``torch.jit.trace`` stores it since torch 2.0). For a scripted module with
neither, it raises an InputError that asks for ``--input-shape``. The batch dimension (axis 0) is always free.

The IR is built per input shape by interpreting the module's inlined graph on a seeded random input of that shape
(``interp``): traced graphs contain fixed shape arithmetic, scripted ones contain branches on shapes, so the graph
is specialized on the shapes it was built for. Value-dependent control flow is refused. The interpreter evaluates
``prim::`` nodes with ``prims`` and list/scalar ops with ``python_ops``; it hands each aten op that reads an
activation to its converter in ``ops`` or ``ops_shape``, which emits IR through ``builder``; ``naming`` gives the
node ids, and ``values`` holds the value types and the registries. Importing this package fills the registries.

The loaded module is put in eval mode (a scripted module saved in training mode would otherwise normalize with
batch statistics); a traced module's mode is baked into its graph, and training-mode BatchNorm or dropout there is
refused. The reference for the fidelity check is the ScriptModule itself under ``no_grad`` (plain interpreter, no
profiling re-specialization); intermediates come from the graph's own aten ops as the interpreter ran them.
``torch.jit.freeze``-d modules load too, but freezing drops the module hierarchy: their ids are op names.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ...errors import InputError, ModelError, first_line
from ...inputs.shapes import check_declared
from ...ir import Graph
from .._model import ModelFile
from . import ops, ops_attention, ops_fused, ops_shape, prims  # noqa: F401  (fill the converter and prim handler registries)
from .archive import check_archive
from .interp import interpret


def _module_dtype(module: Any) -> torch.dtype:
    for tensor in [*module.parameters(), *module.buffers()]:
        if tensor.is_floating_point():
            return tensor.dtype
    return torch.float32


@dataclass
class TorchScriptModel(ModelFile):
    """A loaded TorchScript archive. ``graph(shapes)`` gives the canonical IR specialized on concrete input shapes."""

    path: Path
    module: Any
    input_shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)
    example_shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)
    # Forward arguments a trace recorded as integer tensors (token ids).
    example_integers: list[str] = field(default_factory=list)
    format: str = "torchscript"
    reference_name: str = "torchscript"
    _graphs: dict[tuple, Graph] = field(default_factory=dict, repr=False)

    @property
    def input_names(self) -> list[str]:
        """The forward argument names that take tensors."""
        return [a.name for a in self.module.forward.schema.arguments[1:] if str(a.type) == "Tensor"]

    @property
    def integer_inputs(self) -> list[str]:
        """The forward arguments that take integer token ids (as the trace recorded them)."""
        return [name for name in self.input_names if name in self.example_integers]

    @property
    def dtype(self) -> torch.dtype:
        return _module_dtype(self.module)

    def declared_shapes(self) -> dict[str, list[int | str | None]]:
        """Given or recorded example shapes with a free batch axis; an InputError when neither exists."""
        shapes: dict[str, list[int | str | None]] = {}
        for name in self.input_names:
            shape = self.input_shapes.get(name) or self.example_shapes.get(name)
            if shape is None:
                raise InputError(
                    f"{self.path}: TorchScript files do not declare input shapes and this one recorded no example "
                    f"input for {name!r} (a scripted module); give --input-shape, e.g. --input-shape 1,3,32,32"
                )
            shapes[name] = [None, *shape[1:]]
        return check_declared(shapes, self.path)

    def set_input_shapes(self, shapes: dict[str, tuple[int, ...]]) -> None:
        """Full input shapes (batch included) by forward argument name; ``"*"`` names the first argument."""
        shapes = {(self.input_names[0] if name == "*" else name): shape for name, shape in shapes.items()}
        unknown = [name for name in shapes if name not in self.input_names]
        if unknown:
            raise InputError(
                f"{self.path}: input shape given for {unknown}, but forward takes {self.input_names}"
            )
        self.input_shapes = {name: tuple(int(d) for d in shape) for name, shape in shapes.items()}

    def raw_graph(self, shapes: dict[str, tuple[int, ...]]) -> Graph:
        """The module's graph interpreted on a seeded random input of these shapes."""
        missing = [name for name in self.input_names if name not in shapes]
        if missing:
            raise InputError(f"{self.path}: no input shape given for forward argument(s) {missing}")
        generator = torch.Generator().manual_seed(0)
        feeds = {
            # token ids: 0 is valid for every table, and the ids' values reach nothing but the lookup
            name: torch.zeros(tuple(shapes[name]), dtype=torch.long)
            if name in self.integer_inputs
            else torch.randn(tuple(shapes[name]), generator=generator, dtype=torch.float64).to(self.dtype)
            for name in self.input_names
        }
        return self._interpret(feeds)[0]

    def _after_passes(self, raw: Graph, graph: Graph) -> Graph:
        """After fusions a node may produce another aten value: point its ``source_output`` at that one."""
        named = _aten_values(raw)
        for node in graph.nodes:
            node.origin["source_output"] = node.output if node.output in named else None
        return graph

    def _interpret(self, feeds: dict[str, torch.Tensor]) -> tuple[Graph, dict[str, torch.Tensor]]:
        """The raw IR, and the real (aten) values of the IR values that an aten op computed."""
        raw, values = interpret(self.module, str(self.path), feeds, self.dtype)
        return raw, {name: values[name] for name in _aten_values(raw)}

    def reference_outputs(
        self, feeds: dict[str, np.ndarray], names: list[str] | None = None
    ) -> dict[str, np.ndarray]:
        """Run the ScriptModule itself under no_grad; ``names`` adds intermediates (from its own aten ops)."""
        tensors = {}
        for name in self.input_names:
            if name not in feeds:
                raise InputError(f"{self.path}: no value fed for forward argument {name!r}")
            tensor = torch.from_numpy(np.ascontiguousarray(feeds[name]))
            tensors[name] = tensor if name in self.integer_inputs else tensor.to(self.dtype)
        graph = self.graph({name: tuple(t.shape) for name, t in tensors.items()})
        try:
            # The plain interpreter: no profiling runs and re-specialization per new shape, the same kernels.
            with torch.no_grad(), torch.jit.optimized_execution(False):
                result = self.module(*[tensors[name] for name in self.input_names])
        except Exception as exc:
            raise ModelError(f"{self.path}: the ScriptModule fails on this input: {first_line(exc)}") from exc
        flat = _flatten(result)
        output_names = graph.source["output_names"]
        if len(flat) != len(output_names):
            raise ModelError(
                f"{self.path}: the ScriptModule returned {len(flat)} tensors, the IR has {len(output_names)}"
            )
        outputs = {name: t.detach().cpu().numpy() for name, t in zip(output_names, flat)}
        wanted = [name for name in names or [] if name not in outputs]
        if wanted:
            _, values = self._interpret(tensors)
            for name in wanted:
                if name in values:
                    outputs[name] = values[name].detach().cpu().numpy()
        return outputs


def _aten_values(raw: Graph) -> set[str]:
    """The IR values of the raw graph that are an aten op's output (not a step inside a multi-node mapping)."""
    return {name for node in raw.nodes for name in node.outputs if node.origin.get("source_output") == name}


def _flatten(result: Any) -> list[torch.Tensor]:
    if isinstance(result, torch.Tensor):
        return [result]
    if isinstance(result, (list, tuple)):
        return [t for item in result for t in _flatten(item)]
    if isinstance(result, dict):
        return [t for item in result.values() for t in _flatten(item)]
    raise ModelError(f"the ScriptModule returned a {type(result).__name__}, not tensors")


def load_torchscript(
    path: str | Path, input_shapes: dict[str, tuple[int, ...]] | None = None, trust_code: bool = False
) -> TorchScriptModel:
    """Check the archive (its code too, unless ``trust_code``), ``torch.jit.load`` it on CPU; conversion to IR
    happens per input shape in ``graph``."""
    path = Path(path)
    traced_inputs = check_archive(path, trust_code)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            # _restore_shapes puts the recorded example shapes into the graph's input types.
            if traced_inputs:
                module = torch.jit.load(str(path), map_location="cpu", _restore_shapes=True)
            else:
                module = torch.jit.load(str(path), map_location="cpu")
        except Exception as exc:
            raise ModelError(f"{path}: torch.jit.load failed: {first_line(exc).rstrip(': ')}") from exc
    module.eval()
    model = TorchScriptModel(path=path, module=module)
    model.example_shapes = _recorded_shapes(module, model.input_names)
    model.example_integers = _recorded_integers(module, model.input_names)
    if input_shapes:
        model.set_input_shapes(input_shapes)
    return model


def _recorded_shapes(module: Any, names: list[str]) -> dict[str, tuple[int, ...]]:
    """Shapes of the example input a traced module recorded (restored into the graph's input types on load)."""
    shapes: dict[str, tuple[int, ...]] = {}
    try:
        graph_inputs = list(module.graph.inputs())[1:]
    except Exception:  # pragma: no cover
        return shapes
    by_name = dict(zip([a.name for a in module.forward.schema.arguments[1:]], graph_inputs))
    for name in names:
        value = by_name.get(name)
        sizes = None
        try:
            sizes = value.type().sizes() if value is not None else None
        except Exception:
            sizes = None
        if sizes and all(isinstance(d, int) for d in sizes):
            shapes[name] = tuple(sizes)
    return shapes


_INTEGER_TYPES = ("Long", "Int", "Short", "Char", "Byte")


def _recorded_integers(module: Any, names: list[str]) -> list[str]:
    """The forward arguments whose recorded example type is an integer tensor."""
    try:
        graph_inputs = list(module.graph.inputs())[1:]
    except Exception:  # pragma: no cover
        return []
    by_name = dict(zip([a.name for a in module.forward.schema.arguments[1:]], graph_inputs))
    found = []
    for name in names:
        try:
            scalar = by_name[name].type().scalarType()
        except Exception:
            scalar = None
        if scalar in _INTEGER_TYPES:
            found.append(name)
    return found
