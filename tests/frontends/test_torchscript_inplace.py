"""In-place aten ops in TorchScript files: each gives exactly the IR of its out-of-place twin.

Every converter kind that has an in-place twin in ``torch.ops.aten`` (enumerated from the converter table, so a new
converter with an in-place form must be added here) is written both ways in one module, ``Twin``, traced and
scripted, saved and loaded. Oracles: (1) the in-place archive really records the in-place kind (else nothing would
be tested); (2) its IR equals the out-of-place archive's node for node (op, attrs, params, ids); (3) both IR forwards
reproduce the ScriptModule (the fidelity check, float32). Before the fix, ``hardtanh_`` became a clip with max 0 and
``sub_`` an add: (2) and (3) fail on those.

Also: a converter that raises on a call's arguments is a ModelError naming the op and module path (exit 2, one
line), and an IR op that does not reproduce its aten op is an InternalError (exit 3, traceback saved).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lrpaudit.errors import InternalError, ModelError
from lrpaudit.fidelity import check_fidelity
from lrpaudit.frontends.torchscript.values import CONVERTERS
from tests.frontends.test_torchscript import MODES, RTOL_F32, load, save_torchscript
from tests.helpers.cli import assert_clean_error, run_cli

# functional kind -> the in-place kind the Twin module records for it
IN_PLACE = {
    "aten::add": "aten::add_",
    "aten::addmm": "aten::addmm_",
    "aten::alpha_dropout": "aten::alpha_dropout_",
    "aten::baddbmm": "aten::baddbmm_",
    "aten::clamp": "aten::clamp_",
    "aten::clamp_max": "aten::clamp_max_",
    "aten::clamp_min": "aten::clamp_min_",
    "aten::detach": "aten::detach_",
    "aten::div": "aten::div_",
    "aten::dropout": "aten::dropout_",
    "aten::elu": "aten::elu_",
    "aten::erf": "aten::erf_",
    "aten::feature_alpha_dropout": "aten::feature_alpha_dropout_",
    "aten::feature_dropout": "aten::feature_dropout_",
    "aten::gelu": "aten::gelu_",
    "aten::hardsigmoid": "aten::hardsigmoid_",
    "aten::hardswish": "aten::hardswish_",
    "aten::hardtanh": "aten::hardtanh_",
    "aten::leaky_relu": "aten::leaky_relu_",
    "aten::masked_fill": "aten::masked_fill_",
    "aten::mul": "aten::mul_",
    "aten::neg": "aten::neg_",
    "aten::pow": "aten::pow_",
    "aten::reciprocal": "aten::reciprocal_",
    "aten::relu": "aten::relu_",
    "aten::relu6": "aten::relu6_",
    "aten::rsqrt": "aten::rsqrt_",
    "aten::sigmoid": "aten::sigmoid_",
    "aten::silu": "aten::silu_",
    "aten::sqrt": "aten::sqrt_",
    "aten::square": "aten::square_",
    "aten::squeeze": "aten::squeeze_",
    "aten::sub": "aten::sub_",
    "aten::swapaxes": "aten::transpose_",  # TorchScript records swapaxes_ / swapdims_ as transpose_
    "aten::swapdims": "aten::transpose_",
    "aten::t": "aten::t_",
    "aten::tanh": "aten::tanh_",
    "aten::transpose": "aten::transpose_",
    "aten::unsqueeze": "aten::unsqueeze_",
}
# the tracer records detach_ as detach: in traced mode there is no in-place op left to check for
TRACED_AS_FUNCTIONAL = {"aten::detach"}
# cases with a second form (two activations instead of a constant operand)
CASES = sorted(IN_PLACE) + ["aten::add/act", "aten::sub/act", "aten::mul/act"]


class Twin(nn.Module):
    """``y = conv(x)`` (an activation with negative and positive entries), then one op, in place or not."""

    def __init__(self, op: str, in_place: bool):
        super().__init__()
        self.op = op
        self.in_place = in_place
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.weight = nn.Parameter(torch.randn(4 * 4 * 4, 5) * 0.1)
        mask = torch.zeros(1, 4, 4, 4, dtype=torch.bool)
        mask[..., 0] = True
        self.register_buffer("mask", mask)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: C901 (one branch per op, by design)
        y = self.conv(x)
        ip = self.in_place
        op = self.op
        if op == "aten::add":
            return y.add_(0.3, alpha=2.0) if ip else torch.add(y, 0.3, alpha=2.0)
        if op == "aten::add/act":
            z = torch.relu(y)
            return y.add_(z, alpha=-0.5) if ip else torch.add(y, z, alpha=-0.5)
        if op == "aten::sub":
            return y.sub_(0.3, alpha=2.0) if ip else torch.sub(y, 0.3, alpha=2.0)
        if op == "aten::sub/act":
            z = torch.relu(y)
            return y.sub_(z) if ip else torch.sub(y, z)
        if op == "aten::mul":
            return y.mul_(-0.7) if ip else torch.mul(y, -0.7)
        if op == "aten::mul/act":
            z = torch.tanh(y)  # (not sigmoid: y * sigmoid(y) is the SiLU pattern)
            return y.mul_(z) if ip else torch.mul(y, z)
        if op == "aten::div":
            return y.div_(4.0) if ip else torch.div(y, 4.0)
        if op == "aten::neg":
            return y.neg_() if ip else torch.neg(y)
        if op == "aten::addmm":
            flat = torch.flatten(y, 1)
            bias = torch.zeros(flat.shape[0], 5) + 0.25
            return (
                bias.addmm_(flat, self.weight, beta=2.0)
                if ip
                else torch.addmm(bias, flat, self.weight, beta=2.0)
            )
        if op == "aten::clamp":
            return y.clamp_(-0.2, 0.3) if ip else torch.clamp(y, -0.2, 0.3)
        if op == "aten::clamp_min":
            return y.clamp_min_(-0.2) if ip else torch.clamp_min(y, -0.2)
        if op == "aten::clamp_max":
            return y.clamp_max_(0.3) if ip else torch.clamp_max(y, 0.3)
        if op == "aten::hardtanh":
            return F.hardtanh(y, -0.2, 0.3, inplace=ip)
        if op == "aten::relu6":
            return F.relu6(y * 10.0, inplace=ip)
        if op == "aten::relu":
            return y.relu_() if ip else torch.relu(y)
        if op == "aten::sigmoid":
            return y.sigmoid_() if ip else torch.sigmoid(y)
        if op == "aten::tanh":
            return y.tanh_() if ip else torch.tanh(y)
        if op == "aten::erf":
            return y.erf_() if ip else torch.erf(y)
        if op == "aten::silu":
            return F.silu(y, inplace=ip)
        if op == "aten::hardswish":
            return F.hardswish(y * 5.0, inplace=ip)
        if op == "aten::hardsigmoid":
            return F.hardsigmoid(y * 5.0, inplace=ip)
        if op == "aten::leaky_relu":
            return F.leaky_relu(y, 0.1, inplace=ip)
        if op == "aten::elu":
            return F.elu(y, 0.5, inplace=ip)
        if op == "aten::gelu":
            return torch.ops.aten.gelu_(y) if ip else torch.ops.aten.gelu(y)
        if op == "aten::detach":
            return y.detach_() if ip else y.detach()
        if op == "aten::dropout":
            return F.dropout(y, 0.5, False, inplace=ip)
        if op == "aten::alpha_dropout":
            return F.alpha_dropout(y, 0.5, False, inplace=ip)
        if op == "aten::feature_dropout":
            return F.dropout2d(y, 0.5, False, inplace=ip)
        if op == "aten::feature_alpha_dropout":
            return F.feature_alpha_dropout(y, 0.5, False, inplace=ip)
        if op == "aten::squeeze":
            z = torch.unsqueeze(y, 2)
            return z.squeeze_(2) if ip else torch.squeeze(z, 2)
        if op == "aten::unsqueeze":
            return y.unsqueeze_(2) if ip else torch.unsqueeze(y, 2)
        if op == "aten::transpose":
            return y.transpose_(1, 3) if ip else torch.transpose(y, 1, 3)
        if op == "aten::swapaxes":
            return y.swapaxes_(1, 2) if ip else torch.swapaxes(y, 1, 2)
        if op == "aten::swapdims":
            return y.swapdims_(2, 3) if ip else torch.swapdims(y, 2, 3)
        if op == "aten::baddbmm":
            rows, cols = y.reshape(2, 4, 16), y.reshape(2, 16, 4)
            base = torch.zeros(2, 4, 4) + 0.25
            return base.baddbmm_(rows, cols, alpha=0.5) if ip else torch.baddbmm(base, rows, cols, alpha=0.5)
        if op == "aten::masked_fill":
            return y.masked_fill_(self.mask, -1.5) if ip else torch.masked_fill(y, self.mask, -1.5)
        # the unary maths ops exist only inside a decomposed RMSNorm over the channels (the pattern a pass fuses)
        if op == "aten::pow":
            square = y.clone().pow_(2) if ip else torch.pow(y.clone(), 2)
            return y * torch.rsqrt(square.mean(1, keepdim=True) + 1e-5)
        if op == "aten::square":
            square = y.clone().square_() if ip else torch.square(y.clone())
            return y * torch.rsqrt(square.mean(1, keepdim=True) + 1e-5)
        if op == "aten::sqrt":
            shifted = (y * y).mean(1, keepdim=True) + 1e-5
            return y / (shifted.sqrt_() if ip else torch.sqrt(shifted))
        if op == "aten::rsqrt":
            shifted = (y * y).mean(1, keepdim=True) + 1e-5
            return y * (shifted.rsqrt_() if ip else torch.rsqrt(shifted))
        if op == "aten::reciprocal":
            root = torch.sqrt((y * y).mean(1, keepdim=True) + 1e-5)
            return y * (root.reciprocal_() if ip else torch.reciprocal(root))
        if op == "aten::t":
            z = torch.flatten(y, 1)
            return (z.t_() if ip else torch.t(z)).t()  # (transposed back: outputs keep the batch first)
        return y


SHAPE = (2, 3, 4, 4)


@pytest.fixture(scope="module")
def archives(tmp_path_factory):
    """(case, mode, in_place) -> the saved archive of ``Twin``; seeded weights, the same for every case.

    ``Twin`` is scripted once per ``in_place`` and its ``op`` attribute set per case before saving (the scripted
    code holds every branch; the interpreter specializes on the attribute), which keeps this module cheap."""
    folder = tmp_path_factory.mktemp("inplace")
    cache: dict[tuple, object] = {}
    scripted: dict[bool, torch.jit.ScriptModule] = {}

    def get(case: str, mode: str, in_place: bool):
        key = (case, mode, in_place)
        if key not in cache:
            torch.manual_seed(0)
            model = Twin(case, in_place).eval()
            path = folder / f"{case.replace('::', '_').replace('/', '_')}-{mode}-{int(in_place)}.pt"
            if mode == "traced":
                cache[key] = save_torchscript(model, torch.randn(SHAPE), path, mode, no_grad=True)
            else:
                if in_place not in scripted:
                    scripted[in_place] = torch.jit.script(model)
                scripted[in_place].op = case
                scripted[in_place].save(str(path))
                cache[key] = path
        return cache[key]

    return get


def test_every_converter_with_an_in_place_twin_is_covered():
    with_twin = {
        kind
        for kind in CONVERTERS
        if kind.startswith("aten::") and hasattr(torch.ops.aten, kind.split("::")[1] + "_")
    }
    assert with_twin == set(IN_PLACE)


# removed ops: no IR node records them, so the archive is checked instead
ALIASES = {"aten::dropout", "aten::alpha_dropout", "aten::feature_dropout", "aten::feature_alpha_dropout"}
ALIASES |= {"aten::detach"}


def recorded_kinds(path) -> set[str]:
    """Every node kind in the archive's inlined graph, inside If/Loop blocks too."""

    def walk(block):
        for node in block.nodes():
            yield node.kind()
            for sub in node.blocks():
                yield from walk(sub)

    graph = torch.jit.load(str(path)).inlined_graph  # kept alive while its blocks are walked
    return set(walk(graph.block()))


