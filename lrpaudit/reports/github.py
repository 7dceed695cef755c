"""GitHub Actions: ``::error`` annotations for the worst failures and the Markdown job summary.

Every string in an annotation is first made one printable line (:func:`lrpaudit.display.safe`: control, format
and separator characters become visible escapes), so a node name cannot end the command or start a new one.
Annotations follow the workflow-command syntax ``::error file=F,line=L,col=C,title=T::MESSAGE``. Escaping follows
``@actions/core`` (command.ts): in the message ``%`` -> ``%25``, CR -> ``%0D``, LF -> ``%0A``; in property values
additionally ``:`` -> ``%3A`` and ``,`` -> ``%2C``. GitHub shows at most 10 error annotations per step and drops
the rest silently, so ``annotations`` returns at most ``limit`` ``::error`` lines, worst first (verdict severity,
then the gated figure), and one ``::notice`` line counting what was left out. Failing layer rows come first;
a sample failure is annotated only for runs where no layer row failed (end-to-end-only failures).

An annotation is anchored to the config line that chose the rule when the row's ``rule_source`` has the form
``path:line[:col]``, else to the model file (file-level). Paths under ``$GITHUB_WORKSPACE`` are made relative to
it, as GitHub matches annotation files against repository paths.

Annotations go to stderr (workflow commands work on either stream; stdout stays for ``--format json``).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from ..display import safe
from ..errors import OutputError
from ._format import fmt
from .ranking import Failure, ranked_failures

TITLES = {
    "fail": "lrpaudit: conservation",
    "unexplained": "lrpaudit: unexplained residual",
    "non_finite": "lrpaudit: non-finite relevance",
}
SUMMARY_LIMIT = 1024 * 1024  # GitHub's cap on a step summary, bytes
_SOURCE = re.compile(r"^(?P<file>.+?):(?P<line>\d+)(?::(?P<col>\d+))?$")


def in_github_actions(env=None) -> bool:
    return (env if env is not None else os.environ).get("GITHUB_ACTIONS") == "true"


def escape_data(text: str) -> str:
    return str(text).replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def escape_property(text: str) -> str:
    return escape_data(text).replace(":", "%3A").replace(",", "%2C")


def _repo_path(path: str, env) -> str:
    workspace = env.get("GITHUB_WORKSPACE")
    if workspace and os.path.isabs(path):
        try:
            return Path(path).resolve().relative_to(Path(workspace).resolve()).as_posix()
        except ValueError:
            return path
    return path


def _anchor(failure: Failure, env) -> dict[str, str]:
    source = failure.row.get("rule_source") or ""
    match = _SOURCE.match(source) if failure.kind == "layer" else None
    # "preset NAME:LINE" names a shipped preset, not a file in the repository: anchor those to the model file
    if match and not match.group("file").isdigit() and not source.startswith("preset "):
        anchor = {"file": _repo_path(match.group("file"), env), "line": match.group("line")}
        if match.group("col"):
            anchor["col"] = match.group("col")
        return anchor
    return {"file": _repo_path(str(failure.result.model_path), env)}


def message(failure: Failure) -> str:
    """The annotation text of one failure (unescaped)."""
    row = failure.row
    result = failure.result
    if failure.kind == "sample":
        figure = "rel_unexplained" if result.tolerance.gate == "explained" else "rel_error"
        return (
            f"{row['id']} ({row['source']}): end-to-end {figure} {fmt(row['value'])} > "
            f"{fmt(row['tolerance'])}; every layer passes its own check, the leak accumulates over layers"
        )
    bias = f", bias {row['bias_mode']}" if row["bias_mode"] not in ("absorb", "-") else ""
    head = f"{row['id']} ({row['op']}, {row['rule']}{bias})"
    if row["verdict"] == "non_finite":
        what = "NaN/inf in the relevance"
    elif row["verdict"] == "unexplained":
        what = f"unexplained rel_residual {fmt(row['rel_residual'])} above the {result.dtype} rounding bound"
    else:
        what = f"{failure.metric} {fmt(row[failure.metric])} > {fmt(row['tolerance'])}"
    text = f"{head}: {what}"
    if row.get("hint"):
        text += f"; {row['hint']}"
    samples = len(result.samples)
    text += f" ({row.get('failing_samples', '?')} of {samples} samples fail"
    # an annotation anchored to a config line does not show which model it is about
    return text + (f"; {result.model_path})" if _SOURCE.match(row.get("rule_source") or "") else ")")


def annotations(results, limit: int = 10, env=None) -> list[str]:
    """``::error`` lines for the ``limit`` worst failures, plus a ``::notice`` when some were left out."""
    env = env if env is not None else os.environ
    failures = ranked_failures(list(results))
    lines = []
    for failure in failures[: max(limit, 0)]:
        props = _anchor(failure, env)
        title = TITLES.get(failure.verdict, TITLES["fail"])
        if failure.kind == "sample":
            title = "lrpaudit: end-to-end conservation"
        props["title"] = title
        prop_text = ",".join(f"{key}={escape_property(safe(value))}" for key, value in props.items())
        lines.append(f"::error {prop_text}::{escape_data(safe(message(failure)))}")
    left = len(failures) - len(lines)
    if left > 0:
        lines.append(
            f"::notice title={escape_property('lrpaudit')}::"
            + escape_data(f"{left} more failing checks not annotated: see the job summary or the JSON report")
        )
    return lines


def append_step_summary(markdown: str, env=None) -> bool:
    """Append ``markdown`` to ``$GITHUB_STEP_SUMMARY`` if it is set; returns whether it wrote.

    The text is cut (at a line end, with a note) so that it stays below GitHub's 1 MiB per step.
    """
    env = env if env is not None else os.environ
    target = env.get("GITHUB_STEP_SUMMARY")
    if not target:
        return False
    data = markdown if markdown.endswith("\n") else markdown + "\n"
    budget = SUMMARY_LIMIT - 4096
    if len(data.encode("utf-8")) > budget:
        cut = data.encode("utf-8")[:budget].decode("utf-8", errors="ignore")
        cut = cut[: cut.rfind("\n") + 1]
        cut += "\n</details>\n" * max(cut.count("<details>") - cut.count("</details>"), 0)
        data = cut + "\n_(summary truncated to fit GitHub's 1 MiB limit: see the JSON report)_\n"
    try:
        with open(target, "a", encoding="utf-8") as out:
            out.write(data)
    except OSError as exc:
        raise OutputError(f"cannot append to $GITHUB_STEP_SUMMARY ({target}): {exc.strerror or exc}") from exc
    return True
