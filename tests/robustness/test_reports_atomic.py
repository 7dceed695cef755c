"""Reports all or nothing: several reports are one commit, and what cannot be written is refused before the audit.

- a disk that fills up on the second report (a real 64 KiB tmpfs when this test may mount one, else a real
  file-size limit, RLIMIT_FSIZE, which the kernel enforces the same way) leaves none of them and the old ones as
  they were; so does a rename that fails (a folder appears where the third report goes) and a job summary that
  cannot be appended;
- the same path for two reports, relevance maps of two models whose names share a stem, a report over one of the
  command's own inputs: refused before the audit;
- a report path that is a character device, a FIFO or a link to one is refused, and the device stays a device;
- SIGTERM is Ctrl-C's twin: no report, no traceback, exit 143.
"""

from __future__ import annotations

import contextlib
import os
import resource
import signal
import stat
import subprocess
import threading
from pathlib import Path

import numpy as np
import pytest

from lrpaudit import api
from tests.helpers.cli import run_cli
from tests.helpers.robustness import assert_one_line_error, check, mlp, write

NAMES = ("maps.npz", "audit.json", "audit.xml", "audit.md")


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    return write(mlp(), tmp_path_factory.mktemp("atomic") / "mlp.onnx")


def _all_reports(folder: Path) -> list:
    maps, json_path, xml, md = (folder / name for name in NAMES)
    return ["--save-relevance", maps, "--json-report", json_path, "--junit-xml", xml, "--markdown", md]


def _previous(folder: Path) -> dict[str, str]:
    for name in NAMES[1:]:
        (folder / name).write_text(f"previous {name}")
    return {p.name: p.read_text() for p in folder.iterdir()}


@contextlib.contextmanager
def _full_disk(folder: Path, room: int, mount: bool):
    """``folder`` with about ``room`` bytes left: a tmpfs of that size if asked and this process may mount one,
    else a per-process file-size limit (writes past it fail with EFBIG, as a full disk fails with ENOSPC)."""
    folder.mkdir()
    command = ["mount", "-t", "tmpfs", "-o", f"size={room}", "tmpfs", str(folder)]
    mounted = mount and subprocess.run(command, capture_output=True).returncode == 0
    if mounted:
        try:
            yield "tmpfs"
        finally:
            subprocess.run(["umount", "-l", str(folder)], capture_output=True)
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    old_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (room, hard))
    try:
        yield "rlimit"
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, old_handler)


@pytest.mark.parametrize("mount", [True, False], ids=["tmpfs", "file-size-limit"])
def test_a_full_disk_on_the_second_report_leaves_none(model, tmp_path, mount):
    inputs = tmp_path / "x.npy"
    np.save(inputs, np.random.default_rng(0).standard_normal((400, 3)).astype(np.float32))
    out = tmp_path / "out"
    with _full_disk(out, 64 * 1024, mount) as how:
        before = _previous(out)
        # the relevance maps (~20 kB) fit, the JSON report (400 samples, ~400 kB) does not
        result = check(model, "--inputs", inputs, "--batch-size", "400", *_all_reports(out))
        after = {p.name: p.read_text() for p in out.iterdir()}
    line = assert_one_line_error(result, "cannot write", str(out / "audit.json"))
    assert ("space" in line) if how == "tmpfs" else ("too large" in line or "File too large" in line), line
    assert after == before  # no new file, no temp file, every old report untouched


def test_a_failed_rename_takes_back_the_reports_already_renamed(model, tmp_path, monkeypatch):
    before = _previous(tmp_path)
    real = api.propagate

    def and_then_a_folder_appears(*args, **kwargs):  # where the JUnit file goes, after the checks passed
        (tmp_path / "audit.xml").unlink()
        (tmp_path / "audit.xml").mkdir()
        (tmp_path / "audit.xml" / "keep").write_text("x")
        return real(*args, **kwargs)

    monkeypatch.setattr(api, "propagate", and_then_a_folder_appears)
    result = check(model, "--random", "2", *_all_reports(tmp_path))
    assert_one_line_error(result, "cannot write", "audit.xml")
    assert (tmp_path / "audit.json").read_text() == before["audit.json"]  # renamed, then taken back
    assert (tmp_path / "audit.md").read_text() == before["audit.md"]
    assert not (tmp_path / "maps.npz").exists()  # renamed into place, then removed again
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(before)


