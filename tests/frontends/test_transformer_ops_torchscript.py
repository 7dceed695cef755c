"""aten converters of the transformer ops on small traced modules, each against the ScriptModule (float32, every
intermediate tensor) and the module itself in float64: the normalizations, SDPA with its masks, the fused
multi-head attention and encoder-layer kernels that a trace under no_grad records, the routing ops, the
decompositions the passes fuse, token ids, and the refusals."""

from __future__ import annotations

import math
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lrpaudit.errors import UnsupportedOpError
from lrpaudit.fidelity import check_fidelity
from lrpaudit.forward import embed_inputs, run_forward
from lrpaudit.frontends.torchscript import load_torchscript


class Fn(nn.Module):
    """A module around a function of the input (and, optionally, constant tensors)."""

    def __init__(self, fn, **buffers):
        super().__init__()
        self.fn = fn
        for name, value in buffers.items():
            self.register_buffer(name, value)

    def forward(self, x):
        return self.fn(self, x)


def traced(tmp_path, module, x, no_grad=True):
    path = tmp_path / "m.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        module = module.eval()
        if no_grad:
            with torch.no_grad():
                torch.jit.trace(module, (x,), check_trace=False).save(str(path))
        else:
            torch.jit.trace(module, (x,), check_trace=False).save(str(path))
        return load_torchscript(path)


def check(tmp_path, module, x, kernel=None, no_grad=True, reference=None):
    """Load the trace, compare with the ScriptModule (float32) and with ``module`` (or ``reference``) in float64;
    the graph."""
    ts = traced(tmp_path, module, x, no_grad)
    if kernel:
        assert kernel in {n.kind() for n in ts.module.inlined_graph.nodes()}
    name = ts.input_names[0]
    graph = ts.graph({name: tuple(x.shape)})
    assert check_fidelity(ts, graph, {name: x.numpy()}, intermediates=True).passed
    x64 = x if not x.is_floating_point() else x.double()
    with torch.no_grad():
        want = (reference or module).double()(x64)
    got = run_forward(graph, embed_inputs(graph, {name: x64}, torch.float64), torch.float64)[graph.outputs[0]]
    assert float((got - want).abs().max() / want.abs().max()) <= 1e-12
    return graph


def ops(graph) -> set[str]:
    return {n.op for n in graph.nodes}


def x_(*shape, seed=0):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


# ---------------------------------------------------------------- normalizations


def test_layer_norm_over_two_axes_and_group_norm(tmp_path):
    module = nn.Sequential(nn.GroupNorm(2, 4), nn.LayerNorm((5, 6), eps=1e-3))
    with torch.no_grad():
        for norm in module:
            norm.weight.add_(torch.randn(norm.weight.shape) * 0.3)
            norm.bias.add_(torch.randn(norm.bias.shape) * 0.3)
    graph = check(tmp_path, module, x_(2, 4, 5, 6))
    assert [n.op for n in graph.nodes] == ["groupnorm", "layernorm"]
    assert graph.nodes[1].attrs["axes"] == (-2, -1)


@pytest.mark.parametrize("eps", [None, 1e-4])
def test_rms_norm(tmp_path, eps):
    module = nn.RMSNorm(6, eps=eps)
    with torch.no_grad():
        module.weight.add_(torch.randn(6) * 0.3)
    # without eps, rms_norm uses the machine epsilon of the traced (float32) input: the float64 reference too
    reference = nn.RMSNorm(6, eps=eps or torch.finfo(torch.float32).eps)
    reference.load_state_dict(module.state_dict())
    (norm,) = check(tmp_path, module, x_(2, 3, 6), reference=reference).nodes
    assert norm.op == "layernorm" and not norm.attrs["center"]
    assert norm.attrs["eps"] == pytest.approx(eps or torch.finfo(torch.float32).eps)


@pytest.mark.parametrize("running", [False, True])
def test_instance_norm(tmp_path, running):
    module = nn.InstanceNorm2d(3, affine=True, track_running_stats=running)
    with torch.no_grad():
        module.weight.add_(torch.randn(3) * 0.3)
        if running:
            module.running_mean.copy_(torch.randn(3))
            module.running_var.copy_(torch.rand(3) + 0.5)
    (norm,) = check(tmp_path, module, x_(2, 3, 4, 4)).nodes
    assert norm.op == ("affine" if running else "groupnorm")


