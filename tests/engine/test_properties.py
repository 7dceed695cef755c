"""Property tests (hypothesis): random small MLPs, CNNs and residual nets built directly as IR graphs, with a rule
drawn per node from every linear-type rule and bias mode (pools: norm/flat/zero/epsilon; adds: norm).

Asserted for every example:
* float64: every record's ``rel_residual <= 1e-10`` (the accounting explains the leak: bias + stabilizer +
  degenerate = leak, up to rounding), and the end-to-end leak equals the sum of the records' leaks;
* float32 (``dtype=torch.float32``): the same graphs run and every ``rel_residual <= 1e-4``; the worst value seen
  is printed (``-s``) and recorded as a junit property, for the closing note.

Examples are cheap (a few nodes, batch <= 3) and deterministic: ``derandomize=True``, ``deadline=None``.
"""

from __future__ import annotations

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lrpaudit.forward import run_forward
from lrpaudit.ir import Graph, Node
from lrpaudit.propagate import propagate
from lrpaudit.rules.spec import LINEAR_TYPE, POOLS, Rule
from tests.helpers.dense import torch_threads

DT = torch.float64
SETTINGS = settings(
    max_examples=30,
    deadline=None,
    derandomize=True,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.function_scoped_fixture,
    ],
)

LINEAR_RULES = [
    ("zero", {}),
    ("epsilon", {}),
    ("epsilon", {"epsilon": 0.01}),
    ("gamma", {}),
    ("alphabeta", {}),
    ("alphabeta", {"alpha": 1.0, "beta": 0.0}),
    ("zplus", {}),
    ("wsquare", {}),
    ("flat", {}),
    ("zbox", {"low": -3.0, "high": 3.0}),
    ("zbox", {"stabilizer": 0.0}),
    ("zplus", {"stabilizer": 0.0}),
    ("alphabeta", {"stabilizer": 0.0}),
]
POOL_RULES = [("norm", {}), ("flat", {}), ("zero", {}), ("epsilon", {"epsilon": 0.01})]
BIAS_MODES = ("absorb", "ignore", "distribute")


