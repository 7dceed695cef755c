"""Input arrays and files: wrong shapes, dtypes, NaN/Inf, pickles, empty audits, streaming in batches."""

from __future__ import annotations

import tracemalloc
import types

import numpy as np
import pytest

from lrpaudit import api
from lrpaudit.errors import InputError
from lrpaudit.inputs import file_batches
from lrpaudit.rules import Rule
from tests.helpers.onnx_builders import make_model
from tests.helpers.robustness import (
    assert_one_line_error,
    check,
    model_file,
    no_traceback,
    node,
    save_npy,
    strict_json,
)

INPUT_CASES = {
    "wrong rank": (np.zeros((2, 3, 4), np.float32), ["expects shape [?, 3]", "got [2, 3, 4]"]),
    "wrong size": (np.zeros((2, 5), np.float32), ["expects size 3 on axis 1", "[2, 5]"]),
    "a scalar": (np.float32(1.0), ["expects shape [?, 3]", "got []"]),
    "strings": (np.array([["a", "b", "c"]]), ["dtype <U1", "floating-point"]),
    "complex": (np.ones((2, 3), np.complex64), ["dtype complex64"]),
    "bool": (np.ones((2, 3), bool), ["dtype bool"]),
    "object array": (np.array([[1, 2, 3]], dtype=object), ["pickled Python objects", "never unpickles"]),
    "NaN": (np.array([[1, 2, 3], [1, np.nan, 3]], np.float32), ["NaN or Inf", "(sample 1)"]),
    "Inf": (np.array([[np.inf, 2, 3]], np.float32), ["NaN or Inf", "(sample 0)"]),
}


@pytest.mark.parametrize("case", list(INPUT_CASES))
def test_bad_input_array_exits_2(files, tmp_path, case):
    array, needles = INPUT_CASES[case]
    path = save_npy(tmp_path, array)
    assert_one_line_error(
        check(files.onnx, "--inputs", path), str(path), "'x'" if case != "object array" else "", *needles
    )


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64, np.int8, np.uint8, np.int32, np.int64])
def test_numeric_dtypes_are_converted_deliberately(files, tmp_path, dtype):
    """float64 stays float64, other floats and integers become float32 as they are (no scaling)."""
    data = np.array([[1, 2, 3], [0, 5, 7]]).astype(dtype)
    path = save_npy(tmp_path, data)
    batch = next(file_batches(path, {"x": [None, 3]}, 8))
    assert batch.arrays["x"].dtype == (np.float64 if dtype == np.float64 else np.float32)
    np.testing.assert_array_equal(batch.arrays["x"], data.astype(np.float64))
    result = check(files.onnx, "--inputs", path, "-q")
    assert result.exit_code in (0, 1), result.output


def test_one_sample_without_batch_axis_is_accepted(files, tmp_path):
    result = check(files.onnx, "--inputs", save_npy(tmp_path, np.ones(3, np.float32)), "-q")
    assert result.exit_code in (0, 1), result.output
    assert "1 samples" in result.stderr or "1/1 samples" in result.stderr


