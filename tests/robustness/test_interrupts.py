"""Failures after the audit started: a bad file late in the inputs, Ctrl-C (also inside a writer), internal errors,
out of memory, a newline in a name. Nothing half-written, never a bare traceback.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from lrpaudit import api
from tests.helpers.robustness import (
    assert_one_line_error,
    check,
    copy,
    mlp,
)

# ================================================================ reports: atomic, nothing half-written

REPORTS = ("audit.json", "audit.xml", "audit.md", "maps.npz")


def _report_args(folder: Path) -> list:
    json_path, xml, md, npz = (folder / name for name in REPORTS)
    return ["--json-report", json_path, "--junit-xml", xml, "--markdown", md, "--save-relevance", npz]


def test_a_bad_file_after_good_ones_leaves_no_report(files, tmp_path):
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    np.save(inputs / "a.npy", np.ones((6, 3), np.float32))
    np.save(inputs / "b.npy", np.ones((2, 4), np.float32))
    out = tmp_path / "out"
    out.mkdir()
    result = check(files.onnx, "--inputs", inputs, "--batch-size", "2", *_report_args(out))
    assert_one_line_error(result, str(inputs / "b.npy"), "expects size 3 on axis 1")
    assert list(out.iterdir()) == []


def test_an_unwritable_report_fails_before_the_audit(files, tmp_path, monkeypatch):
    ran = []
    monkeypatch.setattr(api, "propagate", lambda *a, **k: ran.append(1))
    args = _report_args(tmp_path)
    args[1] = tmp_path / "missing" / "audit.json"
    result = check(files.onnx, "--random", "2", *args)
    assert_one_line_error(result, "cannot write", "missing")
    assert ran == [] and list(tmp_path.iterdir()) == []
    result = check(files.onnx, "--random", "2", "--save-relevance", tmp_path)
    assert_one_line_error(result, "cannot write", "it is a folder")


def test_ctrl_c_exits_130_without_traceback_or_reports(files, tmp_path, monkeypatch):
    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(api, "propagate", interrupt)
    result = check(files.onnx, "--inputs", files.inputs, *_report_args(tmp_path))
    assert result.exit_code == 130, result.output
    assert "Traceback" not in result.output and result.stderr.strip() == "lrpaudit: interrupted"
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("which", ["json", "npz"])
def test_ctrl_c_during_a_report_write_leaves_nothing_half_written(files, tmp_path, monkeypatch, which):
    """Interrupted inside the writer: the temp file is removed and an existing report stays as it was."""
    target = tmp_path / ("audit.json" if which == "json" else "maps.npz")
    target.write_text("previous")
    if which == "json":
        import lrpaudit.reports._io as common

        def interrupted_replace(src, dst):
            raise KeyboardInterrupt

        monkeypatch.setattr(common.os, "replace", interrupted_replace)
        args = ["--json-report", target]
    else:
        real_write = np.lib.format.write_array
        written = []

        def interrupted_write(member, array, **kwargs):  # the first array is written, then Ctrl-C
            if written:
                raise KeyboardInterrupt
            written.append(real_write(member, array, **kwargs))

        monkeypatch.setattr(np.lib.format, "write_array", interrupted_write)
        args = ["--save-relevance", target]
    result = check(files.onnx, "--inputs", files.inputs, "-q", *args)
    assert result.exit_code == 130, result.output
    assert "Traceback" not in result.output
    assert target.read_text() == "previous"
    assert sorted(p.name for p in tmp_path.iterdir()) == [target.name]


def test_an_internal_error_exits_3_with_a_private_traceback_file(files, tmp_path, monkeypatch):
    monkeypatch.setattr("lrpaudit.cli._common.tempfile.gettempdir", lambda: str(tmp_path))
    planted = tmp_path / "victim.txt"
    planted.write_text("keep me")
    os.symlink(planted, tmp_path / "lrpaudit-traceback.txt")  # a planted link in a shared /tmp

    def boom(*args, **kwargs):
        raise RuntimeError("simulated bug\nsecond line")

    monkeypatch.setattr(api, "propagate", boom)
    result = check(files.onnx, "--random", "2")
    assert result.exit_code == 3
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "RuntimeError: simulated bug (traceback in" in lines[0]
    assert planted.read_text() == "keep me"
    log = Path(lines[0].split("traceback in ", 1)[1].split(";", 1)[0])
    assert log.parent == tmp_path and "simulated bug" in log.read_text()


@pytest.mark.parametrize(
    "error",
    [
        MemoryError(),
        RuntimeError("[enforce fail at alloc_cpu.cpp:127] DefaultCPUAllocator: can't allocate memory: 8 TB"),
        torch.OutOfMemoryError("CUDA out of memory"),
    ],
)
def test_out_of_memory_is_a_limit_not_a_bug(files, monkeypatch, error):
    def exhausted(*args, **kwargs):
        raise error

    monkeypatch.setattr(api, "propagate", exhausted)
    assert_one_line_error(check(files.onnx, "--random", "2"), "out of memory", "--batch-size")


def test_a_name_with_a_newline_stays_on_one_line(tmp_path):
    model = copy(mlp())
    model.graph.node[1].op_type = "\nRelu"
