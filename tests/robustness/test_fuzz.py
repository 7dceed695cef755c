"""Fuzzing the inputs a user controls: mutated ONNX protobufs and YAML configs (also with alias bombs and huge
scalars), and TorchScript archives (damaged, or with entries that inflate far beyond their size).

Whatever the mutation, ``lrpaudit check`` either runs (exit 0 or 1) or refuses with exit 2 and one
``lrpaudit: error:`` line: never exit 3, never a traceback. The runs are bounded and derandomized so the file stays
fast (100 examples per strategy, a few seconds); ``LRPAUDIT_FUZZ_EXAMPLES=N`` runs N examples per strategy instead.
"""

from __future__ import annotations

import os

import numpy as np
import onnx
import pytest
import yaml
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from onnx import helper

from tests.helpers.robustness import assert_one_line_error, check, copy, no_traceback, small_cnn, write

EXAMPLES = int(os.environ.get("LRPAUDIT_FUZZ_EXAMPLES", "0")) or None
FUZZ = settings(
    max_examples=EXAMPLES or 100,
    deadline=None,
    derandomize=EXAMPLES is None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

OP_TYPES = sorted({schema.name for schema in onnx.defs.get_all_schemas()} | {"NoSuchOp", ""})
ODD_INTS = [0, 1, -1, 2, 3, 7, 255, 2**31 - 1, -(2**31), 2**62]


@pytest.fixture(scope="module")
def cnn_bytes() -> bytes:
    return small_cnn().SerializeToString()


@pytest.fixture
def folder(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz")


def assert_clean(result) -> None:
    """Ran (0/1) or refused cleanly (2, one error line)."""
    event(f"exit {result.exit_code}")  # pytest --hypothesis-show-statistics shows the spread
    no_traceback(result)
    if result.exit_code == 2:
        assert_one_line_error(result)


def audit(path, *extra) -> object:
    return check(path, "--random", "2", "-q", *extra)


# ---------------------------------------------------------------- raw bytes


@FUZZ
@given(data=st.data())
def test_byte_mutations_of_an_onnx_file(cnn_bytes, folder, data):
    raw = bytearray(cnn_bytes)
    kind = data.draw(st.sampled_from(["flip", "truncate", "insert", "overwrite"]))
    if kind == "truncate":
        raw = raw[: data.draw(st.integers(0, len(raw) - 1))]
    else:
        for _ in range(data.draw(st.integers(1, 8))):
            at = data.draw(st.integers(0, len(raw) - 1))
            if kind == "flip":
                raw[at] ^= 1 << data.draw(st.integers(0, 7))
            elif kind == "insert":
                raw[at:at] = data.draw(st.binary(min_size=1, max_size=8))
            else:
                raw[at] = data.draw(st.integers(0, 255))
    path = folder / "model.onnx"
    path.write_bytes(bytes(raw))
    assert_clean(audit(path))


@pytest.fixture(scope="module")
def archive_bytes(tmp_path_factory) -> bytes:
    import torch
    from torch import nn

    path = tmp_path_factory.mktemp("fuzz_ts") / "mlp.pt"
    net = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2)).eval()
    with torch.no_grad():
        torch.jit.trace(net, torch.randn(1, 3)).save(str(path))
    return path.read_bytes()


@FUZZ
@given(data=st.data())
def test_byte_mutations_of_a_torchscript_archive(archive_bytes, folder, data):
    """Damaged zip headers, names and entries: refused before or by torch.jit.load, never a crash."""
    raw = bytearray(archive_bytes)
    if data.draw(st.booleans()):
        raw = raw[: data.draw(st.integers(1, len(raw) - 1))]
    for _ in range(data.draw(st.integers(1, 6))):
        raw[data.draw(st.integers(0, len(raw) - 1))] = data.draw(st.integers(0, 255))
    path = folder / "model.pt"
    path.write_bytes(bytes(raw))
    assert_clean(audit(path))


# ---------------------------------------------------------------- field edits through the onnx helper API


def _edit_op_type(model, data):
    target = data.draw(st.sampled_from(list(model.graph.node)))
    target.op_type = data.draw(st.sampled_from(OP_TYPES))


