"""TorchScript archives are programs: their code is read and checked before ``torch.jit.load`` runs any of it.

Real archives, scripted here: a module whose scripted ``__setstate__`` writes a file with ``torch.save`` (torch
runs it while loading), and scripted functions that call ``torch.from_file`` (which creates the file it maps),
``print`` and ``torch.manual_seed`` from ``forward``. Each side effect leaves a marker file; without
``--trust-code`` the archive is refused naming the entry, line and reason, and the marker never appears (the
refusal comes before any code runs). With ``--trust-code`` (or ``trust_code: true`` in a manifest) the same
archive loads and the marker appears: the check, not luck, is what stopped it. Zip bombs (entries inflating far
beyond their compressed size, forged declared sizes) are refused by the sizes the zip declares, before inflating.
"""

from __future__ import annotations

import struct
import zipfile
from pathlib import Path
from typing import Tuple  # noqa: UP035 (TorchScript reads typing.Tuple)

import pytest
import torch
from torch import nn

from lrpaudit.frontends.torchscript.archive import MAX_RATIO
from lrpaudit.frontends.torchscript.code_check import check_source
from tests.helpers.cli import run_cli
from tests.helpers.robustness import assert_one_line_error

MARKERS: dict[str, str] = {}


class SetState(nn.Module):
    """``__setstate__`` runs inside torch.jit.load: it writes the marker, then restores the module."""

    def __init__(self, marker: str) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(2, 3))
        self.marker = marker

    def forward(self, x):
        return torch.nn.functional.linear(x, self.weight)

    @torch.jit.export
    def __getstate__(self) -> Tuple[torch.Tensor, str, bool]:  # noqa: UP006 (TorchScript reads typing.Tuple)
        return (self.weight, self.marker, self.training)

    @torch.jit.export
    def __setstate__(self, state: Tuple[torch.Tensor, str, bool]) -> None:  # noqa: UP006
        torch.save(torch.ones(1), state[1])
        self.weight = state[0]
        self.marker = state[1]
        self.training = state[2]


@torch.jit.script
def map_a_file(x: torch.Tensor, name: str) -> torch.Tensor:
    mapped = torch.from_file(name, True, 1)  # shared=True creates the file
    return x + 0.0 * mapped.sum()


class FromFile(nn.Module):
    def __init__(self, marker: str) -> None:
        super().__init__()
        self.fc = nn.Linear(3, 2)
        self.marker = marker

    def forward(self, x):
        return self.fc(map_a_file(x, self.marker))