# ---------------------------------------------------------------- attention kernels


def _sdpa(**kwargs):
    def fn(self, x):
        q, k, v = x[:, :, :, :4], x[:, :, :, 4:8].sigmoid(), x[:, :, :, 8:].tanh()
        if kwargs.get("gqa"):
            k, v = k[:, :2], v[:, :2]
        extra = {"enable_gqa": True} if kwargs.get("gqa") else {}
        mask = getattr(self, "mask", None)
        return F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, is_causal=kwargs.get("causal", False), scale=kwargs.get("scale"), **extra
        )

    return fn


@pytest.mark.parametrize(
    "kind", ["plain", "causal", "scale", "bool_mask", "float_mask", "gqa"], ids=lambda k: k
)
def test_scaled_dot_product_attention(tmp_path, kind):
    buffers = {}
    if kind == "bool_mask":
        buffers["mask"] = torch.rand(5, 5, generator=torch.Generator().manual_seed(1)) > 0.3
        buffers["mask"][:, 0] = True
    if kind == "float_mask":
        buffers["mask"] = torch.randn(1, 4, 5, 5)
        buffers["mask"][0, 1, 2, 3] = -math.inf
    options = {"causal": kind == "causal", "scale": 0.3 if kind == "scale" else None, "gqa": kind == "gqa"}
    graph = check(
        tmp_path, Fn(_sdpa(**options), **buffers), x_(2, 4, 5, 12), "aten::scaled_dot_product_attention"
    )
    assert {"matmul", "softmax"} <= ops(graph)
    assert ("where" in ops(graph)) == (kind in ("causal", "bool_mask", "float_mask"))


class SelfAttention(nn.Module):
    def __init__(self, need_weights=False, cross=False):
        super().__init__()
        self.attn = nn.MultiheadAttention(8, 2, batch_first=True)
        self.need_weights, self.cross = need_weights, cross

    def forward(self, x):
        kv = x.flip(1) if self.cross else x
        out, weights = self.attn(x, kv, kv, need_weights=self.need_weights)
        return out if weights is None else out + weights.mean(-1, keepdim=True)


@pytest.mark.parametrize("need_weights", [False, True])
def test_native_multi_head_attention_fast_path(tmp_path, need_weights):
    module = SelfAttention(need_weights)
    with torch.no_grad():
        module.attn.in_proj_bias.normal_()
    graph = check(tmp_path, module, x_(2, 5, 8), "aten::_native_multi_head_attention")
    assert {"linear", "matmul", "softmax"} <= ops(graph)


@pytest.mark.parametrize("norm_first", [False, True])
@pytest.mark.parametrize("activation", ["relu", "gelu"])
def test_transformer_encoder_layer_fast_path(tmp_path, norm_first, activation):
    layer = nn.TransformerEncoderLayer(
        8, 2, 16, dropout=0.0, activation=activation, norm_first=norm_first, batch_first=True
    )
    with torch.no_grad():
        for p in layer.parameters():
            p.add_(torch.randn(p.shape) * 0.2)
    graph = check(tmp_path, layer, x_(2, 5, 8), "aten::_transformer_encoder_layer_fwd")
    assert sum(n.op == "layernorm" for n in graph.nodes) == 2 and activation in ops(graph)


def test_traced_with_grad_the_same_layer_has_no_fused_kernel(tmp_path):
    layer = nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0, batch_first=True)
    graph = check(tmp_path, layer, x_(2, 5, 8), no_grad=False)
    assert "aten::_transformer_encoder_layer_fwd" not in {n.origin["ops"][0] for n in graph.nodes}


# ---------------------------------------------------------------- routing ops and products


def test_masked_fill_where_roll_expand_and_cat_with_constants(tmp_path):
    def fn(self, x):
        y = x.masked_fill(self.mask, -1.5)
        y = torch.where(self.mask.flip(-1), y, x.sigmoid())
        y = torch.roll(y, shifts=(1, -2), dims=(1, 2))
        token = self.token.expand(x.shape[0], -1, -1)
        y = torch.cat([token, y, self.token.expand(x.shape[0], -1, -1)], dim=1)
        return y + x[:, :1].expand(-1, 6, -1)

    mask = torch.rand(4, 3, generator=torch.Generator().manual_seed(2)) > 0.5
    graph = check(tmp_path, Fn(fn, mask=mask, token=torch.randn(1, 1, 3)), x_(2, 4, 3))
    assert {"where", "roll", "concat", "expand"} <= ops(graph)
    concat = next(n for n in graph.nodes if n.op == "concat")
    assert [p for p, _ in concat.attrs["constants"]] == [0, 2]


