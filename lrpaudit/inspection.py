"""Looking at a model without auditing it: ``inspect`` (the canonical IR, its forward check, the rule a config
gives each node) and ``init`` (a starter config listing the model's linear-type nodes)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .config import load_config
from .errors import ConfigError
from .fidelity import FidelityResult, check_fidelity
from .frontends import load_model
from .inputs import first_shapes, random_batches
from .inputs.limits import check_batch_memory
from .inputs.shapes import fixed_batch, name_unnamed
from .ir import Graph
from .passes import strip_output_softmax
from .rules.assign import Assignment, assign


def _shapes(batch) -> dict[str, tuple[int, ...]]:
    return {name: tuple(a.shape) for name, a in batch.arrays.items()}


@dataclass(frozen=True)
class Inspection:
    """What ``inspect`` shows: the canonical graph, its forward check, and the rules a config would choose."""

    model: object
    graph: Graph
    fidelity: FidelityResult
    assignment: Assignment | None = None


def inspect_model(
    path: str | Path,
    random: int = 1,
    seed: int = 0,
    intermediates: bool = True,
    input_shapes: dict[str, tuple[int, ...]] | None = None,
    config: str | Path | None = None,
    preset: str | None = None,
    trust_code: bool = False,
) -> Inspection:
    """Load a model, build the canonical IR for ``random`` seeded samples and check it against the runtime.

    With a config or preset, also which rule each node gets (after stripping a trailing softmax if the config
    explains logits); nodes whose op has no rule are shown without one rather than refused.
    """
    model = load_model(path, input_shapes, trust_code=trust_code)
    input_shapes = name_unnamed(input_shapes, model.input_names)
    declared = model.declared_shapes()
    count = fixed_batch(declared) or random
    batch = next(
        iter(
            random_batches(
                declared, count, count, seed, input_shapes, _vocab(model, declared, count, input_shapes)
            )
        )
    )
    graph = model.graph(_shapes(batch))
    check_batch_memory(graph, 4, str(model.path))
    fidelity = check_fidelity(
        model,
        graph,
        {name: a for name, a in batch.arrays.items()},
        dtype="float32",
        intermediates=intermediates,
    )
    if config is None and preset is None:
        return Inspection(model, graph, fidelity)
    loaded = load_config(config, preset)
    if loaded.explain == "logits":
        graph = strip_output_softmax(graph)
    return Inspection(model, graph, fidelity, assign(graph, loaded))


def _vocab(model, declared, count: int, input_shapes) -> dict[str, int]:
    """The token inputs' id ranges (from the graph of the first batch's shapes), for seeded draws."""
    if not model.integer_inputs:
        return {}
    return model.token_vocab(first_shapes(declared, count, count, input_shapes))


def probe_graph(model, input_shapes) -> Graph:
    """The canonical graph for one seeded sample (enough to list a model's nodes and shapes)."""
    declared = model.declared_shapes()
    probe = next(
        iter(random_batches(declared, 1, 1, 0, input_shapes, _vocab(model, declared, 1, input_shapes)))
    )
    return model.graph(_shapes(probe))


def starter_config(
    model_path: str | Path, preset: str, input_shapes=None, output: str = "lrp.yaml", trust_code: bool = False
):
    """The text of a starter config for a model (``lrpaudit init``) and the graph it was made from."""
    from .config.presets import preset_path
    from .config.starter import starter_config as render

    preset_path(preset)  # an unknown preset fails before any work
    model = load_model(model_path, trust_code=trust_code)
    graph = probe_graph(model, name_unnamed(input_shapes, model.input_names))
    text = render(graph, Path(model_path), model.sha256(), preset, load_config(preset=preset), output)
    return text, graph


def write_config(target: Path, text: str, graph: Graph) -> None:
    """Write a config file all or nothing, after proving that it loads and assigns a rule to every node."""
    from .reports._io import atomic_write_text

    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot write {target}: {exc.strerror or exc}") from exc
    atomic_write_text(target, text, check=lambda written: load_config(written).assign(graph))
