"""JUnit XML for GitLab and Jenkins (``--junit-xml``).

Layout: ``<testsuites>`` holds one ``<testsuite>`` per model x config (``name="lrpaudit: model.onnx [label]"``,
properties with the model hash, config, dtype, gate and tolerances). Each suite has one ``<testcase>`` per node
(aggregated over samples: the worst sample decides; ``name="<node id> [<op>/<rule>]"``) and one per sample for the
end-to-end figure (``name="end-to-end sample <index> (<source>)"``). ``classname`` is the model path (GitLab's
Suite column); when one model appears in several runs the run's label is appended so that (classname, name) pairs
stay unique, as GitLab keeps only the first of duplicates.

Every non-passing check is a ``<failure>`` (``type`` = ConservationError, UnexplainedResidual or
NonFiniteRelevance; EndToEndConservation for a sample that fails only end to end) whose ``message`` and text carry
the numbers: the gated figure and the tolerance, the largest category and its share, the fix hint, the tolerance
that would have passed. ``<error>`` is not used: a failed audit is a test failure, and the Surefire/Jenkins schema
(junit-10.xsd) has no ``<error>`` child of ``<testcase>``. Counts (``tests``, ``failures``, ``errors``=0,
``skipped``=0) are consistent per suite and summed on ``<testsuites>``; ``time`` has at most 3 decimals
(``SUREFIRE_TIME``). No audit is timed per node, so test cases carry ``time="0.000"`` and the suite the audit's
wall time.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from datetime import datetime, timezone
from pathlib import Path

from ..display import xml
from ..verdicts import CATEGORY_WORDS, category_share, gated_metric, worst_row
from ._format import fmt, model_name, run_label
from ._io import atomic_write_text

FAILURE_TYPES = {
    "fail": "ConservationError",
    "unexplained": "UnexplainedResidual",
    "non_finite": "NonFiniteRelevance",
}


def _text(value) -> str:
    """One safe line (:func:`lrpaudit.display.xml`): ids and paths come from files, and XML 1.0 has no place for
    most control characters anyway."""
    return xml(value)


def _lines(lines: list[str]) -> str:
    """A failure's text: each of our lines made safe on its own, then joined (a newline inside a name stays
    escaped)."""
    return "\n".join(xml(line) for line in lines)


def _time(seconds) -> str:
    return f"{max(float(seconds or 0.0), 0.0):.3f}"


def _share(row: dict) -> str:
    category = row.get("largest_category")
    if not category:
        return "none"
    return f"{CATEGORY_WORDS[category]} ({fmt(category_share(row))}% of the received relevance)"


def layer_failure(row: dict, gate: str, samples: int) -> tuple[str, str]:
    """(message, text) of a failing aggregated layer row."""
    metric = gated_metric(gate)
    verdict = row["verdict"]
    if verdict == "non_finite":
        head = f"non-finite relevance (NaN/inf) under {row['rule']}"
    elif verdict == "unexplained":
        head = f"unexplained residual: rel_residual {fmt(row['rel_residual'])} above the rounding bound"
    else:
        head = f"{metric} {fmt(row[metric])} > tolerance {fmt(row['tolerance'])}"
    message = f"{head}; largest category: {_share(row)}"
    if row.get("hint"):
        message += f"; {row['hint']}"
    lines = [
        f"node {row['id']} (op {row['op']}, rule {row['rule']}, bias {row['bias_mode']}, from {row['rule_source']})",
        f"verdict {verdict} under the {gate} gate; {row.get('failing_samples', 0)} of {samples} samples fail; "
        f"worst sample {row.get('worst_sample', '-')}",
        f"rel_error {fmt(row['rel_error'], 6)}  rel_residual {fmt(row['rel_residual'], 6)}  "
        f"tolerance {fmt(row['tolerance'])}  passing tolerance {fmt(row.get('passing_tolerance'))}",
        f"r_received {fmt(row['r_received'], 8)}  r_passed {fmt(row['r_passed'], 8)}  leak {fmt(row['leak'], 6)}",
        f"absorbed_bias {fmt(row['absorbed_bias'], 6)}  absorbed_stabilizer {fmt(row['absorbed_stabilizer'], 6)}  "
        f"absorbed_softmax {fmt(row['absorbed_softmax'], 6)}  degenerate {fmt(row['degenerate'], 6)}  "
        f"residual {fmt(row['residual'], 6)}  scale {fmt(row['scale'], 6)}",
        f"largest category: {_share(row)}",
    ]
    if row.get("hint"):
        lines.append(f"hint: {row['hint']}")
    return message, _lines(lines)


def sample_failure(result, position: int) -> tuple[str, str, str]:
    """(type, message, text) of a failing sample."""
    sample = result.samples[position]
    tolerance = result.tolerance
    explained = tolerance.gate == "explained"
    figure = sample.end_to_end(tolerance.gate)
    name = "rel_unexplained" if explained else "rel_error"
    failing = [row for row in result.sample_layer_rows(position) if row["verdict"] != "pass"]
    end_to_end = f"end-to-end {name} {fmt(figure)} (tolerance {fmt(tolerance.end_to_end_rtol)})"
    if failing:
        metric = gated_metric(tolerance.gate)
        worst = worst_row(failing, tolerance.gate)
        message = (
            f"{len(failing)} layer check(s) fail on this sample, worst {worst['id']} ({worst['rule']}): "
            f"{metric} {fmt(worst[metric])} > {fmt(worst['tolerance'])}; {end_to_end}"
        )
        kind = FAILURE_TYPES.get(sample.verdict, "ConservationError")
    else:
        message = f"{end_to_end}: relevance leaks between output and input"
        kind = "NonFiniteRelevance" if sample.verdict == "non_finite" else "EndToEndConservation"
    totals = "  ".join(f"{key} {fmt(sample.totals.get(key), 6)}" for key in CATEGORY_WORDS)
    lines = [
        f"sample {sample.index} ({sample.source}), target class {sample.target}, verdict {sample.verdict}",
        f"r_output {fmt(sample.r_output, 8)}  r_input {fmt(sample.r_input, 8)}  leak {fmt(sample.leak, 6)}",
        f"rel_error {fmt(sample.rel_error, 6)}  rel_unexplained {fmt(sample.rel_unexplained, 6)}  "
        f"end_to_end_rtol {fmt(tolerance.end_to_end_rtol)}",
        f"totals: {totals}",
    ]
    lines += [f"layer {row['id']}: {row['verdict']}, {row.get('hint') or ''}".rstrip(", ") for row in failing]
    return kind, message, _lines(lines)


def _classnames(results) -> list[str]:
    paths = [str(result.model_path) for result in results]
    names = []
    for index, result in enumerate(results):
        name = paths[index]
        if paths.count(name) > 1:
            name = f"{name} [{run_label(result)}]"
        names.append(name)
    return [name if names.count(name) == 1 else f"{name} #{i}" for i, name in enumerate(names)]


def _suite(result, classname: str, timestamp: str) -> ET.Element:
    gate = result.tolerance.gate
    label = run_label(result)
    suite = ET.Element("testsuite", name=_text(f"lrpaudit: {model_name(result)} [{label}]"))
    config = result.config or {}
    props = {
        "model": result.model_path,
        "model_format": result.model_format,
        "model_sha256": result.model_sha256,
        "config": config.get("path") or label,
        "config_sha256": config.get("sha256") or "",
        "dtype": result.dtype,
        "device": result.device,
        "gate": gate,
        "layer_rtol": result.tolerance.layer_rtol,
        "end_to_end_rtol": result.tolerance.end_to_end_rtol,
        "samples": len(result.samples),
        "verdict": result.verdict,
    }
    if result.fidelity is not None:
        fid = result.fidelity
        props["fidelity"] = (
            f"{fid.reference}: max_rel_diff {fmt(fid.max_rel_diff)} ({'ok' if fid.passed else 'FAILED'})"
        )
    properties = ET.SubElement(suite, "properties")
    for key, value in props.items():
        ET.SubElement(properties, "property", name=key, value=_text(value))
    tests = failures = 0
    samples = len(result.samples)
    for row in result.layer_rows():
        case = ET.SubElement(
            suite,
            "testcase",
            classname=_text(classname),
            name=_text(f"{row['id']} [{row['op']}/{row['rule']}]"),
        )
        case.set("time", _time(0))
        tests += 1
        if row["verdict"] != "pass":
            failures += 1
            message, text = layer_failure(row, gate, samples)
            failure = ET.SubElement(
                case, "failure", type=FAILURE_TYPES[row["verdict"]], message=_text(message)
            )
            failure.text = text
    for position, sample in enumerate(result.samples):
        name = f"end-to-end sample {sample.index} ({sample.source})"
        case = ET.SubElement(suite, "testcase", classname=_text(classname), name=_text(name))
        case.set("time", _time(0))
        tests += 1
        if sample.verdict != "pass":
            failures += 1
            kind, message, text = sample_failure(result, position)
            failure = ET.SubElement(case, "failure", type=kind, message=_text(message))
            failure.text = text
    if result.notes:
        ET.SubElement(suite, "system-out").text = _lines([f"note: {note}" for note in result.notes])
    for key, value in (
        ("tests", tests),
        ("failures", failures),
        ("errors", 0),
        ("skipped", 0),
        ("time", _time(getattr(result, "elapsed_s", None))),
        ("timestamp", timestamp),
    ):
        suite.set(key, str(value))
    return suite


def build_junit(results) -> str:
    """The JUnit XML document (UTF-8 text with an XML declaration) for a list of AuditResults."""
    results = list(results)
    timestamp = datetime.now(timezone.utc).replace(microsecond=0, tzinfo=None).isoformat()
    root = ET.Element("testsuites", name="lrpaudit")
    totals = {"tests": 0, "failures": 0, "errors": 0}
    time = 0.0
    for result, classname in zip(results, _classnames(results)):
        suite = _suite(result, classname, timestamp)
        root.append(suite)
        for key in totals:
            totals[key] += int(suite.get(key))
        time += float(suite.get("time"))
    for key, value in totals.items():
        root.set(key, str(value))
    root.set("time", _time(time))
    ET.indent(root, space="  ")
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def write_junit(results, path) -> Path:
    """Build the document, then write it atomically (nothing half-written on failure)."""
    return atomic_write_text(path, build_junit(results))