def test_input_files_and_folders(files, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert_one_line_error(check(files.onnx, "--inputs", empty), str(empty), "no .npy or .npz files")
    absent = tmp_path / "absent.npy"
    assert_one_line_error(check(files.onnx, "--inputs", absent), str(absent), "no such file")
    text = tmp_path / "notes.npy"
    text.write_text("hello")
    assert_one_line_error(check(files.onnx, "--inputs", text), str(text), "not a .npy or .npz file")
    garbage = tmp_path / "garbage.npy"
    garbage.write_bytes(b"\x93NUMPY\x07\x07garbage")
    assert_one_line_error(check(files.onnx, "--inputs", garbage), str(garbage), "not a readable .npy/.npz")


def test_npz_inputs(tmp_path):
    model = make_model(
        [node("Add", ["a", "b"], ["y"], name="add")], {"a": [None, 3], "b": [None, 3]}, ["y"], 17
    )
    path = model_file(tmp_path, model)
    wrong = tmp_path / "wrong.npz"
    np.savez(wrong, a=np.ones((2, 3), np.float32), c=np.ones((2, 3), np.float32))
    assert_one_line_error(check(path, "--inputs", wrong), str(wrong), "missing arrays for graph inputs ['b']")
    counts = tmp_path / "counts.npz"
    np.savez(counts, a=np.ones((2, 3), np.float32), b=np.ones((3, 3), np.float32))
    assert_one_line_error(check(path, "--inputs", counts), "different sample counts [2, 3]")
    objects = tmp_path / "objects.npz"
    np.savez(objects, a=np.array([[1, 2, 3]], dtype=object), b=np.ones((1, 3), np.float32))
    assert_one_line_error(check(path, "--inputs", objects), str(objects), "'a'", "pickled")
    one = save_npy(tmp_path, np.ones((2, 3), np.float32))
    assert_one_line_error(check(path, "--inputs", one), "inputs ['a', 'b']", "give a .npz")


def test_input_shape_flag_errors(files):
    assert_one_line_error(
        check(files.onnx, "--random", "2", "--input-shape", "foo=1,3"), "--input-shape names ['foo']", "['x']"
    )
    assert_one_line_error(
        check(files.onnx, "--random", "2", "--input-shape", "1,3,4,5"), "does not fit input 'x'"
    )
    for bad in ("1,-3", "1,0", "a,b"):
        result = check(files.onnx, "--random", "2", "--input-shape", bad)
        no_traceback(result)
        assert result.exit_code == 2 and "--input-shape" in result.output


def test_zero_samples_is_an_empty_audit(files, tmp_path):
    path = save_npy(tmp_path, np.zeros((0, 3), np.float32))
    assert_one_line_error(
        check(files.onnx, "--inputs", path), str(files.onnx), "checked nothing", str(path), "--allow-empty"
    )
    report = tmp_path / "empty.json"
    result = check(files.onnx, "--inputs", path, "--allow-empty", "--json-report", report, "-q")
    assert result.exit_code == 0, result.output
    data = strict_json(report.read_text())
    assert data["summary"]["samples"] == 0 and data["runs"][0]["notes"] == [
        "the audit checked nothing: no samples"
    ]


def test_graph_without_layers_is_an_empty_audit(tmp_path):
    path = model_file(
        tmp_path, make_model([node("Identity", ["x"], ["y"], name="id")], {"x": [None, 3]}, ["y"], 17)
    )
    assert_one_line_error(check(path, "--random", "2"), str(path), "no layers", "--allow-empty")
    result = check(path, "--random", "2", "--allow-empty", "--format", "json")
    assert result.exit_code == 0, result.output
    assert "the graph has no layers" in strict_json(result.stdout)["runs"][0]["notes"][0]


def test_file_batches_are_lazy(tmp_path):
    """A folder streams file by file, and a .npy batch by batch: a broken second file is only reached later."""
    np.save(tmp_path / "a.npy", np.ones((5, 3), np.float32))
    (tmp_path / "b.npy").write_bytes(b"\x93NUMPY garbage")
    batches = file_batches(tmp_path, {"x": [None, 3]}, 2)
    assert isinstance(batches, types.GeneratorType)
    sizes = [next(batches).size for _ in range(3)]
    assert sizes == [2, 2, 1]
    with pytest.raises(InputError, match="b.npy"):
        next(batches)


def test_file_batches_memory_holds_one_batch(tmp_path):
    """2000 samples x 2000 features (16 MB) read in batches of 50: peak allocation is about one batch."""
    path = tmp_path / "many.npy"
    data = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(2000, 2000))
    data[:] = 1.0
    data.flush()
    del data
    tracemalloc.start()
    try:
        seen = sum(batch.size for batch in file_batches(path, {"x": [None, 2000]}, 50))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    one_batch = 50 * 2000 * 4
    assert seen == 2000
    assert peak < 4 * one_batch, f"peak {peak / 2**20:.1f} MiB for batches of {one_batch / 2**20:.1f} MiB"


def test_more_samples_than_one_batch_stream_through_the_audit(files, tmp_path):
    path = save_npy(tmp_path, np.random.default_rng(2).standard_normal((2000, 3)).astype(np.float32))
    seen = []
    result = api.audit(
        files.onnx, Rule("epsilon"), path, batch_size=50, on_batch=lambda done, size: seen.append(size)
    )
    assert len(result.samples) == 2000 and seen == [50] * 40
    assert [s.index for s in result.samples] == list(range(2000))


def test_bad_device_is_a_usage_error(files):
    result = check(files.onnx, "--random", "2", "--device", "tpu")
    no_traceback(result)
    assert result.exit_code == 2
    with pytest.raises(InputError, match="not a device"):
        api.audit(files.onnx, Rule("epsilon"), random=1, device="tpu")


def test_api_arrays_are_checked_like_files(files):
    good = np.random.default_rng(3).standard_normal((4, 3))
    result = api.audit(files.onnx, Rule("epsilon"), good, batch_size=3)
    assert [s.source for s in result.samples] == ["array#0", "array#1", "array#2", "array#3"]
    bad = good.copy()
    bad[2, 1] = np.nan
    cases = [
        (bad, r"array: input 'x' contains NaN or Inf values \(sample 2\)"),
        (np.ones((2, 5)), r"array: input 'x' expects size 3 on axis 1"),
        (np.array([["a", "b", "c"]]), r"dtype <U1"),
        ({"y": good}, r"no array given for graph inputs \['x'\]"),
    ]
    for inputs, pattern in cases:
        with pytest.raises(InputError, match=pattern):
            api.audit(files.onnx, Rule("epsilon"), inputs)
