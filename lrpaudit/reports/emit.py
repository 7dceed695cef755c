"""Every artefact a command writes, in one place: the chosen reports, saved relevance maps, GitHub output.

``ReportTargets.check()`` runs before the audit, so that an unwritable path fails in a second rather than after a
long audit. ``write_reports`` writes each requested file all or nothing (see :mod:`._io`) and builds the Markdown
summary only when a file or the GitHub job summary asks for it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import OutputError
from . import github
from ._io import atomic_write, atomic_write_text, check_writable
from .json_report import write_json
from .junit import write_junit
from .markdown import build_markdown


@dataclass(frozen=True)
class ReportTargets:
    """Where the reports of one command go (None: not written)."""

    json: Path | None = None
    junit: Path | None = None
    markdown: Path | None = None
    relevance: Path | None = None  # --save-relevance (check only)

    def check(self) -> None:
        """Fail now (OutputError, exit 2) if any target cannot be written."""
        for path in (self.json, self.junit, self.markdown):
            if path is not None:
                check_writable(path)
        if self.relevance is not None:
            check_writable(self.relevance, folders_made=True)


def relevance_paths(target: Path, results: Sequence) -> list[Path]:
    """One .npz per audited model: ``P`` for one model, ``P.<model stem>.npz`` for several."""
    if len(results) == 1:
        return [target]
    return [target.with_name(f"{target.stem}.{Path(r.model_path).stem}.npz") for r in results]


def save_relevance(path: Path, relevance: Mapping[str, np.ndarray]) -> None:
    """The input maps (plus ``targets`` and ``output_relevance``) as one .npz, written all or nothing."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot write {path}: {exc.strerror or exc}") from exc
    atomic_write(path, lambda out: np.savez(out, **relevance))


def write_reports(results: Sequence, report: dict, targets: ReportTargets, env=None) -> list[str]:
    """Write what ``targets`` asks for; returns the GitHub annotation lines to print (none outside Actions)."""
    env = env if env is not None else os.environ
    if targets.relevance is not None:
        for result, path in zip(results, relevance_paths(targets.relevance, results)):
            save_relevance(path, result.relevance)
    if targets.json is not None:
        write_json(report, targets.json)
    if targets.junit is not None:
        write_junit(results, targets.junit)
    in_actions = github.in_github_actions(env)
    markdown = build_markdown(results) if targets.markdown is not None or in_actions else None
    if targets.markdown is not None:
        atomic_write_text(targets.markdown, markdown)
    if not in_actions:
        return []
    github.append_step_summary(markdown, env)
    return github.annotations(results, env=env)
