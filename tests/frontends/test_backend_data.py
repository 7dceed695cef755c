"""The onnx package's own backend test data (pytorch-converted and pytorch-operator), found in the installed package.

Each case is ``model.onnx`` plus ``test_data_set_*/input_*.pb`` and ``output_*.pb``. A case in scope must load
(``load_onnx`` + ``.graph(shapes of the stored inputs)``) and reproduce every stored output; a case out of scope
must be refused at load time with a clear ``ModelError`` (usually ``UnsupportedOpError``) whose message names the
reason. So the out-of-scope list below is itself checked: if lrpaudit learns an op, its entry must go.

Tolerance: max |IR - stored| <= 1e-5 of max |stored| (float32 kernels in a different summation order; the worst
case measured is ~4e-7). The IR runs in the stored inputs' precision: a few pytorch-operator cases use float64
inputs (filled with uninitialized memory when the data was generated, so values such as 1e-310 or 1e+198 occur;
non-finite values must then match position for position).

These files are opset 6 (a few 9) and ir_version 3: older than the opset 9 lrpaudit promises, but they load,
including their initializers-as-graph-inputs layout and the pre-opset-7 ``broadcast``/``axis`` attributes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper

from lrpaudit.errors import ModelError
from lrpaudit.forward import embed_inputs, run_forward
from lrpaudit.frontends.onnx import load_onnx

DATA = Path(onnx.__file__).parent / "backend" / "test" / "data"
CASES = sorted(
    p for folder in ("pytorch-converted", "pytorch-operator") for p in (DATA / folder).glob("test_*")
)
RTOL = 1e-5

# case -> (substring the error message must contain, why it is out of scope)
OUT_OF_SCOPE = {
    "test_operator_non_float_params": (
        "reads the integer input",
        "an integer input used as numbers (added to a constant), not as token ids of an embedding lookup",
    ),
    "test_PReLU_1d": ("PRelu", "PRelu: a learned-slope activation is not in the IR op set"),
    "test_PReLU_1d_multiparam": ("PRelu", "PRelu: not in the IR op set"),
    "test_PReLU_2d": ("PRelu", "PRelu: not in the IR op set"),
    "test_PReLU_2d_multiparam": ("PRelu", "PRelu: not in the IR op set"),
    "test_PReLU_3d": ("PRelu", "PRelu: not in the IR op set"),
    "test_PReLU_3d_multiparam": ("PRelu", "PRelu: not in the IR op set"),
    "test_SELU": ("Selu", "Selu: not in the IR op set"),
    "test_operator_selu": ("Selu", "Selu: not in the IR op set"),
    "test_PoissonNLLLLoss_no_reduce": ("Exp", "a loss: Exp of an activation is not in the IR op set"),
    "test_operator_exp": ("Exp", "Exp of an activation is not in the IR op set"),
    "test_Softmin": ("Neg", "Neg of an activation is not in the IR op set"),
    "test_operator_basic": ("Neg", "Neg of an activation is not in the IR op set"),
    "test_operator_params": ("Neg", "Neg of an activation is not in the IR op set"),
    "test_operator_symbolic_override_nested": ("Neg", "Neg of an activation is not in the IR op set"),
    "test_Softsign": ("Abs", "Softsign: Abs and division by an activation are not in the IR op set"),
    "test_operator_sqrt": ("Sqrt", "Sqrt of an activation is not in the IR op set"),
    "test_operator_pow": ("Pow", "Pow of two activations is not in the IR op set"),
    "test_operator_max": ("Max", "elementwise Max of two activations is not in the IR op set"),
    "test_operator_min": ("Min", "elementwise Min of two activations is not in the IR op set"),
    "test_operator_addmm": ("Gemm", "Gemm of two activations (no constant weight)"),
    "test_operator_mm": ("Gemm", "Gemm of two activations (no constant weight)"),
    "test_operator_chunk": ("batch axis", "Split of a 1-D input along axis 0, the batch axis"),
    "test_operator_reduced_sum": ("ReduceSum", "ReduceSum is not in the IR op set"),
    "test_operator_reduced_sum_keepdim": ("ReduceSum", "ReduceSum is not in the IR op set"),
    "test_operator_repeat": ("Tile", "Tile of an activation is not in the IR op set"),
    "test_operator_repeat_dim_overflow": ("Tile", "Tile of an activation is not in the IR op set"),
}
IN_SCOPE = [case for case in CASES if case.name not in OUT_OF_SCOPE]


def read_tensor(path: Path) -> np.ndarray:
    tensor = onnx.TensorProto()
    tensor.ParseFromString(path.read_bytes())
    return numpy_helper.to_array(tensor)


def data_sets(case: Path) -> list[tuple[list[np.ndarray], list[np.ndarray]]]:
    sets = []
    for folder in sorted(case.glob("test_data_set_*")):
        inputs = [
            read_tensor(p) for p in sorted(folder.glob("input_*.pb"), key=lambda p: int(p.stem.split("_")[1]))
        ]
        outputs = [
            read_tensor(p)
            for p in sorted(folder.glob("output_*.pb"), key=lambda p: int(p.stem.split("_")[1]))
        ]
        sets.append((inputs, outputs))
    return sets


def relative_error(ours: np.ndarray, ref: np.ndarray) -> float:
    """max |ours - ref| / max |ref| over finite entries; non-finite entries must agree exactly."""
    ours, ref = ours.astype(np.float64), ref.astype(np.float64)
    assert ours.shape == ref.shape
    finite = np.isfinite(ref)
    assert np.array_equal(np.isfinite(ours), finite)
    assert np.array_equal(ours[~finite], ref[~finite], equal_nan=True)
    if not finite.any():
        return 0.0
    scale = np.abs(ref[finite]).max()
    diff = np.abs(ours[finite] - ref[finite]).max()
    return float(diff / scale) if scale > 0 else float(diff)


def test_discovery_finds_the_installed_cases():
    assert len(CASES) >= 100, f"expected the onnx backend data under {DATA}"
    names = {case.name for case in CASES}
    assert set(OUT_OF_SCOPE) <= names, f"stale out-of-scope entries: {set(OUT_OF_SCOPE) - names}"
    assert len(IN_SCOPE) >= 80


@pytest.mark.parametrize("case", IN_SCOPE, ids=lambda p: p.name)
def test_in_scope_case_reproduces_stored_outputs(case):
    model = load_onnx(case / "model.onnx")
    for inputs, outputs in data_sets(case):
        feeds = dict(zip(model.input_names, inputs, strict=True))
        graph = model.graph({name: a.shape for name, a in feeds.items()})
        dtype = torch.float64 if any(a.dtype == np.float64 for a in inputs) else torch.float32
        # token ids (the Embedding cases) are looked up in the table: the IR starts at the embeddings
        tensors = embed_inputs(graph, {name: torch.from_numpy(a) for name, a in feeds.items()}, dtype)
        values = run_forward(graph, tensors, dtype)
        assert len(graph.outputs) == len(outputs)
        for name, expected in zip(graph.outputs, outputs):
            assert relative_error(values[name].numpy(), expected) <= RTOL


@pytest.mark.parametrize("case", sorted(OUT_OF_SCOPE), ids=str)
def test_out_of_scope_case_is_refused_clearly(case):
    path = next(p for p in CASES if p.name == case) / "model.onnx"
    needle, _reason = OUT_OF_SCOPE[case]
    model = load_onnx(path)
    inputs, _ = data_sets(path.parent)[0]
    with pytest.raises(ModelError) as info:
        model.graph({name: a.shape for name, a in zip(model.input_names, inputs)})
    message = str(info.value)
    assert needle in message
    assert str(path) in message and "\n" not in message