class Builder:
    """Appends IR nodes and keeps the float64 value of each, so shapes are known while building."""

    def __init__(self, x: torch.Tensor, gen: torch.Generator):
        self.gen = gen
        self.nodes: list[Node] = []
        self.values = {"x": x}
        self.last = "x"

    def randn(self, *shape, scale=1.0):
        return scale * torch.randn(*shape, generator=self.gen, dtype=DT)

    def add_node(self, op, inputs=None, attrs=None, params=None):
        name = f"v{len(self.nodes)}"
        node = Node(f"n{len(self.nodes)}_{op}", op, inputs or [self.last], [name], attrs or {}, params or {})
        self.nodes.append(node)
        graph = Graph(["x"], [name], list(self.nodes))
        self.values[name] = run_forward(graph, {"x": self.values["x"]})[name]
        self.last = name
        return name

    @property
    def shape(self):
        return tuple(self.values[self.last].shape)

    def linear(self, n_out, bias=True):
        n_in = self.shape[-1]
        params = {"weight": self.randn(n_out, n_in, scale=n_in**-0.5)}
        if bias:
            params["bias"] = self.randn(n_out, scale=0.3)
        return self.add_node("linear", params=params)

    def conv(self, c_out, k, stride, pad, groups, bias=True):
        c_in = self.shape[1]
        params = {"weight": self.randn(c_out, c_in // groups, k, k, scale=(c_in * k * k / groups) ** -0.5)}
        if bias:
            params["bias"] = self.randn(c_out, scale=0.3)
        attrs = {"stride": (stride, stride), "dilation": (1, 1), "pads": (pad,) * 4, "groups": groups}
        return self.add_node("conv", attrs=attrs, params=params)

    def conv_transpose(self, c_out, k, stride, bias=True):
        c_in = self.shape[1]
        params = {"weight": self.randn(c_in, c_out, k, k, scale=(c_in * k) ** -0.5)}
        if bias:
            params["bias"] = self.randn(c_out, scale=0.3)
        attrs = {
            "stride": (stride, stride),
            "dilation": (1, 1),
            "pads": (0, 0, 0, 0),
            "output_padding": (stride - 1, 0),
            "groups": 1,
        }
        return self.add_node("conv_transpose", attrs=attrs, params=params)

    def affine(self):
        c = self.shape[1]
        return self.add_node("affine", params={"weight": self.randn(c), "bias": self.randn(c, scale=0.3)})

    def relu(self):
        return self.add_node("relu")

    def graph(self) -> Graph:
        return Graph(["x"], [self.last], list(self.nodes))


@st.composite
def mlps(draw):
    seed, batch = draw(st.integers(0, 10_000)), draw(st.integers(1, 3))
    gen = torch.Generator().manual_seed(seed)
    widths = draw(st.lists(st.integers(2, 6), min_size=2, max_size=4))
    b = Builder(torch.randn(batch, widths[0], generator=gen, dtype=DT), gen)
    for width in widths[1:]:
        b.linear(width, bias=draw(st.booleans()))
        b.relu()
    b.linear(draw(st.integers(1, 4)), bias=draw(st.booleans()))
    return b.graph(), b.values["x"]


@st.composite
def cnns(draw):
    seed, batch = draw(st.integers(0, 10_000)), draw(st.integers(1, 2))
    gen = torch.Generator().manual_seed(seed)
    c_in, size = draw(st.integers(1, 3)), draw(st.integers(4, 7))
    b = Builder(torch.randn(batch, c_in, size, size, generator=gen, dtype=DT), gen)
    groups = draw(st.sampled_from([1, c_in]))
    b.conv(2 * groups, draw(st.integers(1, 3)), draw(st.integers(1, 2)), draw(st.integers(0, 1)), groups)
    b.relu()
    pool = draw(st.sampled_from(["max", "avg", "avg_incl", "none"]))
    if pool != "none" and min(b.shape[2:]) >= 2:
        attrs = {"kernel": (2, 2), "stride": (2, 2), "pads": (0, 0, 0, 0), "ceil_mode": False}
        if pool == "max":
            b.add_node("maxpool", attrs={**attrs, "dilation": (1, 1)})
        else:
            pads = (1, 1, 1, 1) if pool == "avg_incl" else (0, 0, 1, 1)
            kernel = (3, 3) if pool == "avg_incl" else (2, 2)
            b.add_node(
                "avgpool",
                attrs={**attrs, "kernel": kernel, "pads": pads, "count_include_pad": pool == "avg_incl"},
            )
    if draw(st.booleans()):
        b.affine()
    if draw(st.booleans()):
        b.conv_transpose(2, 2, draw(st.integers(1, 2)), bias=draw(st.booleans()))
        b.relu()
    if draw(st.booleans()):
        b.add_node("global_avgpool", attrs={"keepdims": False})
    else:
        b.add_node("reshape", attrs={"shape": (b.shape[0], -1)})
    b.linear(draw(st.integers(1, 4)), bias=draw(st.booleans()))
    return b.graph(), b.values["x"]


@st.composite
def residual_nets(draw):
    """stem -> relu -> h;  h -> (conv|linear) -> relu -> (conv|linear) -> g;  relu(h + g) [-> second skip] -> head."""
    seed, batch = draw(st.integers(0, 10_000)), draw(st.integers(1, 2))
    gen = torch.Generator().manual_seed(seed)
    convolutional = draw(st.booleans())
    if convolutional:
        b = Builder(torch.randn(batch, 2, 5, 5, generator=gen, dtype=DT), gen)
        block = lambda: b.conv(3, 3, 1, 1, 1, bias=draw(st.booleans()))  # noqa: E731
    else:
        b = Builder(torch.randn(batch, 5, generator=gen, dtype=DT), gen)
        block = lambda: b.linear(4, bias=draw(st.booleans()))  # noqa: E731
    block()
    h = b.relu()
    for _ in range(draw(st.integers(1, 2))):
        block()
        b.relu()
        g = block()
        b.add_node("add", inputs=[h, g])
        h = b.relu()
    if convolutional:
        b.add_node("reshape", attrs={"shape": (b.shape[0], -1)})
    b.linear(3, bias=draw(st.booleans()))
    return b.graph(), b.values["x"]


@st.composite
def rule_choices(draw, graph: Graph):
    """A rule for every linear-type node, pool and add, drawn independently (a random composite)."""
    chosen = {}
    for node in graph.nodes:
        if node.op in LINEAR_TYPE:
            name, params = draw(st.sampled_from(LINEAR_RULES))
            chosen[node.id] = Rule(name, bias=draw(st.sampled_from(BIAS_MODES)), **params)
        elif node.op in POOLS:
            name, params = draw(st.sampled_from(POOL_RULES))
            chosen[node.id] = Rule(name, **params)
        elif node.op == "add":
            chosen[node.id] = Rule("norm", stabilizer=draw(st.sampled_from([1e-6, 0.0, 0.1])))
    return chosen


WORST_F32: dict[str, float] = {}
WORST_F64: dict[str, float] = {}


def _check(graph, x, rules, init, kind, record_property):
    with torch_threads(1):
        p64 = propagate(graph, {"x": x}, rules, init=init)
        worst64 = max(float(rec.rel_residual.max()) for rec in p64.records)
        assert worst64 <= 1e-10, [(r.node_id, r.rule, float(r.rel_residual.max())) for r in p64.records]
        # end to end: the graph's leak is the sum of the per-node leaks (nothing lost between nodes)
        node_leaks = sum(rec.leak for rec in p64.records)
        assert float((p64.leak - node_leaks).abs().max()) <= 1e-10 * float(p64.output_scale.max() + 1e-300)
        p32 = propagate(graph, {"x": x}, rules, init=init, dtype=torch.float32)
        assert p32.input_relevance["x"].dtype == torch.float32
        worst32 = max(float(rec.rel_residual.max()) for rec in p32.records)
        assert worst32 <= 1e-4, [(r.node_id, r.rule, float(r.rel_residual.max())) for r in p32.records]
    WORST_F64[kind] = max(WORST_F64.get(kind, 0.0), worst64)
    WORST_F32[kind] = max(WORST_F32.get(kind, 0.0), worst32)
    record_property(f"worst_rel_residual_float64_{kind}", WORST_F64[kind])
    record_property(f"worst_rel_residual_float32_{kind}", WORST_F32[kind])
    print(f"\n{kind}: worst rel_residual so far float64 {WORST_F64[kind]:.3e}, float32 {WORST_F32[kind]:.3e}")


@SETTINGS
@given(data=st.data())
def test_mlp_residual_is_rounding(data, record_property):
    graph, x = data.draw(mlps())
    rules = data.draw(rule_choices(graph))
    _check(graph, x, rules, data.draw(st.sampled_from(["logit", "one"])), "mlp", record_property)


@SETTINGS
@given(data=st.data())
def test_cnn_residual_is_rounding(data, record_property):
    graph, x = data.draw(cnns())
    rules = data.draw(rule_choices(graph))
    _check(graph, x, rules, data.draw(st.sampled_from(["logit", "one"])), "cnn", record_property)


@SETTINGS
@given(data=st.data())
def test_residual_net_residual_is_rounding(data, record_property):
    graph, x = data.draw(residual_nets())
    rules = data.draw(rule_choices(graph))
    _check(graph, x, rules, data.draw(st.sampled_from(["logit", "one"])), "residual", record_property)


@SETTINGS
@given(data=st.data())
def test_single_rule_everywhere(data, record_property):
    """One Rule object for every linear-type node (pools and adds on their defaults), every rule x bias mode."""
    graph, x = data.draw(st.one_of(mlps(), cnns(), residual_nets()))
    name, params = data.draw(st.sampled_from(LINEAR_RULES))
    rule = Rule(name, bias=data.draw(st.sampled_from(BIAS_MODES)), **params)
    _check(graph, x, rule, "logit", "single_rule", record_property)