def _drop_input(model, data):
    target = data.draw(st.sampled_from([n for n in model.graph.node if n.input]))
    del target.input[data.draw(st.integers(0, len(target.input) - 1))]


def _rename_input(model, data):
    target = data.draw(st.sampled_from(list(model.graph.node)))
    names = [v for n in model.graph.node for v in [*n.input, *n.output]] + ["", "dangling"]
    if target.input:
        target.input[data.draw(st.integers(0, len(target.input) - 1))] = data.draw(st.sampled_from(names))


def _edit_attribute(model, data):
    target = data.draw(
        st.sampled_from([n for n in model.graph.node if n.attribute] or list(model.graph.node))
    )
    name = data.draw(
        st.sampled_from(
            [a.name for a in target.attribute]
            + ["axis", "kernel_shape", "strides", "pads", "transA", "epsilon", "group", "auto_pad"]
        )
    )
    value = data.draw(
        st.one_of(
            st.sampled_from(ODD_INTS),
            st.lists(st.sampled_from(ODD_INTS), max_size=5),
            st.floats(allow_nan=True, allow_infinity=True, width=32),
            st.sampled_from(["SAME_UPPER", "VALID", "NOTSET", "bogus"]),
        )
    )
    kept = [a for a in target.attribute if a.name != name]
    del target.attribute[:]
    empty = isinstance(value, list) and not value
    attribute = helper.make_attribute(name, value, attr_type=onnx.AttributeProto.INTS if empty else None)
    target.attribute.extend([*kept, attribute])


def _edit_dims(model, data):
    tensors = [*model.graph.input, *model.graph.output]
    if data.draw(st.booleans()):
        init = data.draw(st.sampled_from(list(model.graph.initializer)))
        dims = data.draw(st.lists(st.sampled_from([0, 1, 2, 3, 8, -1]), max_size=4))
        del init.dims[:]
        init.dims.extend(dims)
        return
    shape = data.draw(st.sampled_from(tensors)).type.tensor_type.shape
    for dim in shape.dim:
        if data.draw(st.booleans()):
            dim.dim_value = data.draw(st.sampled_from([0, 1, 2, 5, 6, 7, 10**6]))
    if data.draw(st.booleans()) and shape.dim:
        del shape.dim[data.draw(st.integers(0, len(shape.dim) - 1))]


def _edit_opset(model, data):
    model.opset_import[0].version = data.draw(st.sampled_from([1, 6, 7, 9, 11, 13, 18, 21, 40, 1000]))


def _edit_elem_type(model, data):
    value = data.draw(st.sampled_from([*model.graph.input, *model.graph.output]))
    value.type.tensor_type.elem_type = data.draw(st.sampled_from([0, 1, 2, 6, 7, 9, 10, 11, 16, 99]))


EDITS = [_edit_op_type, _drop_input, _rename_input, _edit_attribute, _edit_dims, _edit_opset, _edit_elem_type]


@FUZZ
@given(data=st.data())
def test_field_edits_of_an_onnx_model(folder, data):
    model = copy(small_cnn())
    for edit in data.draw(st.lists(st.sampled_from(EDITS), min_size=1, max_size=3)):
        edit(model, data)
    path = write(model, folder / "model.onnx")
    assert_clean(audit(path))


# ---------------------------------------------------------------- YAML configs

