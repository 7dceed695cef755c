"""Bounded work: file types and sizes are checked before anything is read, and a file that is not a config is
never quoted.

Every file lrpaudit reads is tried as something else: a FIFO (a read would block forever), a character device
(``/dev/zero`` never ends), a folder, a file far over the size limit, a link to a device. Each is refused at once
with one ``lrpaudit: error:`` line naming the file and what it is or the limit (exit 2). ``extends:`` may name only
presets and ``.yaml`` files inside the extending file's folder, and no error ever prints the content of a file
that is not a config: a secret-looking file named anywhere (``extends``, ``-c``, a manifest) stays unquoted.
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import numpy as np
import pytest

from lrpaudit.config.yaml_loader import MAX_YAML_BYTES
from tests.helpers.robustness import assert_one_line_error, check, externalize, invoke, mlp, write

SECRET = "hunter2-s3cr3t"


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    return write(mlp(), tmp_path_factory.mktemp("bounded") / "mlp.onnx")


def _fifo(path: Path) -> Path:
    os.mkfifo(path)
    return path


def _specials(folder: Path, name: str) -> dict[str, Path]:
    """A FIFO, a character device, a link to one, and a folder, each under a file name that fits the role."""
    link = folder / f"link-{name}"
    link.symlink_to("/dev/zero")
    (folder / f"dir-{name}").mkdir()
    return {"a FIFO": _fifo(folder / f"fifo-{name}"), "a character device": Path("/dev/zero"), "link": link}


@pytest.mark.parametrize("role", ["model", "config", "manifest", "inputs", "baseline"])
def test_fifos_devices_and_links_to_them_are_refused_without_reading(model, tmp_path, role):
    name = {
        "model": "m.onnx",
        "config": "c.yaml",
        "manifest": "b.yaml",
        "inputs": "x.npy",
        "baseline": "a.json",
    }
    for what, path in _specials(tmp_path, name[role]).items():
        args = {
            "model": ("check", path, "--random", "1"),
            "config": ("check", model, "--random", "1", "-c", path),
            "manifest": ("batch", path),
            "inputs": ("check", model, "--inputs", path),
            "baseline": ("check", model, "--random", "1", "--baseline", path),
        }[role]
        kind = "a character device" if what == "link" else what
        assert_one_line_error(invoke(*args), str(path), f"is {kind}", "refused")


def test_a_fifo_inside_an_inputs_folder_and_as_external_data(model, tmp_path):
    folder = tmp_path / "inputs"
    folder.mkdir()
    np.save(folder / "a.npy", np.ones((2, 3), np.float32))
    _fifo(folder / "b.npy")
    assert_one_line_error(check(model, "--inputs", folder), str(folder / "b.npy"), "FIFO")
    external, _ = externalize(mlp(), "w.data")
    _fifo(tmp_path / "w.data")
    path = write(external, tmp_path / "ext.onnx")
    assert_one_line_error(check(path, "--random", "1"), "'w.data'", "FIFO")


@pytest.mark.parametrize("role", ["config", "manifest"])
def test_yaml_over_the_size_limit_is_refused_before_parsing(model, tmp_path, role):
    path = tmp_path / "big.yaml"
    with open(path, "w") as out:  # 8 MB of a valid-looking document: a parse would take minutes
        out.write("version: 1\nrules:\n")
        out.write("  - {match: {name: n}, rule: epsilon}\n" * (8 * 2**20 // 38))
    args = ("check", model, "--random", "1", "-c", path) if role == "config" else ("batch", path)
    line = assert_one_line_error(invoke(*args), str(path), "bytes is over the", "limit")
    assert f"{MAX_YAML_BYTES // 2**20} MiB" in line


def test_yaml_with_too_many_nodes_stops_while_composing(model, tmp_path, monkeypatch):
    """Composing is the slow part of PyYAML: it stops at the limit (lowered here to keep the test fast)."""
    monkeypatch.setattr("lrpaudit.config.yaml_loader.MAX_COMPOSED", 500)
    path = tmp_path / "wide.yaml"
    path.write_text("version: 1\nrules: [" + "1," * 1000 + "1]\n")
    assert_one_line_error(check(model, "--random", "1", "-c", path), str(path), "document too large")


def test_a_billion_laughs_config_is_refused_not_expanded(model, tmp_path):
    lines = ["version: 1", "a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{k}: &a{k} [" + ", ".join([f"*a{k - 1}"] * 10) + "]" for k in range(1, 9)]
    path = tmp_path / "laughs.yaml"
    path.write_text("\n".join(lines) + "\n")
    assert_one_line_error(check(model, "--random", "1", "-c", path), str(path), "document too large")


@pytest.mark.parametrize(
    ("target", "needle"),
    [
        ("/etc/passwd", "absolute paths are refused"),
        ("~/.ssh/config.yaml", "absolute paths are refused"),
        ("../secret.env", "not a .yaml or .yml file"),
        ("../secret.yaml", "leaves this file's folder"),
        ("sub/../../secret.yaml", "leaves this file's folder"),
        ("link.yaml", "leaves this file's folder"),  # a symlink pointing out of the folder
        ("secret.env", "not a .yaml or .yml file"),
    ],
)
def test_extends_names_only_presets_and_yaml_files_inside_the_folder(model, tmp_path, target, needle):
    (tmp_path / "secret.env").write_text(f"TOKEN={SECRET}\n")
    (tmp_path / "secret.yaml").write_text(f"version: 1\ntoken: {SECRET}\n")
    folder = tmp_path / "cfg"
    folder.mkdir()
    (folder / "secret.env").write_text(f"TOKEN={SECRET}\n")
    (folder / "link.yaml").symlink_to(tmp_path / "secret.yaml")
    config = folder / "lrp.yaml"
    config.write_text(f"version: 1\nextends: {target}\n")
    line = assert_one_line_error(check(model, "--random", "1", "-c", config), str(config), "extends", needle)
    assert SECRET not in line


@pytest.mark.parametrize(
    "content",
    [
        f"root:x:0:0:{SECRET}:/root:/bin/bash\n",  # a scalar
        f"API_KEY: {SECRET}\nAPI_KEY: again\n",  # a mapping without version (and a duplicate key)
        f"- {SECRET}\n- b\n",  # a list
        f"token: *{SECRET}\n",  # a syntax error that names an alias
        f'token: "{SECRET}\\q"\n',  # a bad escape after the secret
        f"{SECRET}: !!python/object:os.system x\n",  # a tag
    ],
)
def test_no_error_quotes_a_file_that_is_not_a_config(model, tmp_path, content):
    secret = tmp_path / "creds.yaml"
    secret.write_text(content)
    inside = tmp_path / "lrp.yaml"
    inside.write_text("version: 1\nextends: creds.yaml\n")
    manifest = tmp_path / "batch.yaml"
    manifest.write_text(
        f"version: 1\nmodels:\n  - {{path: {model}, random: 1}}\nconfigs:\n  - path: creds.yaml\n"
    )
    for args in (
        ("check", model, "--random", "1", "-c", secret),
        ("check", model, "--random", "1", "-c", inside),
    ):
        line = assert_one_line_error(invoke(*args), "creds.yaml")
        assert SECRET not in line, line
    line = assert_one_line_error(invoke("batch", manifest), "creds.yaml")
    assert SECRET not in line, line


def test_a_npz_member_that_declares_more_than_it_holds(model, tmp_path):
    path = tmp_path / "x.npz"
    np.savez(path, x=np.ones((2, 3), np.float32))
    with zipfile.ZipFile(path) as src:
        member = bytearray(src.read("x.npy"))
    end = member.index(b"\n")  # the header is padded with spaces: grow the shape, drop as many spaces
    header = bytes(member[:end]).replace(b"(2, 3)", b"(200000000, 3)")
    member = header[: end - len(header)] + member[end:] if len(header) > end else member
    assert b"(200000000, 3)" in member and member.index(b"\n") == end
    forged = tmp_path / "forged.npz"
    with zipfile.ZipFile(forged, "w") as out:
        out.writestr("x.npy", bytes(member))
    assert_one_line_error(check(model, "--inputs", forged), str(forged), "declares shape [200000000, 3]")
