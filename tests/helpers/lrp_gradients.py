"""Gradient modifications that turn input x gradient into LRP (AttnLRP/CP-LRP style), written independently of
lrpaudit and of LXT: the oracles of the torch twins in ``attention_block`` and ``transformer_ir``."""

from __future__ import annotations

import torch


class Scale(torch.autograd.Function):
    """Identity forward, gradient times ``factor`` (LXT's divide_gradient, written here independently)."""

    @staticmethod
    def forward(ctx, x, factor):
        ctx.factor = factor
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return grad * ctx.factor, None


class IdentityRule(torch.autograd.Function):
    """``fn(x)`` forward, gradient ``fn(x) / x`` (the identity rule as input x gradient)."""

    @staticmethod
    def forward(ctx, x, fn):
        y = fn(x)
        ctx.save_for_backward(y / x)
        return y

    @staticmethod
    def backward(ctx, grad):
        (ratio,) = ctx.saved_tensors
        return grad * ratio, None