class Prints(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(3, 2)

    def forward(self, x):
        print("\x1b]0;printed by the model\x07")
        torch.manual_seed(0)
        return self.fc(x)


@pytest.fixture(scope="module")
def archives(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("ts_code")
    paths = {}
    for name, make in (
        ("setstate", lambda marker: SetState(marker)),
        ("from_file", lambda marker: FromFile(marker)),
        ("prints", lambda marker: Prints()),
    ):
        marker = folder / f"MARKER_{name}"
        MARKERS[name] = str(marker)
        paths[name] = folder / f"{name}.pt"
        torch.jit.script(make(str(marker)).eval()).save(str(paths[name]))
        if marker.exists():  # scripting may have run nothing; the saved archive is what is tested
            marker.unlink()
    return paths


@pytest.mark.parametrize(
    ("name", "needles"),
    [
        ("setstate", ["defines __setstate__, which torch runs while loading"]),
        ("from_file", ["calls torch.from_file", "side effects"]),
        ("prints", ["calls print()"]),
    ],
)
@pytest.mark.parametrize("command", ["check", "inspect", "init"])
def test_refused_before_any_code_runs(archives, tmp_path, name, needles, command):
    path = archives[name]
    args = {
        "check": ("check", path, "--random", "1", "--input-shape", "1,3"),
        "inspect": ("inspect", path, "--input-shape", "1,3"),
        "init": ("init", path, "--input-shape", "1,3", "-o", tmp_path / "lrp.yaml"),
    }[command]
    line = assert_one_line_error(
        run_cli(*args), str(path), "refused before loading", "--trust-code", *needles
    )
    assert ".py:" in line  # the entry and line that were found
    assert not Path(MARKERS[name]).exists()
    assert not (tmp_path / "lrp.yaml").exists()


def test_trust_code_runs_it_so_the_check_is_what_stopped_it(archives, tmp_path):
    for name in ("setstate", "from_file"):
        marker = Path(MARKERS[name])
        result = run_cli(
            "check", archives[name], "--random", "1", "--input-shape", "1,3", "--trust-code", "-q"
        )
        assert result.exit_code in (0, 1), result.output
        assert marker.exists(), name
        marker.unlink()


def test_a_manifest_trusts_per_model(archives, tmp_path):
    manifest = tmp_path / "batch.yaml"
    body = "version: 1\nmodels:\n  - {{path: {path}, random: 1, input_shape: '1,3'{trust}}}\nconfigs:\n  - preset: epsilon\n"
    manifest.write_text(body.format(path=archives["from_file"], trust=""))
    refused = run_cli("batch", manifest, "-q")
    assert refused.exit_code == 2 and "refused before loading" in refused.stderr
    assert not Path(MARKERS["from_file"]).exists()
    manifest.write_text(body.format(path=archives["from_file"], trust=", trust_code: true"))
    trusted = run_cli("batch", manifest, "-q")
    assert trusted.exit_code in (0, 1), trusted.output
    assert Path(MARKERS["from_file"]).exists()
    Path(MARKERS["from_file"]).unlink()


@pytest.mark.parametrize(
    ("source", "finding"),
    [
        ("def f(x):\n  return torch.ops.aten.save(x, 'p')\n", "calls torch.ops.aten.save"),
        ("def f(x):\n  return ops.c10d.broadcast_(x)\n", "outside aten and prim"),
        ("def f(x):\n  return ops.debugprims.load_tensor('n')\n", "outside aten and prim"),
        ("def f(x):\n  return ops.prim.rpc_async('w', g, (x,))\n", "calls ops.prim.rpc_async"),
        ("def f(x):\n  return torch.distributed.all_reduce(x)\n", "refers to torch.distributed"),
        ("class C:\n  h : __torch__.torch.classes.my.Handle\n", "custom C++ class"),
        ("def f(x):\n  return getattr(torch, 'save')(x, 'p')\n", "looks up an attribute of torch by name"),
        ("def f(x):\n  torch.seed()\n", "calls torch.seed"),
        ("def f(x):\n  return x +\n", "cannot be parsed"),
    ],
)
def test_the_check_finds_every_member_of_the_class(source, finding):
    assert any(finding in str(f) for f in check_source("archive/code/x.py", source)), source


def test_what_ordinary_models_compile_to_passes():
    """Scripted transformer layers, no_grad blocks, warnings and asserts are ordinary TorchScript."""

    class Ordinary(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.layer = nn.TransformerEncoderLayer(8, 2, 16, batch_first=True)

        def forward(self, x):
            with torch.no_grad():
                y = self.layer(x)
            if x.dim() != 3:
                raise ValueError("expected a batch of sequences")
            return y

    import io

    buffer = io.BytesIO()
    torch.jit.save(torch.jit.script(Ordinary().eval()), buffer)
    with zipfile.ZipFile(buffer) as archive:
        sources = {n: archive.read(n).decode() for n in archive.namelist() if n.endswith(".py")}
    assert len(sources) > 3
    assert [str(f) for entry, text in sources.items() for f in check_source(entry, text)] == []


# ---------------------------------------------------------------- zip bombs


@pytest.fixture(scope="module")
def traced(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("ts_zip") / "mlp.pt"
    with torch.no_grad():
        torch.jit.trace(
            nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2)).eval(), torch.randn(1, 3)
        ).save(str(path))
    return path


def _with_entry(source: Path, target: Path, name: str, data: bytes, level: int = 9) -> Path:
    with zipfile.ZipFile(source) as src, zipfile.ZipFile(target, "w") as dst:
        root = src.namelist()[0].split("/")[0]
        for item in src.infolist():
            dst.writestr(item, src.read(item.filename))
        dst.writestr(f"{root}/{name}", data, compress_type=zipfile.ZIP_DEFLATED, compresslevel=level)
    return target


def _forge_size(path: Path, name: str, size: int) -> None:
    """Rewrite the uncompressed size that the local and central headers declare for entry ``name``."""
    raw = bytearray(path.read_bytes())
    encoded = name.encode()
    for signature, offset in ((b"PK\x03\x04", 22), (b"PK\x01\x02", 24)):
        at = raw.find(signature)
        while at != -1:
            name_at = at + (30 if signature == b"PK\x03\x04" else 46)
            if raw[name_at : name_at + len(encoded)] == encoded:
                raw[at + offset : at + offset + 4] = struct.pack("<I", size)
            at = raw.find(signature, at + 4)
    path.write_bytes(bytes(raw))


def test_an_entry_that_inflates_far_beyond_its_size_is_refused(traced, tmp_path):
    bomb = _with_entry(traced, tmp_path / "bomb.pt", "extra/zeros", bytes(8 * 2**20))  # 8 MiB in ~8 kB
    assert bomb.stat().st_size < 64 * 1024
    assert_one_line_error(run_cli("check", bomb, "--random", "1"), str(bomb), "zip bomb", f"{MAX_RATIO}:1")


def test_a_forged_declared_size_is_refused_before_inflating(traced, tmp_path):
    path = _with_entry(traced, tmp_path / "forged.pt", "extra/small", b"x" * 1000, level=0)
    root = zipfile.ZipFile(path).namelist()[0].split("/")[0]
    _forge_size(path, f"{root}/extra/small", 2**31)
    assert_one_line_error(run_cli("check", path, "--random", "1"), str(path), "zip bomb")


def test_a_stored_entry_larger_than_the_archive_is_refused(traced, tmp_path):
    path = tmp_path / "stored.pt"
    with zipfile.ZipFile(traced) as src, zipfile.ZipFile(path, "w") as dst:
        for item in src.infolist():
            dst.writestr(item, src.read(item.filename))
    data_entry = next(n for n in zipfile.ZipFile(path).namelist() if "/data/" in n)
    _forge_size(path, data_entry, 2**30)
    assert_one_line_error(run_cli("check", path, "--random", "1"), str(path), "forged archive")


def test_an_ordinary_deflated_entry_is_fine(traced, tmp_path):
    text = "".join(f"# line {i}: code compresses a few times, never a thousand\n" for i in range(40_000))
    path = _with_entry(traced, tmp_path / "ok.pt", "extra/notes.txt", text.encode(), level=9)
    ratio = len(text) / zipfile.ZipFile(path).getinfo(zipfile.ZipFile(path).namelist()[-1]).compress_size
    assert 1 < ratio < MAX_RATIO
    result = run_cli("check", path, "--random", "1", "-q")
    assert result.exit_code in (0, 1), result.output
