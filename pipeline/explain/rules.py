"""Relevance rules (LRP) for ViT layers, as small composable objects (Chefer et al., CVPR 2021;
docs/methods.md, "LRP rules for ViT layers").

Each rule maps the relevance of a layer's output to the relevance of its input(s), given the
tensors the forward pass recorded. Rules are stateless and work on any leading (batch) shape;
every normalisation that sums over a tensor sums per sample (dim 0), so a batch gives the same
relevance as its images one at a time.

Two rule sets reproduce the reference code:

- ``CONSERVATIVE`` (transformer attribution): Linear α1β0 with one joint denominator, residual
  Add split in proportion and rescaled so that the relevance total is conserved.
- ``SEPARATE`` (partial LRP, full LRP): Linear α1β0 with the positive and negative parts each
  normalised by itself, Add as a plain z-rule.

Both halve each operand's share of a product of two activations, pass relevance unchanged
through LayerNorm, GELU, softmax, dropout and LayerScale, and sum the relevances of a tensor
used twice (a residual branch).
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import Tensor

EPS = 1e-9


def stabilized_divide(a: Tensor, b: Tensor, nonnegative: bool = False, eps: float = EPS) -> Tensor:
    """``a / (b + eps)``, and 0 where ``b == 0`` (the reference's safe division, eps = 1e-9).

    ``nonnegative=True`` promises b ≥ 0 (αβ and z^B denominators), which skips a check.
    In-place fills on fresh tensors: these run on activation-sized tensors in every layer.
    """
    den = b + eps
    if not nonnegative:
        den.masked_fill_(den == 0, eps)  # b == -eps would otherwise divide by zero
    den.masked_fill_(b == 0, math.inf)  # finite / inf == 0
    return a / den


def per_sample_sum(t: Tensor) -> Tensor:
    """Sum over all but the batch dimension, kept broadcastable against ``t``."""
    return t.sum(dim=tuple(range(1, t.ndim)), keepdim=True)


class LinearRule(Protocol):
    def __call__(self, x: Tensor, weight: Tensor, relevance: Tensor, xw: Tensor | None = None) -> Tensor: ...


class AddRule(Protocol):
    def __call__(self, u: Tensor, v: Tensor, relevance: Tensor) -> tuple[Tensor, Tensor]: ...


class Identity:
    """LayerNorm, GELU, softmax, dropout, LayerScale, reshapes: relevance passes unchanged."""

    def __call__(self, relevance: Tensor) -> Tensor:
        return relevance


class LinearAlpha1Beta0:
    """LRP-α1β0 for ``y = x Wᵀ (+ b)`` with one joint denominator; the bias gets no relevance.

    R_j = Σ_k (x_j w_jk)⁺ / Σ_j (x_j w_jk)⁺ · R_k, where (x w)⁺ = x⁺w⁺ + x⁻w⁻. Exact shortcut:
    x⁺W⁺ + x⁻W⁻ = (xW + |x||W|)/2 elementwise, so the denominator is (xWᵀ + |x||W|ᵀ)/2 and the
    relevance (x ⊙ (S W) + |x| ⊙ (S |W|))/2 — three matmuls, or two when the forward's xWᵀ
    (without bias) is passed as ``xw``. Conserves ΣR wherever the denominator is non-zero.
    Numerical note: z⁺ comes out of a cancellation, so an output whose contributions are nearly
    all negative gets a less accurate denominator than the 4-matmul form would give it.
    """

    def __call__(self, x: Tensor, weight: Tensor, relevance: Tensor, xw: Tensor | None = None) -> Tensor:
        shape = x.shape
        x = x.reshape(-1, shape[-1])
        xw = F.linear(x, weight) if xw is None else xw.reshape(x.shape[0], -1)
        w_abs, x_abs = weight.abs(), x.abs()
        # S/2 = R / (2 z⁺ + 2e-9), and 2 z⁺ = xWᵀ + |x||W|ᵀ (one fused multiply-add). Where z⁺ = 0
        # the zero matters: the two products below would not cancel exactly against a huge S.
        half_s = stabilized_divide(relevance.reshape(xw.shape), torch.addmm(xw, x_abs, w_abs.T),
                                   nonnegative=True, eps=2 * EPS)
        return torch.addcmul(x * (half_s @ weight), x_abs, half_s @ w_abs).reshape(shape)


class LinearAlpha1Beta0Separate:
    """LRP-α1β0 for ``y = x Wᵀ (+ b)`` as the reference's LRP baselines do it: the x⁺W⁺ part and
    the x⁻W⁻ part are each normalised by their own sum, then added. Each part conserves ΣR on its
    own, so the total is ΣR when one part is empty (e.g. x ≥ 0) and up to 2ΣR otherwise."""

    def __call__(self, x: Tensor, weight: Tensor, relevance: Tensor, xw: Tensor | None = None) -> Tensor:
        x_pos, x_neg = x.clamp(min=0), x.clamp(max=0)
        w_pos, w_neg = weight.clamp(min=0), weight.clamp(max=0)
        s_pos = stabilized_divide(relevance, F.linear(x_pos, w_pos), nonnegative=True)
        s_neg = stabilized_divide(relevance, F.linear(x_neg, w_neg), nonnegative=True)
        return torch.addcmul(x_pos * (s_pos @ w_pos), x_neg, s_neg @ w_neg)


@dataclass(frozen=True)
class MatMulGradInput:
    """Product of two activations ``z = a @ b`` (Q·Kᵀ, A·V): gradient × input for each operand,
    R_a = a ⊙ (S bᵀ), R_b = b ⊙ (aᵀ S) with S = R / z, then each scaled by ``share`` (½).

    ``z`` is bilinear, so each operand's raw share sums to ΣR and the halves sum to ΣR together.
    """

    share: float = 0.5

    def relevance_a(self, a: Tensor, b: Tensor, relevance: Tensor, z: Tensor | None = None) -> Tensor:
        s = stabilized_divide(relevance, a @ b if z is None else z)
        return self.share * a * (s @ b.transpose(-2, -1))

    def relevance_b(self, a: Tensor, b: Tensor, relevance: Tensor, z: Tensor | None = None) -> Tensor:
        s = stabilized_divide(relevance, a @ b if z is None else z)
        return self.share * b * (a.transpose(-2, -1) @ s)

    def __call__(self, a: Tensor, b: Tensor, relevance: Tensor, z: Tensor | None = None) -> tuple[Tensor, Tensor]:
        s = stabilized_divide(relevance, a @ b if z is None else z)
        return (self.share * a * (s @ b.transpose(-2, -1)),
                self.share * b * (a.transpose(-2, -1) @ s))


class AddZ:
    """``u + v`` by the z-rule: R_u = u·R/(u+v), R_v = v·R/(u+v), elementwise."""

    def __call__(self, u: Tensor, v: Tensor, relevance: Tensor) -> tuple[Tensor, Tensor]:
        s = stabilized_divide(relevance, u + v)
        return u * s, v * s


class ResidualAdd:
    """``u + v`` split by the z-rule, then each part rescaled so that its total is
    |ΣR_u| / (|ΣR_u| + |ΣR_v|) · ΣR (sums per sample): the residual conserves relevance."""

    def __call__(self, u: Tensor, v: Tensor, relevance: Tensor) -> tuple[Tensor, Tensor]:
        r_u, r_v = AddZ()(u, v, relevance)
        sum_u, sum_v = per_sample_sum(r_u), per_sample_sum(r_v)
        total = per_sample_sum(relevance)
        both = sum_u.abs() + sum_v.abs()
        target_u = stabilized_divide(sum_u.abs(), both) * total
        target_v = stabilized_divide(sum_v.abs(), both) * total
        return r_u * stabilized_divide(target_u, sum_u), r_v * stabilized_divide(target_v, sum_v)


def branch_sum(relevances: Sequence[Tensor]) -> Tensor:
    """A tensor used by several consumers gets the sum of their relevances."""
    total = relevances[0]
    for r in relevances[1:]:
        total = total + r
    return total


def cls_pool(relevance: Tensor, num_tokens: int) -> Tensor:
    """Pooling the class token (token 0): its relevance (B, D) goes back to token 0 of (B, N, D)."""
    out = relevance.new_zeros(relevance.shape[0], num_tokens, relevance.shape[-1])
    out[:, 0] = relevance
    return out


@dataclass(frozen=True)
class ConvZB:
    """z^B rule for the first (pixel) convolution, with box bounds low ≤ x ≤ high.

    z = x∗W − l∗W⁺ − h∗W⁻ ≥ 0; R_x = x ⊙ (Wᵀ S) − l ⊙ (W⁺ᵀ S) − h ⊙ (W⁻ᵀ S), S = R / z.
    Bounds default to each image's global min and max. Conserves ΣR where z > 0.
    """

    stride: tuple[int, int] | int = 1
    padding: tuple[int, int] | int = 0
    dilation: tuple[int, int] | int = 1
    groups: int = 1

    def __call__(self, x: Tensor, weight: Tensor, relevance: Tensor,
                 low: Tensor | None = None, high: Tensor | None = None) -> Tensor:
        flat = x.reshape(x.shape[0], -1)
        if low is None:
            low = flat.min(dim=1).values.view(-1, 1, 1, 1)
        if high is None:
            high = flat.max(dim=1).values.view(-1, 1, 1, 1)
        # full-size bound images: with padding, border outputs see fewer bound pixels
        low, high = torch.broadcast_to(low, x.shape), torch.broadcast_to(high, x.shape)
        w_pos, w_neg = weight.clamp(min=0), weight.clamp(max=0)
        kw = dict(stride=self.stride, padding=self.padding, dilation=self.dilation, groups=self.groups)
        z = F.conv2d(x, weight, **kw) - F.conv2d(low, w_pos, **kw) - F.conv2d(high, w_neg, **kw)
        s = stabilized_divide(relevance, z, nonnegative=True)

        def back(w: Tensor) -> Tensor:  # S through the transposed convolution
            return torch.nn.grad.conv2d_input(x.shape, w, s, **kw)

        return x * back(weight) - low * back(w_pos) - high * back(w_neg)


@dataclass(frozen=True)
class RuleSet:
    """Which rule each kind of layer uses (zennit's 'composite'). Norms, activations, softmax,
    dropout and LayerScale always take the ``Identity`` rule, so the traversal skips them."""

    linear: LinearRule
    add: AddRule
    matmul: MatMulGradInput = field(default_factory=MatMulGradInput)


CONSERVATIVE = RuleSet(linear=LinearAlpha1Beta0(), add=ResidualAdd())
SEPARATE = RuleSet(linear=LinearAlpha1Beta0Separate(), add=AddZ())