BASE_CONFIG = {
    "version": 1,
    "extends": "epsilon-plus-flat",
    "explain": "logits",
    "target": "predicted",
    "init": "logit",
    "dtype": "float64",
    "bias": "absorb",
    "rules": [
        {"match": {"position": "first"}, "rule": "flat"},
        {"match": {"op": "conv"}, "rule": "zplus", "stabilizer": 1e-6},
        {"match": {"name": "fc*"}, "rule": "alphabeta", "alpha": 2, "beta": 1, "bias": "ignore"},
        {"match": {"op": ["linear", "conv"]}, "rule": "epsilon", "epsilon": 1e-6},
    ],
    "tolerance": {
        "gate": "strict",
        "layer_rtol": 1e-4,
        "end_to_end_rtol": 1e-3,
        "overrides": [{"match": {"name": "fc"}, "layer_rtol": 0.05}],
    },
}
KEYS = sorted(
    {"version", "extends", "rules", "match", "rule", "epsilon", "gamma", "alpha", "beta", "low", "high"}
    | {
        "stabilizer",
        "bias",
        "tolerance",
        "layer_rtol",
        "op",
        "name",
        "index",
        "position",
        "overrides",
        "gate",
    }
    | {"dtype", "init", "target", "explain", "bogus"}
)
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(KEYS + ["zero", "flat", "gamma", "zbox", "conv", "linear", "first", "last", "*", "../x"]),
    st.text(max_size=20),
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(KEYS), inner, max_size=3),
    max_leaves=6,
)


