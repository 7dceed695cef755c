"""What the ONNX and TorchScript model classes share: the per-shape cache of canonical graphs and the file hash.

This is the one place a frontend reaches the passes: ``graph(shapes)`` is ``canonicalize(raw_graph(shapes))``, with
the node ids given again afterwards (``module_ids``).
"""

from __future__ import annotations

import functools
import hashlib
import os
from pathlib import Path

from ..ir import Graph
from ..passes import canonicalize
from .module_ids import assign_graph_ids


class ModelFile:
    """Base of the model classes (``OnnxModel``, ``TorchScriptModel``).

    A model class is a dataclass with a ``path`` and a ``_graphs`` dict field, and gives ``input_names``,
    ``declared_shapes()``, ``reference_outputs(feeds, names)`` and ``raw_graph(shapes)`` (the frontend's IR
    specialized on concrete input shapes). ``graph(shapes)`` runs the passes on that and caches it per shape.
    """

    path: Path
    _graphs: dict[tuple, Graph]

    def raw_graph(self, shapes: dict[str, tuple[int, ...]]) -> Graph:
        raise NotImplementedError

    def graph(self, shapes: dict[str, tuple[int, ...]]) -> Graph:
        """Canonical IR for these input shapes (cached)."""
        key = tuple(sorted((name, tuple(shape)) for name, shape in shapes.items()))
        if key not in self._graphs:
            self._graphs[key] = self._canonical(shapes)
        return self._graphs[key]

    def _canonical(self, shapes: dict[str, tuple[int, ...]]) -> Graph:
        """The raw IR after the passes, its nodes named again (``module_ids``: what the passes removed leaves no
        gap in the numbering); a model class may wrap this (to translate errors)."""
        raw = self.raw_graph(shapes)
        graph = self._after_passes(raw, canonicalize(raw))
        assign_graph_ids(graph)
        return graph

    def _after_passes(self, raw: Graph, graph: Graph) -> Graph:
        """Fix up the canonical graph with what only the raw one knows (TorchScript: which values aten computed)."""
        return graph

    @property
    def integer_inputs(self) -> list[str]:
        """The model inputs that take integer token ids (none by default)."""
        return []

    def token_vocab(self, shapes: dict[str, tuple[int, ...]]) -> dict[str, int]:
        """The integer inputs and how many token ids each accepts (the rows of its embedding table)."""
        if not self.integer_inputs:
            return {}
        vocab: dict[str, int] = {}
        for token in self.graph(shapes).token_inputs:
            vocab[token.name] = min(vocab.get(token.name, token.vocab), token.vocab)
        return vocab

    def sha256(self) -> str:
        return file_sha256(self.path)


def file_sha256(path: str | Path) -> str:
    """The file's sha256, hashed once per (path, size, modification time): big models are audited repeatedly."""
    stat = os.stat(path)
    return _sha256_of(str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=64)
def _sha256_of(path: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
