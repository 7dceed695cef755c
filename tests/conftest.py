"""Test-session settings and shared fixtures.

* one torch thread per worker (``pytest -n 2`` runs two workers on two cores);
* ``export_cache``: model files made once per test session and shared by every xdist worker (exports take
  seconds each; made under a file lock, in the session's common temp folder);
* ``reference_export``: the reference models of ``helpers/reference_models.py`` exported through that cache;
* ``SERIAL_MODULES``: modules whose tests run in one xdist worker, in order (see the scheduler hook below).
* ``transformer_export``: the transformer models of ``helpers/transformer_models.py`` (legacy / dynamo ONNX, traced
  TorchScript) through that cache.
* ``torchvision_export``: the reduced torchvision CNN families of ``helpers/torchvision_models.py``, per format.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from filelock import FileLock

torch.set_num_threads(1)

# Test modules whose tests must run in one xdist worker, in file order: they share a costly module fixture (a Dask
# cluster) or read what an earlier test wrote (the README's merge reads the shard reports of the lines before).
# xdist's `--dist loadgroup` cannot do it here: it tags items by rewriting `item._nodeid`, which pytest 9 no
# longer reads (the group mark is silently ignored).
SERIAL_MODULES = (
    "tests/scaleout/test_dask_executor.py",
    "tests/cli/test_readme.py",
    "tests/crosscheck/test_lxt_crosscheck.py",  # one LXT subprocess for the module
)


def pytest_xdist_make_scheduler(config, log):
    """``-n N`` (``--dist load``): load scheduling, one test at a time, except that each of SERIAL_MODULES is one
    unit of work (and, being the largest units, is sent first)."""
    if config.getvalue("dist") != "load":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class SerialModules(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            module = nodeid.split("::", 1)[0]
            return module if module in SERIAL_MODULES else nodeid

    return SerialModules(config, log)


@pytest.fixture(scope="session")
def export_cache(tmp_path_factory) -> Callable[[str, Callable[[Path], object]], Path]:
    """``export_cache(name, make)``: the path of file ``name``, written by ``make(path)`` the first time any
    worker asks for it in this session."""
    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent  # shared by the workers of one session
    folder = root / "export-cache"
    folder.mkdir(exist_ok=True)

    def get(name: str, make: Callable[[Path], object]) -> Path:
        path = folder / name
        done = folder / f"{name}.done"
        with FileLock(str(folder / f"{name}.lock")):
            if not done.exists():
                make(path)
                done.touch()
        return path

    return get


@pytest.fixture(scope="session")
def reference_export(export_cache):
    """``reference_export(model, exporter, opset, fold=True)`` -> the ONNX export of a reference model."""
    from tests.helpers.reference_models import build, example_input, export_onnx

    def get(name: str, exporter: str, opset: int, fold: bool = True) -> Path:
        def make(path: Path) -> None:
            dynamo = exporter == "dynamo"
            export_onnx(build(name), example_input(name), path, dynamo=dynamo, opset=opset, fold=fold)

        return export_cache(f"{name}-{exporter}-{opset}-{'fold' if fold else 'nofold'}.onnx", make)

    return get


@pytest.fixture(scope="session")
def transformer_export(export_cache):
    """``transformer_export(model, fmt, attn="eager", opset=None)`` -> the file of a transformer model
    (``fmt``: legacy | dynamo | traced; ``opset`` for dynamo, default 20)."""
    from tests.helpers.transformer_models import export

    def get(name: str, fmt: str, attn: str = "eager", opset: int | None = None) -> Path:
        suffix = "pt" if fmt == "traced" else "onnx"
        tag = f"-opset{opset}" if opset else ""
        return export_cache(
            f"tf-{name}-{attn}-{fmt}{tag}.{suffix}", lambda path: export(name, fmt, path, attn, opset)
        )

    return get


@pytest.fixture(scope="session")
def torchvision_export(export_cache):
    """``torchvision_export(family, fmt)`` -> the family's file in ``fmt`` (legacy, dynamo, traced)."""
    from tests.helpers import torchvision_models as tv

    models: dict[str, object] = {}

    def get(name: str, fmt: str) -> Path:
        def make(path: Path) -> None:
            if name not in models:
                models[name] = tv.build(name)
            tv.export(models[name], name, fmt, path)

        suffix = ".pt" if fmt == "traced" else ".onnx"
        return export_cache(f"torchvision-{name}-{fmt}{suffix}", make)

    return get
