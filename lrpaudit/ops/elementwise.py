"""Elementwise activations, arithmetic with constants and between activations, and LRN."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .registry import register

# ---------------------------------------------------------------- elementwise activations


@register("relu")
def relu(inputs, attrs, params):
    return F.relu(inputs[0])


@register("leaky_relu")
def leaky_relu(inputs, attrs, params):
    return F.leaky_relu(inputs[0], attrs.get("alpha", 0.01))


@register("sigmoid")
def sigmoid(inputs, attrs, params):
    return torch.sigmoid(inputs[0])


@register("tanh")
def tanh(inputs, attrs, params):
    return torch.tanh(inputs[0])


@register("gelu")
def gelu(inputs, attrs, params):
    return F.gelu(inputs[0], approximate=attrs.get("approximate", "none"))


@register("silu")
def silu(inputs, attrs, params):
    return F.silu(inputs[0])


@register("elu")
def elu(inputs, attrs, params):
    return F.elu(inputs[0], attrs.get("alpha", 1.0))


@register("softplus")
def softplus(inputs, attrs, params):
    return F.softplus(inputs[0])


@register("erf")
def erf(inputs, attrs, params):
    return torch.erf(inputs[0])


@register("hardswish")
def hardswish(inputs, attrs, params):
    x = inputs[0]
    return x * torch.clamp(x / 6.0 + 0.5, 0.0, 1.0)


@register("hardsigmoid")
def hardsigmoid(inputs, attrs, params):
    x = inputs[0]
    return torch.clamp(attrs.get("alpha", 0.2) * x + attrs.get("beta", 0.5), 0.0, 1.0)


@register("clip")
def clip(inputs, attrs, params):
    low, high = attrs.get("min"), attrs.get("max")
    return inputs[0] if low is None and high is None else torch.clamp(inputs[0], low, high)


# ---------------------------------------------------------------- arithmetic


@register("add")
def add(inputs, attrs, params):
    coeffs = attrs.get("coeffs") or [1.0] * len(inputs)
    out = inputs[0] * coeffs[0] if coeffs[0] != 1.0 else inputs[0]
    for c, x in zip(coeffs[1:], inputs[1:]):
        out = out + (x * c if c != 1.0 else x)
    return out


@register("add_const")
def add_const(inputs, attrs, params):
    return inputs[0] + params["const"]


@register("mul_const")
def mul_const(inputs, attrs, params):
    return inputs[0] * params["const"]


@register("mul")
def mul(inputs, attrs, params):
    return inputs[0] * inputs[1]


# ---------------------------------------------------------------- steps of decomposed norms (ir.FUSION_ONLY)


@register("pow")
def pow_(inputs, attrs, params):
    """``x ** exponent`` with a constant exponent (the square of a variance, GELU-tanh's cube)."""
    return torch.pow(inputs[0], attrs["exponent"])


@register("sqrt")
def sqrt(inputs, attrs, params):
    return torch.sqrt(inputs[0])


@register("rsqrt")
def rsqrt(inputs, attrs, params):
    return torch.rsqrt(inputs[0])


@register("reciprocal")
def reciprocal(inputs, attrs, params):
    return torch.reciprocal(inputs[0])


@register("div")
def div(inputs, attrs, params):
    """``a / b`` of two activations (a normalization's division by its statistic)."""
    return inputs[0] / inputs[1]


@register("lrn")
def lrn(inputs, attrs, params):
    """ONNX LRN: x / (bias + alpha/size * sum of squares over a channel window)^beta."""
    x = inputs[0]
    size = attrs["size"]
    front, back = (size - 1) // 2, size - 1 - (size - 1) // 2
    sq = F.pad(x * x, [0, 0] * (x.dim() - 2) + [front, back])
    window = sum(sq.narrow(1, k, x.shape[1]) for k in range(size))
    return x / (attrs["bias"] + attrs["alpha"] / size * window) ** attrs["beta"]