def emitted_from(graph) -> set[str]:
    """The aten kinds the IR nodes were converted from (``origin["ops"]``: the kind as recorded)."""
    return {kind for node in graph.nodes for kind in node.origin["ops"]}


def describe(graph) -> list[tuple]:
    return [
        (n.id, n.op, sorted(n.attrs.items(), key=lambda kv: kv[0]), sorted(n.params), n.inputs == [])
        for n in graph.nodes
    ]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("case", CASES)
def test_in_place_op_gives_the_ir_of_its_twin(archives, case, mode):
    kind = case.split("/")[0]
    in_place, out_of_place = archives(case, mode, True), archives(case, mode, False)
    recorded = not (mode == "traced" and kind in TRACED_AS_FUNCTIONAL)
    assert not recorded or IN_PLACE[kind] in recorded_kinds(in_place)
    if recorded and mode == "traced":  # a scripted archive holds every branch; the IR shows which one ran
        assert IN_PLACE[kind] not in recorded_kinds(out_of_place)
    x = torch.randn(SHAPE, generator=torch.Generator().manual_seed(1))
    graphs = []
    for path in (in_place, out_of_place):
        model = load(path, {"x": SHAPE})
        graph = model.graph({"x": SHAPE})
        assert check_fidelity(model, graph, {"x": x.numpy()}, "float32", rtol=RTOL_F32).passed
        graphs.append(graph)
    if recorded and kind not in ALIASES:
        assert IN_PLACE[kind] in emitted_from(graphs[0]) and IN_PLACE[kind] not in emitted_from(graphs[1])
    assert describe(graphs[0]) == describe(graphs[1])
    for a, b in zip(graphs[0].nodes, graphs[1].nodes):
        for key in a.params:
            assert torch.equal(a.params[key], b.params[key]), (a.id, key)


