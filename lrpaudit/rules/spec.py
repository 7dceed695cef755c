"""Rules as small declarative objects: a registry of rule specs (params, defaults, what they apply to, maths).

A ``Rule`` is what a config assigns to a node: a rule name, its parameters and a bias mode. The registry says
which parameters each rule takes, their defaults, which IR ops it applies to, and (for ``lrpaudit rules``) its
formula and conservation behaviour.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..errors import ConfigError
from ..ir import ACTIVATION_OPS, LINEAR_TYPE, NORMS, POOLS, PRODUCTS, ROUTING_OPS

BIAS_MODES = ("absorb", "ignore", "distribute")


@dataclass(frozen=True)
class RuleSpec:
    """What a rule is: its parameters with defaults, the ops it applies to, and its documentation."""

    name: str
    params: dict[str, Any]
    ops: tuple[str, ...]
    formula: str
    conserves: str
    has_bias: bool = True


RULES: dict[str, RuleSpec] = {
    spec.name: spec
    for spec in (
        RuleSpec(
            "zero",
            {"stabilizer": 0.0},
            LINEAR_TYPE + POOLS,
            "R_i = sum_j a_i w_ij / (sum_i' a_i' w_i'j + b_j) R_j   (LRP-0; no stabilizer by default)",
            "bias share leaks under absorb; dead units (z=0) are degenerate",
        ),
        RuleSpec(
            "epsilon",
            {"epsilon": 1e-6},
            LINEAR_TYPE + POOLS,
            "R_i = sum_j a_i w_ij / (z_j + eps sign(z_j)) R_j,  z_j = sum_i a_i w_ij + b_j, sign(0)=+1",
            "bias share and the eps share leak",
        ),
        RuleSpec(
            "gamma",
            {"gamma": 0.25, "stabilizer": 1e-6},
            LINEAR_TYPE,
            "z_j>0: a+ (w + g w+) + a- (w + g w-), bias b + g b+;  z_j<0: a+ (w + g w-) + a- (w + g w+), "
            "bias b + g b-;  z_j=0 passes nothing (as Zennit's Gamma)",
            "bias share and stabilizer leak; z_j = 0 units are degenerate",
        ),
        RuleSpec(
            "alphabeta",
            {"alpha": 2.0, "beta": 1.0, "stabilizer": 1e-6},
            LINEAR_TYPE,
            "alpha * [a+ w+ + a- w-] / (z+ + b+)  -  beta * [a+ w- + a- w+] / (z- + b-),  alpha - beta = 1",
            "bias shares leak; units with an empty branch are degenerate",
        ),
        RuleSpec(
            "zplus",
            {"stabilizer": 1e-6},
            LINEAR_TYPE,
            "alphabeta with alpha=1, beta=0:  (a+ w+ + a- w-) / (sum + b+)",
            "b+ share leaks under absorb; units with nothing positive are degenerate",
        ),
        RuleSpec(
            "wsquare",
            {"stabilizer": 1e-6},
            LINEAR_TYPE,
            "R_i = sum_j w_ij^2 / (sum_i' w_i'j^2 + b_j^2) R_j",
            "b^2 share leaks under absorb",
        ),
        RuleSpec(
            "flat",
            {"stabilizer": 1e-6},
            LINEAR_TYPE + POOLS + ("add",),
            "R_i = sum_j 1[i in RF(j)] / n_j R_j   (uniform over the receptive field; no bias term ever);  "
            "add of K activations: R_k = R / K",
            "conserves up to the stabilizer (add: exactly)",
            has_bias=False,
        ),
        RuleSpec(
            "zbox",
            {"low": -1.0, "high": 1.0, "stabilizer": 1e-6},
            LINEAR_TYPE,
            "Z_ij = a_i w_ij - l_i w+_ij - h_i w-_ij;  the bias cancels (b - b+ - b- = 0)",
            "conserves up to the stabilizer, with or without a bias",
            has_bias=False,
        ),
        RuleSpec(
            "norm",
            {"stabilizer": 1e-6},
            POOLS + ("add",),
            "pools: epsilon on the pooling weights;  add: R_k = x_k / (sum x + eps sign) R",
            "conserves up to the stabilizer",
            has_bias=False,
        ),
        RuleSpec(
            "bias_neuron",
            {"stabilizer": 1e-6},
            ("add_const",),
            "z = x + c: R_x = x / (z + eps sign z) R (R itself where c = 0); the constant c is a bias neuron",
            "the constant's share leaks under absorb; ignore/distribute conserve",
        ),
        RuleSpec(
            "winner_take_all",
            {},
            ("maxpool",),
            "all of R_j goes to the window's maximum (the gradient); on ties torch's first maximum wins",
            "exactly",
            has_bias=False,
        ),
        RuleSpec(
            "pass",
            {},
            tuple(sorted(ACTIVATION_OPS)) + ("mul_const", "lrn"),
            "R_in = R_out (elementwise; broadcast dims summed)",
            "exactly",
            has_bias=False,
        ),
        RuleSpec(
            "route",
            {},
            tuple(sorted(ROUTING_OPS)),
            "relevance moves back with its position (the op's transpose); positions held by constants (pad "
            "values, concat'ed class tokens, where's constant operand) keep theirs",
            "exactly, except the constant positions' share (reported as absorbed_bias)",
            has_bias=False,
        ),
        RuleSpec(
            "gate",
            {},
            ("mul",),
            "x * gate: the gate is a constant; all relevance goes to x",
            "exactly",
            has_bias=False,
        ),
        # Transformer rules (DESIGN section 12; AttnLRP, Achtibat et al. 2024; CP-LRP, Ali et al. 2022).
        RuleSpec(
            "norm_identity",
            {"epsilon": 1e-6},
            NORMS,
            "y = g (x - mu) / sigma + beta with sigma constant (mu stays in the map: it is linear in x):  "
            "epsilon on the linear map x -> g (x - mu) / sigma with bias beta;  "
            "R_x = x * C(g / sigma * R / (y + eps sign y)),  C = the centring (identity for RMSNorm)",
            "the beta share leaks under absorb (ignore/distribute conserve) and the eps share; RMSNorm "
            "without beta: up to eps",
        ),
        RuleSpec(
            "taylor",
            {},
            ("softmax",),
            "s = softmax(x):  R_x = x * (R - s * sum R) along the axis (AttnLRP Prop. 3.1, Taylor at x); "
            "masked logits (s = 0: -inf, finfo.min) get nothing",
            "leaks the Taylor bias sum_j R_j (1 - x_j + sum_i s_i x_i), reported as absorbed_softmax",
            has_bias=False,
        ),
        RuleSpec(
            "uniform",
            {"epsilon": 1e-6},
            PRODUCTS,
            "o = a * b (matmul, einsum, mul of activations):  each factor gets half: "
            "R_a = a * d o/d a^T (R / (o + eps sign o)) / 2, likewise R_b  (AttnLRP Prop. 3.2/3.3)",
            "up to the eps share",
            has_bias=False,
        ),
        RuleSpec(
            "constant_factor",
            {"epsilon": 1e-6, "factor": -1.0},
            PRODUCTS,
            "one factor is a constant gate, all relevance to the other through its linear map: "
            "R_v = v * A^T (R / (o + eps sign o)) for o = A v (CP-LRP);  factor -1: the attention weights "
            "(a softmax output) or else a gate (an activation output), 0 / 1: the first / second factor",
            "up to the eps share; relevance reaching a product with no constant factor is an error",
            has_bias=False,
        ),
    )
}


@dataclass(frozen=True)
class Rule:
    """A rule as assigned to a node: ``Rule("alphabeta", alpha=2, beta=1, bias="ignore")``."""

    name: str
    params: dict[str, Any] = field(default_factory=dict)
    bias: str = "absorb"

    def __init__(self, name: str, bias: str = "absorb", **params: Any) -> None:
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "bias", bias)
        object.__setattr__(self, "params", dict(params))
        validate_rule(self)

    def get(self, key: str) -> Any:
        """The parameter's value, or the rule's default."""
        if key in self.params:
            return self.params[key]
        return RULES[self.name].params[key]

    def describe(self) -> str:
        shown = ", ".join(f"{k}={v}" for k, v in self.params.items() if not hasattr(v, "shape"))
        return f"{self.name}({shown})" if shown else self.name

    def __hash__(self) -> int:  # params may hold arrays (zbox bounds)
        return hash((self.name, self.bias, tuple(sorted((k, repr(v)) for k, v in self.params.items()))))


def validate_rule(rule: Rule) -> None:
    """Reject unknown rules, unknown or non-finite params, bad bias modes, and alpha - beta != 1."""
    spec = RULES.get(rule.name)
    if spec is None:
        raise ConfigError(f"unknown rule {rule.name!r} (known: {', '.join(RULES)})")
    if rule.bias not in BIAS_MODES:
        raise ConfigError(
            f"rule {rule.name}: bias mode must be one of {', '.join(BIAS_MODES)}, got {rule.bias!r}"
        )
    for key, value in rule.params.items():
        if key not in spec.params:
            raise ConfigError(
                f"rule {rule.name}: unknown parameter {key!r} (takes: {', '.join(spec.params) or 'none'})"
            )
        if isinstance(value, (int, float)) and not math.isfinite(value):
            raise ConfigError(f"rule {rule.name}: parameter {key} must be finite, got {value}")
    for key in ("epsilon", "stabilizer", "gamma", "alpha", "beta"):
        if key in rule.params and rule.params[key] < 0:
            raise ConfigError(f"rule {rule.name}: parameter {key} must be >= 0, got {rule.params[key]}")
    if rule.name == "constant_factor" and rule.params.get("factor", -1) not in (-1, 0, 1):
        raise ConfigError(
            f"rule constant_factor: factor must be -1 (auto), 0 or 1, got {rule.params['factor']}"
        )
    if rule.name == "alphabeta":
        alpha, beta = float(rule.get("alpha")), float(rule.get("beta"))
        if abs(alpha - beta - 1.0) > 1e-12:
            raise ConfigError(f"rule alphabeta: alpha - beta must be 1 (got alpha={alpha}, beta={beta})")


def default_rule(op: str, bias: str = "absorb", attrs: Mapping[str, Any] | None = None) -> Rule | None:
    """The rule an op gets when the config does not name one (None: linear-type nodes must be configured).

    ``bias`` is the configured default bias mode, for default rules with a bias term (``bias_neuron``,
    ``norm_identity``). The transformer ops get AttnLRP's rules; a ``mul`` whose ``attrs["gate"]`` names a
    recognized gate keeps ``gate``, any other product of two activations gets ``uniform``.
    """
    if op == "mul":
        return Rule("gate") if (attrs or {}).get("gate") is not None else Rule("uniform")
    for name in ("pass", "route", "winner_take_all", "bias_neuron", "norm_identity", "taylor", "uniform"):
        if op in RULES[name].ops:
            return Rule(name, bias=bias if RULES[name].has_bias else "absorb")
    if op in POOLS or op == "add":
        return Rule("norm")
    return None
