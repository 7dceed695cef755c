"""Small transformers built directly as IR (the vocabulary of DESIGN section 12), with an independent torch twin.

``transformer(kind, ...)`` returns a :class:`TinyTransformer`: an IR graph (one embedding stage, ``blocks`` encoder
blocks, a head) and the same network written with plain torch functions (``reference``), which can run with the
LRP "gradient trick" modifications of LXT's efficient mode (sigma detached, products' gradients split, GELU's
gradient replaced by gelu(x) / x) so that ``x * grad`` is an independent oracle for the LRP-0 form of the rules.

Kinds:
- ``vit``: class token concat'ed (a constant), position embeddings added, pre-LN blocks (LayerNorm, attention,
  residual add, LayerNorm, GELU MLP, residual add), final LayerNorm, the class token gathered, a linear head;
- ``gpt``: causal attention masked with ``where`` (constant condition, finfo.min), post-LN ... as GPT-2 but
  pre-LN, the last token gathered;
- ``bert``: post-LN blocks with an additive -inf padding mask (``add_const``), attention written as einsum,
  mean pooling over tokens;
- ``llama``: RMSNorm, a SiLU-gated MLP (``mul`` of two activations), attention scores as ``einsum``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from lrpaudit.ir import Graph, Node
from tests.helpers.lrp_gradients import IdentityRule, Scale

Tensor = torch.Tensor
DT = torch.float64


@dataclass
class TinyTransformer:
    kind: str
    graph: Graph
    params: dict[str, dict[str, Tensor]]
    input_shape: tuple[int, ...]
    spec: dict = field(default_factory=dict)

    def example(self, seed: int = 0) -> Tensor:
        return torch.randn(self.input_shape, generator=torch.Generator().manual_seed(seed), dtype=DT)


class _Builder:
    def __init__(self, gen: torch.Generator, bias: bool) -> None:
        self.gen, self.bias = gen, bias
        self.nodes: list[Node] = []
        self.count = 0

    def rand(self, *shape, scale=1.0) -> Tensor:
        return torch.randn(*shape, generator=self.gen, dtype=DT) * scale

    def add(self, op: str, inputs: list[str], attrs=None, params=None, name=None) -> str:
        self.count += 1
        node_id = name or f"{op}_{self.count}"
        out = f"v{self.count}_{op}"
        self.nodes.append(Node(node_id, op, inputs, [out], dict(attrs or {}), dict(params or {})))
        return out

    def linear(self, x: str, n_in: int, n_out: int, name: str) -> str:
        params = {"weight": self.rand(n_out, n_in, scale=1 / math.sqrt(n_in))}
        if self.bias:
            params["bias"] = self.rand(n_out, scale=0.3)
        return self.add("linear", [x], {}, params, name)

    def norm(self, x: str, dim: int, name: str, rms: bool = False) -> str:
        params = {"weight": 1 + self.rand(dim, scale=0.2)}
        if self.bias and not rms:
            params["bias"] = self.rand(dim, scale=0.3)
        attrs = {"axes": (-1,), "eps": 1e-5, "center": not rms}
        return self.add("layernorm", [x], attrs, params, name)


def _attention(b: _Builder, x: str, batch: int, tokens: int, dim: int, heads: int, kind: str, k: int, mask):
    dh = dim // heads
    q = b.linear(x, dim, dim, f"blocks.{k}.attn.q")
    key = b.linear(x, dim, dim, f"blocks.{k}.attn.k")
    v = b.linear(x, dim, dim, f"blocks.{k}.attn.v")

    def heads_first(t: str, tag: str) -> str:
        t = b.add("reshape", [t], {"shape": (batch, tokens, heads, dh)}, name=f"blocks.{k}.attn.{tag}.split")
        return b.add("permute", [t], {"perm": (0, 2, 1, 3)}, name=f"blocks.{k}.attn.{tag}.heads")

    qh, kh, vh = heads_first(q, "q"), heads_first(key, "k"), heads_first(v, "v")
    if kind in ("bert", "llama"):
        scores = b.add("einsum", [qh, kh], {"equation": "bhqd,bhkd->bhqk"}, name=f"blocks.{k}.attn.scores")
    else:
        kt = b.add("permute", [kh], {"perm": (0, 1, 3, 2)}, name=f"blocks.{k}.attn.kT")
        scores = b.add("matmul", [qh, kt], name=f"blocks.{k}.attn.scores")
    scores = b.add("mul_const", [scores], {}, {"const": torch.tensor(1 / math.sqrt(dh), dtype=DT)})
    if kind == "gpt":
        scores = b.add("where", [scores], {"input_when": True}, {"cond": mask[0], "other": mask[1]})
    elif mask is not None:
        scores = b.add("add_const", [scores], {}, {"const": mask}, name=f"blocks.{k}.attn.mask")
    probs = b.add("softmax", [scores], {"axis": -1}, name=f"blocks.{k}.attn.softmax")
    context = b.add("matmul", [probs, vh], name=f"blocks.{k}.attn.context")
    context = b.add("permute", [context], {"perm": (0, 2, 1, 3)})
    context = b.add("reshape", [context], {"shape": (batch, tokens, dim)})
    return b.linear(context, dim, dim, f"blocks.{k}.attn.out")


def _mlp(b: _Builder, x: str, dim: int, hidden: int, kind: str, k: int) -> str:
    if kind == "llama":
        gate = b.add("silu", [b.linear(x, dim, hidden, f"blocks.{k}.mlp.gate")])
        up = b.linear(x, dim, hidden, f"blocks.{k}.mlp.up")
        h = b.add("mul", [gate, up], {"gate": None}, name=f"blocks.{k}.mlp.gated")
    else:
        h = b.add("gelu", [b.linear(x, dim, hidden, f"blocks.{k}.mlp.fc1")], {"approximate": "none"})
    return b.linear(h, hidden, dim, f"blocks.{k}.mlp.fc2")


def _masks(kind: str, batch: int, tokens: int):
    if kind == "gpt":
        cond = torch.tril(torch.ones(tokens, tokens, dtype=torch.bool))
        return cond, torch.tensor(torch.finfo(torch.float32).min, dtype=DT)
    if kind == "bert":  # the last token of the last sample is padding
        mask = torch.zeros(batch, 1, 1, tokens, dtype=DT)
        mask[-1, ..., -1] = float("-inf")
        return mask
    return None


def transformer(
    kind: str,
    batch: int = 2,
    tokens: int = 4,
    dim: int = 8,
    heads: int = 2,
    hidden: int = 12,
    classes: int = 3,
    blocks: int = 1,
    bias: bool = True,
    seed: int = 0,
) -> TinyTransformer:
    """A tiny transformer of the given kind as IR (see the module docstring)."""
    b = _Builder(torch.Generator().manual_seed(seed), bias)
    x = "tokens"
    seq = tokens
    if kind == "vit" and bias:  # a bias-free ViT has neither class token nor position embeddings
        cls = b.rand(1, 1, dim).expand(batch, 1, dim).clone()
        x = b.add("concat", [x], {"axis": 1, "constants": ((0, "cls"),)}, {"cls": cls}, "embed.cls")
        seq = tokens + 1
        x = b.add("add_const", [x], {}, {"const": b.rand(1, seq, dim, scale=0.5)}, "embed.pos")
    mask = _masks(kind, batch, seq)
    rms = kind == "llama"
    for k in range(blocks):
        if kind == "bert":  # post-LN
            attn = _attention(b, x, batch, seq, dim, heads, kind, k, mask)
            x = b.norm(b.add("add", [x, attn], name=f"blocks.{k}.res1"), dim, f"blocks.{k}.ln1")
            mlp = _mlp(b, x, dim, hidden, kind, k)
            x = b.norm(b.add("add", [x, mlp], name=f"blocks.{k}.res2"), dim, f"blocks.{k}.ln2")
        else:  # pre-LN
            attn = _attention(
                b, b.norm(x, dim, f"blocks.{k}.ln1", rms), batch, seq, dim, heads, kind, k, mask
            )
            x = b.add("add", [x, attn], name=f"blocks.{k}.res1")
            mlp = _mlp(b, b.norm(x, dim, f"blocks.{k}.ln2", rms), dim, hidden, kind, k)
            x = b.add("add", [x, mlp], name=f"blocks.{k}.res2")
    if kind != "bert":
        x = b.norm(x, dim, "final_norm", rms)
    if kind == "bert":
        pooled = b.add("mean", [x], {"axes": (1,), "keepdims": False}, name="pool")
    else:
        index = 0 if kind == "vit" else seq - 1
        pooled = b.add("gather", [x], {"axis": 1, "indices": index}, name="pool")
    b.linear(pooled, dim, classes, "head")
    shapes = {"tokens": (batch, tokens, dim)}
    graph = Graph(["tokens"], [b.nodes[-1].output], b.nodes, shapes=shapes)
    params = {node.id: node.params for node in b.nodes}
    spec = {"dim": dim, "heads": heads, "seq": seq, "rms": rms}
    return TinyTransformer(kind, graph, params, (batch, tokens, dim), spec)


# ---------------------------------------------------------------- the torch twin, with LXT-style gradients


def reference_forward(model: TinyTransformer, x: Tensor, lrp: bool = False, cp: bool = False) -> Tensor:
    """The network with torch functions, from the graph's params; ``lrp`` applies the gradient modifications of
    the AttnLRP rules in their LRP-0 form (``cp``: CP-LRP's, attention weights and gates detached)."""
    values = {"tokens": x}
    for node in model.graph.nodes:
        ins = [values[name] for name in node.inputs]
        values[node.output] = _reference_op(node, ins, lrp, cp)
    return values[model.graph.outputs[0]]


def _split(t: Tensor, lrp: bool, cp: bool, constant: bool, n: int = 2) -> Tensor:
    if not lrp:
        return t
    if cp:
        return t.detach() if constant else t
    return Scale.apply(t, 1.0 / n)


def _reference_op(node: Node, ins: list[Tensor], lrp: bool, cp: bool) -> Tensor:
    p, a = node.params, node.attrs
    op = node.op
    if op == "linear":
        return F.linear(ins[0], p["weight"], p.get("bias"))
    if op == "layernorm":
        x = ins[0]
        centred = x - x.mean(-1, keepdim=True) if a["center"] else x
        sigma = torch.sqrt((centred**2).mean(-1, keepdim=True) + a["eps"])
        y = centred / (sigma.detach() if lrp else sigma) * p["weight"]
        return y + p["bias"] if "bias" in p else y
    if op in ("matmul", "einsum"):
        softmax_first = node.id.endswith("context")
        left = _split(ins[0], lrp, cp, constant=softmax_first)
        right = _split(ins[1], lrp, cp, constant=not softmax_first)
        return torch.matmul(left, right) if op == "matmul" else torch.einsum(a["equation"], left, right)
    if op == "mul":
        return _split(ins[0], lrp, cp, constant=True) * _split(ins[1], lrp, cp, constant=False)
    if op == "softmax":
        return torch.softmax(ins[0], dim=a["axis"])
    if op in ("gelu", "silu"):
        fn = (lambda t: F.gelu(t)) if op == "gelu" else F.silu
        return IdentityRule.apply(ins[0], fn) if lrp else fn(ins[0])
    if op == "add":
        return ins[0] + ins[1]
    if op == "add_const":
        return ins[0] + p["const"]
    if op == "mul_const":
        return ins[0] * p["const"]
    if op == "where":
        return torch.where(p["cond"], ins[0], p["other"])
    if op == "concat":
        return torch.cat([p["cls"], ins[0]], dim=a["axis"])
    if op == "reshape":
        return ins[0].reshape(a["shape"])
    if op == "permute":
        return ins[0].permute(a["perm"])
    if op == "gather":
        return ins[0].select(a["axis"], a["indices"])
    if op == "mean":
        return ins[0].mean(dim=a["axes"])
    raise ValueError(op)
