"""Every artefact a command writes, in one place: the chosen reports, saved relevance maps, GitHub output.

``ReportTargets.check()`` runs before the audit, so that an unwritable path, two reports naming one file, or a
report over one of the command's own inputs fails in a second rather than after a long audit. ``write_reports``
writes every requested file as one (see :mod:`._io`: all of them or none) and builds the Markdown summary only
when a file or the GitHub job summary asks for it.
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..display import safe
from ..errors import OutputError
from . import github
from ._io import Staging, atomic_write, check_writable
from .json_report import to_json_text
from .junit import build_junit
from .markdown import build_markdown


@dataclass(frozen=True)
class ReportTargets:
    """Where the reports of one command go (None: not written)."""

    json: Path | None = None
    junit: Path | None = None
    markdown: Path | None = None
    relevance: Path | None = None  # --save-relevance (check only)
    html: Path | None = None  # --html
    heatmaps: Path | None = None  # --heatmaps DIR (check only): one PNG per sample and image input
    json_flag: str = "--json-report"  # the flag that named ``json``, for messages (merge: -o)

    @property
    def keeps_relevance(self) -> bool:
        """Whether the audit must keep the input relevance maps (and the inputs, for overlays)."""
        return self.relevance is not None or self.html is not None or self.heatmaps is not None

    def check(self, models: Sequence = (), reads: Sequence = ()) -> None:
        """Fail now (OutputError, exit 2) if any target cannot be written, if two targets are one file (two
        reports, or the relevance maps of two ``models`` whose names share a stem), or if a target is a file
        the command reads (``reads``: a model, a config, the inputs, a manifest)."""
        named = [
            (flag, path)
            for flag, path in (
                (self.json_flag, self.json),
                ("--junit-xml", self.junit),
                ("--markdown", self.markdown),
                ("--html", self.html),
            )
            if path is not None
        ]
        for _, path in named:
            check_writable(path)
        if self.heatmaps is not None:
            folder = Path(self.heatmaps)
            if folder.exists() and not folder.is_dir():
                raise OutputError(f"--heatmaps {folder}: not a folder")
            check_writable(folder / "heatmap.png", folders_made=True)
        if self.html is not None or self.heatmaps is not None:
            from .plots import require_matplotlib

            require_matplotlib()  # a missing extra fails before the audit, not after it
        if self.relevance is not None:
            check_writable(self.relevance, folders_made=True)
            paths = relevance_paths(self.relevance, list(models) or [None])
            for model, path in zip(list(models) or [None], paths):
                named.append(("--save-relevance" + (f" (for {model})" if len(paths) > 1 else ""), path))
        seen: dict[str, str] = {}
        for flag, path in named:
            key = os.path.realpath(path)
            if key in seen:
                raise OutputError(f"{seen[key]} and {flag} would both write {path}; give each its own file")
            seen[key] = flag
        for source in reads:
            if source is not None and os.path.realpath(source) in seen:
                flag = seen[os.path.realpath(source)]
                raise OutputError(
                    f"{flag} {source}: that is a file this command reads; refusing to overwrite it"
                )


def relevance_paths(target: Path, models: Sequence) -> list[Path]:
    """One .npz per audited model (model paths or results): ``P`` for one model, ``P.<model stem>.npz`` for
    several."""
    target = Path(target)
    if len(models) == 1:
        return [target]
    stems = [Path(str(getattr(m, "model_path", m))).stem for m in models]
    return [target.with_name(f"{target.stem}.{stem}.npz") for stem in stems]


def write_npz(out, arrays: Mapping[str, np.ndarray]) -> None:
    """``np.savez`` without its keyword arguments: a graph input named ``file`` or ``allow_pickle`` is an array
    name like any other."""
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED, allowZip64=True) as archive:
        for name, array in arrays.items():
            with archive.open(f"{name}.npy", "w", force_zip64=True) as member:
                np.lib.format.write_array(member, np.asanyarray(array), allow_pickle=False)


def save_relevance(path: Path, relevance: Mapping[str, np.ndarray], staging: Staging | None = None) -> None:
    """The input maps (plus ``targets`` and ``output_relevance``) as one .npz, written all or nothing."""
    try:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot write {path}: {exc.strerror or exc}") from exc
    if staging is None:
        atomic_write(path, lambda out: write_npz(out, relevance))
    else:
        staging.write(path, lambda out: write_npz(out, relevance))


def write_reports(results: Sequence, report: dict, targets: ReportTargets, env=None) -> list[str]:
    """Write what ``targets`` asks for, all or nothing; returns the GitHub annotation lines to print (none
    outside Actions).

    Every file is written to a temp file first; only when all are written are they renamed into place together
    (:class:`._io.Staging`), and the GitHub job summary is appended after that. A failure anywhere (a full disk
    on the third file, a rename that fails, the summary) leaves no report behind and earlier reports as they were.
    """
    env = env if env is not None else os.environ
    in_actions = github.in_github_actions(env)
    plots = _markdown_plots(results, targets.markdown) if targets.markdown is not None else None
    markdown = build_markdown(results, plots=[name for name, _ in plots] if plots else None) if (
        targets.markdown is not None) else None  # fmt: skip
    summary = build_markdown(results, plots="mermaid") if in_actions else None
    heatmap_files = _heatmaps(results) if targets.heatmaps is not None else []
    with Staging() as staging:
        if targets.relevance is not None:
            for result, path in zip(results, relevance_paths(targets.relevance, results)):
                save_relevance(path, result.relevance, staging)
        if targets.json is not None:
            staging.write(targets.json, _encoded(to_json_text(report)))
        if targets.junit is not None:
            staging.write(targets.junit, _encoded(build_junit(results)))
        if targets.markdown is not None:
            staging.write(targets.markdown, _encoded(markdown))
            for name, png in plots or []:
                if name is not None:
                    staging.write(Path(targets.markdown).parent / name, _binary(png))
        if targets.html is not None:
            from .html import build_html

            staging.write(targets.html, _encoded(build_html(results)))
        if heatmap_files:
            folder = Path(targets.heatmaps)
            _make_folder(folder)
            for name, png in heatmap_files:
                staging.write(folder / name, _binary(png))
        staging.commit()
        if in_actions:  # a failure here still takes the reports back
            github.append_step_summary(summary, env)
    return github.annotations(results, env=env) if in_actions else []


def _markdown_plots(results, markdown: Path) -> list[tuple[str, bytes | None]]:
    """The conservation plot of each run as a PNG next to the Markdown file (``<stem>.conservation[-k].png``);
    without matplotlib the Markdown says how to get them instead."""
    from .plots import matplotlib_available

    if not matplotlib_available():
        return []
    from .conservation import conservation
    from .plots import conservation_png

    stem = Path(markdown).stem
    out: list[tuple[str | None, bytes | None]] = []
    for k, result in enumerate(results, start=1):
        if not result.layers:
            out.append((None, None))
            continue
        name = f"{stem}.conservation{'' if len(results) == 1 else f'-{k}'}.png"
        title = safe(Path(result.model_path).name)
        out.append((name, conservation_png(conservation(result), title)))
    return out


def _heatmaps(results) -> list[tuple[str, bytes]]:
    from .heatmap_files import heatmap_files

    return heatmap_files(results)


def _make_folder(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot write heatmaps to {folder}: {exc.strerror or exc}") from exc


def _binary(data: bytes):
    return lambda out: out.write(data)


def _encoded(text: str):
    data = text.encode("utf-8")
    return lambda out: out.write(data)