def _paths(value, prefix=()):
    yield prefix
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _paths(item, (*prefix, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _paths(item, (*prefix, index))


def _set(root, path, value, delete: bool):
    parent = root
    for part in path[:-1]:
        parent = parent[part]
    if delete:
        del parent[path[-1]]
    else:
        parent[path[-1]] = value


@FUZZ
@given(data=st.data())
def test_random_edits_of_a_yaml_config(cnn_bytes, folder, data):
    import copy as copying

    config = copying.deepcopy(BASE_CONFIG)
    for _ in range(data.draw(st.integers(1, 3))):
        paths = [p for p in _paths(config) if p]
        path = data.draw(st.sampled_from(paths))
        action = data.draw(st.sampled_from(["set", "delete", "add"]))
        if action == "add":
            parent = config
            for part in path[:-1]:
                parent = parent[part]
            if isinstance(parent, dict):
                parent[data.draw(st.sampled_from(KEYS))] = data.draw(VALUES)
            else:
                parent.append(data.draw(VALUES))
        else:
            _set(config, path, data.draw(VALUES), action == "delete")
    text = yaml.safe_dump(config, allow_unicode=True)
    if data.draw(st.booleans()):  # a few raw character edits on top: broken indentation, quotes, tabs
        chars = list(text)
        for _ in range(data.draw(st.integers(1, 3))):
            at = data.draw(st.integers(0, len(chars) - 1))
            chars[at] = data.draw(st.sampled_from(["\t", ":", "'", '"', "-", "[", "{", " ", "\n", "&", "*"]))
        text = "".join(chars)
    model = folder / "model.onnx"
    model.write_bytes(cnn_bytes)
    config_path = folder / "lrp.yaml"
    config_path.write_text(text, encoding="utf-8")
    assert_clean(audit(model, "-c", config_path))


def test_the_unmutated_inputs_run(cnn_bytes, folder):
    """The fuzz starting points are valid: the model and config audit to a verdict (exit 0 or 1)."""
    model = folder / "model.onnx"
    model.write_bytes(cnn_bytes)
    config = folder / "lrp.yaml"
    config.write_text(yaml.safe_dump(BASE_CONFIG))
    result = audit(model, "-c", config)
    assert result.exit_code in (0, 1), result.output
    np.testing.assert_equal(result.stdout, "")


# ---------------------------------------------------------------- YAML aliases and huge scalars

SMALL = settings(FUZZ, max_examples=EXAMPLES or 12)


@SMALL
@given(
    depth=st.integers(1, 9),
    fan=st.integers(1, 12),
    where=st.sampled_from(["rules", "tolerance", "bogus", "target", "extends"]),
)
def test_configs_with_aliases_expand_within_a_bound(cnn_bytes, folder, depth, fan, where):
    """Billion-laughs documents: each level repeats the one below ``fan`` times; past the node limit, exit 2."""
    lines = ["version: 1", "extends: epsilon", "l0: &l0 [x]"]
    for level in range(1, depth + 1):
        lines.append(f"l{level}: &l{level} [" + ", ".join([f"*l{level - 1}"] * fan) + "]")
    lines.append(f"{where}: *l{depth}")
    model, config = folder / "model.onnx", folder / "lrp.yaml"
    model.write_bytes(cnn_bytes)
    config.write_text("\n".join(lines) + "\n")
    result = audit(model, "-c", config)
    assert_clean(result)
    assert result.exit_code == 2  # unknown keys l0..: refused, whatever the expansion
    if fan**depth > 100_000:
        assert "document too large" in result.stderr


HUGE_SCALARS = st.one_of(
    st.integers(19, 6000).map(lambda n: "9" * n),  # past 64 bits, up to more digits than Python converts
    st.integers(1000, 50_000).map(lambda n: "'" + "a" * n + "'"),  # a long string
    st.sampled_from(["1e309", "-1e309", ".inf", ".nan", "1e-400", "0x" + "f" * 5000, "0o" + "7" * 5000]),
    st.integers(100, 1500).map(lambda n: "[" * n + "]" * n),  # nesting
    st.integers(100, 1500).map(lambda n: "{a: " * n + "1" + "}" * n),
)


@SMALL
@given(
    value=HUGE_SCALARS, key=st.sampled_from(["target", "tolerance.layer_rtol", "rules", "extends", "bias"])
)
def test_configs_with_huge_scalars(cnn_bytes, folder, value, key):
    if "." in key:
        outer, inner = key.split(".")
        text = f"version: 1\nextends: epsilon\n{outer}:\n  {inner}: {value}\n"
    else:
        text = f"version: 1\nextends: epsilon\n{key}: {value}\n"
    model, config = folder / "model.onnx", folder / "lrp.yaml"
    model.write_bytes(cnn_bytes)
    config.write_text(text)
    result = audit(model, "-c", config)
    assert_clean(result)
    assert result.exit_code == 2, result.output  # none of these is a valid setting


# ---------------------------------------------------------------- TorchScript archives with inflated entries


@settings(FUZZ, max_examples=EXAMPLES or 8)
@given(
    size=st.integers(0, 3 * 2**19),  # up to 1.5 MiB: both sides of the 1 MiB line past which ratios count
    pattern=st.sampled_from([b"\0", b"ab", b"code = torch.relu(x)\n", None]),
    level=st.sampled_from([0, 1, 9]),
    forged=st.one_of(st.none(), st.integers(0, 2**32 - 1)),
    name=st.sampled_from(["extra/blob", "code/__torch__/blob.py", "data/9", "constants.pkl"]),
)
def test_archives_with_inflated_entries(archive_bytes, folder, size, pattern, level, forged, name):
    """An entry that inflates (or claims to inflate) far beyond its compressed size is refused before anything is
    inflated; a plausible one is read like any other; never a crash."""
    import io
    import random
    import struct
    import zipfile

    payload = (
        random.Random(size).randbytes(size)
        if pattern is None
        else (pattern * (size // len(pattern) + 1))[:size]
    )
    source, out = zipfile.ZipFile(io.BytesIO(archive_bytes)), io.BytesIO()
    root = source.namelist()[0].split("/")[0]
    with zipfile.ZipFile(out, "w") as target:
        for item in source.infolist():
            if item.filename != f"{root}/{name}":
                target.writestr(item, source.read(item.filename))
        target.writestr(f"{root}/{name}", payload, compress_type=zipfile.ZIP_DEFLATED, compresslevel=level)
    raw = bytearray(out.getvalue())
    info = zipfile.ZipFile(io.BytesIO(bytes(raw))).getinfo(f"{root}/{name}")
    declared = info.file_size if forged is None else forged
    if forged is not None:  # rewrite the declared size in the local and central headers
        encoded = info.filename.encode()
        for signature, offset, skip in ((b"PK\x03\x04", 22, 30), (b"PK\x01\x02", 24, 46)):
            at = raw.find(signature)
            while at != -1:
                if raw[at + skip : at + skip + len(encoded)] == encoded:
                    raw[at + offset : at + offset + 4] = struct.pack("<I", forged)
                at = raw.find(signature, at + 4)
    path = folder / "model.pt"
    path.write_bytes(bytes(raw))
    result = audit(path)
    assert_clean(result)
    if declared > 2**20 and declared / max(info.compress_size, 1) > 100:
        assert result.exit_code == 2 and "zip bomb" in result.stderr, result.output