class Transposed(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x).t_().t()  # (transposed back: outputs keep the batch first)


def test_t_in_place_is_translated(tmp_path):
    """``x.t_()`` crashed with a ValueError traceback before in-place kinds reached converters as functional."""
    path = save_torchscript(Transposed().eval(), torch.randn(3, 4), tmp_path / "t.pt", "traced", no_grad=True)
    model = load(path, {"x": (3, 4)})
    graph = model.graph({"x": (3, 4)})
    # two transposes; the batch-axis pass keeps the batch first in between, so both become identity permutes
    assert [(n.op, n.attrs.get("perm")) for n in graph.nodes] == [
        ("linear", None),
        ("permute", (0, 1)),
        ("permute", (0, 1)),
    ]
    assert check_fidelity(model, graph, {"x": torch.randn(3, 4).numpy()}, "float32", rtol=RTOL_F32).passed


class Clamped(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)
        self.act = nn.Hardtanh(-0.5, 0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.fc(x))


@pytest.fixture(scope="module")
def clamped(tmp_path_factory):
    folder = tmp_path_factory.mktemp("clamped")
    torch.manual_seed(0)
    return save_torchscript(
        Clamped().eval(), torch.randn(2, 4), folder / "clamped.pt", "traced", no_grad=True
    )


def test_a_converter_that_raises_is_a_model_error_naming_op_and_module(clamped, monkeypatch):
    def broken(ctx, call):
        raise ValueError("not enough values to unpack")

    monkeypatch.setitem(CONVERTERS, "aten::hardtanh", broken)
    with pytest.raises(
        ModelError, match=r"aten::hardtanh in module 'act' \(Hardtanh\): .*ValueError: not enough"
    ):
        load(clamped, {"x": (2, 4)}).graph({"x": (2, 4)})
    result = run_cli("check", clamped, "--random", "2", "--input-shape", "2,4")
    assert_clean_error(result, "aten::hardtanh in module 'act'", "ValueError")


def test_an_ir_op_that_does_not_reproduce_its_aten_op_is_internal(clamped, monkeypatch):
    """The per-node build check compares the IR op with the real aten result on the same inputs: a mismatch is a
    mistranslating converter, lrpaudit's fault: InternalError, exit 3 with the traceback saved."""

    def wrong(ctx, call):
        return ctx.emit("clip", [call.act("self")], {"min": -0.5, "max": 0.0})

    monkeypatch.setitem(CONVERTERS, "aten::hardtanh", wrong)
    with pytest.raises(InternalError, match=r"aten::hardtanh in module 'act'.*does not reproduce torch"):
        load(clamped, {"x": (2, 4)}).graph({"x": (2, 4)})
    result = run_cli("check", clamped, "--random", "2", "--input-shape", "2,4")
    assert result.exit_code == 3
    assert "lrpaudit: internal error: InternalError:" in result.stderr and "please report it" in result.stderr