def test_a_job_summary_that_cannot_be_appended_takes_back_the_reports(model, tmp_path):
    before = _previous(tmp_path)
    env = {"GITHUB_ACTIONS": "true", "GITHUB_STEP_SUMMARY": str(tmp_path / "no-such-folder" / "summary.md")}
    result = run_cli("check", model, "--random", "2", *_all_reports(tmp_path), env=env)
    assert result.exit_code == 2 and "GITHUB_STEP_SUMMARY" in result.stderr, result.output
    assert {p.name: p.read_text() for p in tmp_path.iterdir()} == before


def test_conflicting_report_paths_are_refused_before_the_audit(model, tmp_path, monkeypatch):
    ran = []
    monkeypatch.setattr(api, "propagate", lambda *a, **k: ran.append(1))
    same = tmp_path / "same.out"
    assert_one_line_error(
        check(model, "--random", "2", "--json-report", same, "--markdown", same),
        "--json-report and --markdown",
    )
    link = tmp_path / "link.out"
    link.symlink_to(same)  # one file under two names
    assert_one_line_error(
        check(model, "--random", "2", "--junit-xml", same, "--json-report", link), "would both write"
    )
    twin = tmp_path / "twin"
    twin.mkdir()
    other = write(mlp(), twin / "mlp.onnx")  # same stem: both maps would be maps.mlp.npz
    line = assert_one_line_error(
        check(model, other, "--random", "2", "--save-relevance", tmp_path / "maps.npz"), "maps.mlp.npz"
    )
    assert "--save-relevance" in line
    config = tmp_path / "lrp.yaml"
    config.write_text("version: 1\nextends: epsilon\n")
    for flag, target in (("--json-report", model), ("--markdown", config)):
        line = assert_one_line_error(
            check(model, "--random", "2", "-c", config, flag, target), "a file this command reads"
        )
    assert config.read_text() == "version: 1\nextends: epsilon\n" and ran == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link.out", "lrp.yaml", "twin"]


def test_devices_and_fifos_are_refused_as_report_paths(model, tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    link = tmp_path / "to-null.json"
    link.symlink_to(os.devnull)
    for target in (Path(os.devnull), fifo, link):
        for flag in ("--json-report", "--junit-xml", "--markdown", "--save-relevance"):
            line = assert_one_line_error(
                check(model, "--random", "2", flag, target), f"cannot write {target}"
            )
            assert "character device" in line or "FIFO" in line
    assert stat.S_ISCHR(os.stat(os.devnull).st_mode) and stat.S_ISFIFO(os.stat(fifo).st_mode)
    assert os.path.islink(link)
    batch = tmp_path / "batch.yaml"
    batch.write_text(
        f"version: 1\nmodels:\n  - {{path: {model}, random: 1}}\nconfigs:\n  - preset: epsilon\n"
    )
    assert_one_line_error(run_cli("batch", batch, "--junit-xml", os.devnull), "character device")


def test_sigterm_is_like_ctrl_c(model, tmp_path, monkeypatch):
    """The signal really arrives (os.kill) while the audit runs; the handler turns it into an unwinding."""
    assert threading.current_thread() is threading.main_thread()  # signal handlers live in the main thread
    real = api.propagate

    def terminated(*args, **kwargs):
        result = real(*args, **kwargs)
        os.kill(os.getpid(), signal.SIGTERM)
        return result

    monkeypatch.setattr(api, "propagate", terminated)
    before = signal.getsignal(signal.SIGTERM)
    result = check(model, "--random", "2", *_all_reports(tmp_path))
    assert result.exit_code == 143 and "Traceback" not in result.output, result.output
    assert result.stderr.strip() == "lrpaudit: terminated (SIGTERM)"
    assert list(tmp_path.iterdir()) == []
    assert signal.getsignal(signal.SIGTERM) is before  # the command's handler is gone after it