def test_einsum_and_baddbmm_of_two_activations(tmp_path):
    def fn(self, x):
        y = torch.einsum("bij,bkj->bik", x, x.tanh())
        return torch.baddbmm(self.base, y, x, beta=0.5, alpha=2.0)

    graph = check(tmp_path, Fn(fn, base=torch.randn(1, 3, 4)), x_(2, 3, 4))
    assert {"einsum", "matmul", "add_const"} <= ops(graph)


# ---------------------------------------------------------------- decompositions fused by the passes


class ChannelsFirstLayerNorm(nn.Module):
    """The hand-written LayerNorm of Hugging Face's ConvNeXt (channels first)."""

    def __init__(self, channels):
        super().__init__()
        self.weight, self.bias = nn.Parameter(torch.randn(channels)), nn.Parameter(torch.randn(channels))

    def forward(self, x):
        u = x.mean(1, keepdim=True)
        s = (x - u).pow(2).mean(1, keepdim=True)
        x = (x - u) / torch.sqrt(s + 1e-6)
        return self.weight[:, None, None] * x + self.bias[:, None, None]


class T5RMSNorm(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(dim))

    def forward(self, x):
        variance = x.pow(2).mean(-1, keepdim=True)
        return self.weight * (x * torch.rsqrt(variance + 1e-6))


class NewGELU(nn.Module):
    """GPT-2's gelu_new."""

    def forward(self, x):
        return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * torch.pow(x, 3.0))))


@pytest.mark.parametrize(
    "module,shape,expected",
    [
        (ChannelsFirstLayerNorm(4), (2, 4, 3, 3), ["permute", "layernorm", "permute"]),
        (T5RMSNorm(6), (2, 3, 6), ["layernorm"]),
        (NewGELU(), (2, 7), ["gelu"]),
        (nn.SiLU(), (2, 7), ["silu"]),
        (Fn(lambda self, x: x * torch.sigmoid(x)), (2, 7), ["silu"]),
    ],
    ids=["channels-first-layernorm", "t5-rmsnorm", "gelu-new", "silu", "x-times-sigmoid-x"],
)
def test_decompositions_are_fused(tmp_path, module, shape, expected):
    graph = check(tmp_path, module, x_(*shape))
    assert [n.op for n in graph.nodes] == expected


# ---------------------------------------------------------------- token ids and refusals


class Bag(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed, self.head = nn.Embedding(9, 4), nn.Linear(4, 2)

    def forward(self, ids):
        return self.head(self.embed(ids.view(ids.shape[0], -1)).mean(1))


def test_token_ids_through_a_view_to_the_embedding(tmp_path):
    ids = torch.randint(0, 9, (2, 3, 2), generator=torch.Generator().manual_seed(3))
    graph = check(tmp_path, Bag(), ids)
    (token,) = graph.token_inputs
    assert token.name == "ids" and token.index_shape == (2, 6) and graph.inputs == [token.embedded]


def test_token_ids_used_as_numbers_are_refused(tmp_path):
    module = Fn(lambda self, ids: self.table[ids] * (ids != 0).float().unsqueeze(-1), table=torch.randn(9, 4))
    ts = traced(tmp_path, module, torch.randint(0, 9, (2, 5)))
    with pytest.raises(UnsupportedOpError, match="integer input 'x' as numbers"):
        ts.graph({"x": (2, 5)})


def test_an_attention_mask_from_the_input_is_refused(tmp_path):
    module = Fn(
        lambda self, x: F.scaled_dot_product_attention(x, x, x, attn_mask=x.sum(-1, keepdim=True) > 0)
    )
    ts = traced(tmp_path, module, x_(2, 4, 3))
    with pytest.raises(UnsupportedOpError):
        ts.graph({"x": (2, 4, 3)})


def test_sdpa_with_dropout_is_refused(tmp_path):
    module = Fn(lambda self, x: F.scaled_dot_product_attention(x, x, x, dropout_p=0.5))
    ts = traced(tmp_path, module, x_(2, 4, 3))
    with pytest.raises(UnsupportedOpError, match="dropout"):
        ts.graph({"x": (2, 4, 3)})
