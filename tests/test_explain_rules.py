"""Properties of each relevance rule on small float64 tensors (docs/methods.md, "LRP rules for ViT layers")."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from pipeline.explain.rules import (
    CONSERVATIVE,
    SEPARATE,
    AddZ,
    ConvZB,
    Identity,
    LinearAlpha1Beta0,
    LinearAlpha1Beta0Separate,
    MatMulGradInput,
    ResidualAdd,
    branch_sum,
    cls_pool,
    stabilized_divide,
)

torch.set_num_threads(1)


@pytest.fixture
def gen() -> torch.Generator:
    return torch.Generator().manual_seed(0)


def randn(gen: torch.Generator, *shape: int) -> torch.Tensor:
    return torch.randn(*shape, generator=gen, dtype=torch.float64)


def test_stabilized_divide_is_zero_where_denominator_is_zero() -> None:
    a = torch.tensor([1.0, 2.0, 3.0, 4.0], dtype=torch.float64)
    b = torch.tensor([0.0, 2.0, -1e-9, -4.0], dtype=torch.float64)
    out = stabilized_divide(a, b)
    assert out[0] == 0
    assert out[1] == pytest.approx(2.0 / (2.0 + 1e-9))
    assert torch.isfinite(out).all()
    assert out[3] == pytest.approx(4.0 / (-4.0 + 1e-9))


def test_identity_passes_relevance_through(gen: torch.Generator) -> None:
    r = randn(gen, 2, 5, 7)
    assert Identity()(r) is r


def _linear_alpha1_beta0_naive(x: torch.Tensor, w: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    """Σ_k (x_j w_jk)⁺ / Σ_j (x_j w_jk)⁺ · R_k with explicit (batch, in, out) products."""
    contrib = x[..., :, None] * w.T  # (..., in, out)
    pos = contrib.clamp(min=0)
    return (pos * stabilized_divide(r, pos.sum(dim=-2))[..., None, :]).sum(dim=-1)


def test_linear_alpha1_beta0_matches_definition_and_conserves(gen: torch.Generator) -> None:
    x, w, r = randn(gen, 3, 4, 6), randn(gen, 5, 6), randn(gen, 3, 4, 5)
    out = LinearAlpha1Beta0()(x, w, r)
    torch.testing.assert_close(out, _linear_alpha1_beta0_naive(x, w, r))
    # the forward's xWᵀ may be passed in: same result
    torch.testing.assert_close(LinearAlpha1Beta0()(x, w, r, F.linear(x, w)), out)
    # joint denominator: conserves ΣR for any sign of x, over the outputs with a non-zero denominator
    kept = (x[..., :, None] * w.T).clamp(min=0).sum(dim=-2) > 0
    assert not kept.all() and kept.any()  # the case of an all-negative output is exercised
    torch.testing.assert_close(out.sum(-1), (r * kept).sum(-1))
    x_wide, w_wide = randn(gen, 3, 64), randn(gen, 5, 64)  # with many inputs no output is all-negative
    torch.testing.assert_close(LinearAlpha1Beta0()(x_wide, w_wide, r[:, 0]).sum(-1), r[:, 0].sum(-1))


@pytest.mark.parametrize("rule", [LinearAlpha1Beta0(), LinearAlpha1Beta0Separate()])
def test_linear_output_with_no_positive_part_passes_nothing_float32(gen: torch.Generator, rule) -> None:
    """An output whose contributions are all ≤ 0 has z⁺ = 0: its relevance must vanish exactly, not
    come back as a huge S times products that only nearly cancel."""
    x = randn(gen, 2, 256).abs().float() * 10
    w = randn(gen, 3, 256).float()
    w[1] = -w[1].abs()  # output 1: every x_j w_j1 ≤ 0
    r = torch.tensor([[0.0, 1.0, 0.0], [0.5, 1.0, 0.5]])
    out = rule(x, w, r)
    expected = _linear_alpha1_beta0_naive(x.double(), w.double(), r.double())
    # float32: 256-term dot products behind z⁺ and the cancelling x(SW) + |x|(S|W|) terms, so bound by
    # 256 × eps32 (linear in the reduction length) × the map's max, ~1e-6 here and ~200× the error seen here;
    # an all-negative output whose z⁺ does not vanish exactly comes back off by ≫ the map's max
    atol = 256 * torch.finfo(torch.float32).eps * float(expected.abs().max())
    torch.testing.assert_close(out.double(), expected, rtol=0, atol=atol)
    assert (out[0] == 0).all()


def test_linear_alpha1_beta0_positive_relevance_stays_positive(gen: torch.Generator) -> None:
    x, w, r = randn(gen, 2, 6), randn(gen, 4, 6), randn(gen, 2, 4).abs()
    assert (LinearAlpha1Beta0()(x, w, r) >= 0).all()


def test_linear_separate_on_positive_input_is_alpha1_beta0_and_conserves(gen: torch.Generator) -> None:
    x, w, r = randn(gen, 3, 6).abs(), randn(gen, 5, 6), randn(gen, 3, 5)
    out = LinearAlpha1Beta0Separate()(x, w, r)
    torch.testing.assert_close(out, LinearAlpha1Beta0()(x, w, r))
    torch.testing.assert_close(out.sum(-1), r.sum(-1))


def test_linear_separate_normalises_each_part_by_itself(gen: torch.Generator) -> None:
    x, w, r = randn(gen, 3, 6), randn(gen, 5, 6), randn(gen, 3, 5)
    out = LinearAlpha1Beta0Separate()(x, w, r)
    xp, xn, wp, wn = x.clamp(min=0), x.clamp(max=0), w.clamp(min=0), w.clamp(max=0)
    expected = _linear_alpha1_beta0_naive(xp, wp, r) + _linear_alpha1_beta0_naive(xn, wn, r)
    torch.testing.assert_close(out, expected)
    # each part conserves ΣR over its own non-zero denominators: up to twice ΣR in total
    parts = sum((F.linear(xs, ws) > 0).double() for xs, ws in ((xp, wp), (xn, wn)))
    assert (parts == 2).any()
    torch.testing.assert_close(out.sum(-1), (parts * r).sum(-1))


def test_matmul_grad_input_halves_each_operand(gen: torch.Generator) -> None:
    a, b, r = randn(gen, 2, 3, 4, 5), randn(gen, 2, 3, 5, 6), randn(gen, 2, 3, 4, 6)
    rule = MatMulGradInput()
    r_a, r_b = rule(a, b, r)
    s = stabilized_divide(r, a @ b)
    # gradient × input, via autograd, halved
    a_, b_ = a.clone().requires_grad_(), b.clone().requires_grad_()
    g_a, g_b = torch.autograd.grad(a_ @ b_, (a_, b_), s)
    torch.testing.assert_close(r_a, a * g_a / 2)
    torch.testing.assert_close(r_b, b * g_b / 2)
    # bilinear: each operand's share sums to half the relevance
    torch.testing.assert_close(r_a.sum(), r.sum() / 2)
    torch.testing.assert_close(r_b.sum(), r.sum() / 2)
    torch.testing.assert_close(rule.relevance_a(a, b, r, a @ b), r_a)
    torch.testing.assert_close(rule.relevance_b(a, b, r), r_b)


def test_add_z_rule_splits_in_proportion(gen: torch.Generator) -> None:
    u, v, r = randn(gen, 2, 4, 3), randn(gen, 2, 4, 3), randn(gen, 2, 4, 3)
    r_u, r_v = AddZ()(u, v, r)
    torch.testing.assert_close(r_u + r_v, r)
    torch.testing.assert_close(r_u, u * r / (u + v + 1e-9))


def test_residual_add_conserves_in_stated_proportion_per_sample(gen: torch.Generator) -> None:
    u, v, r = randn(gen, 3, 4, 5), randn(gen, 3, 4, 5), randn(gen, 3, 4, 5)
    r_u, r_v = ResidualAdd()(u, v, r)
    raw_u, raw_v = AddZ()(u, v, r)
    for i in range(3):
        su, sv, total = raw_u[i].sum().abs(), raw_v[i].sum().abs(), r[i].sum()
        torch.testing.assert_close(r_u[i].sum(), su / (su + sv) * total)
        torch.testing.assert_close(r_v[i].sum(), sv / (su + sv) * total)
        torch.testing.assert_close(r_u[i].sum() + r_v[i].sum(), total)
        # the shape of each part is the z-rule's, only rescaled
        torch.testing.assert_close(r_u[i] / raw_u[i], torch.full_like(r_u[i], float(r_u[i].sum() / raw_u[i].sum())))
        # a sample's result does not depend on the rest of the batch
        one_u, one_v = ResidualAdd()(u[i:i + 1], v[i:i + 1], r[i:i + 1])
        torch.testing.assert_close(one_u[0], r_u[i])
        torch.testing.assert_close(one_v[0], r_v[i])


def test_branch_sum_and_cls_pool(gen: torch.Generator) -> None:
    a, b = randn(gen, 2, 3), randn(gen, 2, 3)
    torch.testing.assert_close(branch_sum([a, b]), a + b)
    pooled = cls_pool(a, num_tokens=4)
    assert pooled.shape == (2, 4, 3)
    torch.testing.assert_close(pooled[:, 0], a)
    assert (pooled[:, 1:] == 0).all()


@pytest.mark.parametrize("padding", [0, 1])
def test_conv_zb_conserves_and_matches_autograd(gen: torch.Generator, padding: int) -> None:
    x, w = randn(gen, 2, 3, 8, 8), randn(gen, 4, 3, 4, 4)
    rule = ConvZB(stride=4, padding=padding)
    r = randn(gen, *F.conv2d(x, w, stride=4, padding=padding).shape).abs()
    out = rule(x, w, r)
    assert out.shape == x.shape
    # gradient × input of z = x∗W − l∗W⁺ − h∗W⁻ w.r.t. (x, l, h), per-image bounds
    for i in range(2):
        xi = x[i:i + 1].clone().requires_grad_()
        lo = torch.full_like(xi, float(x[i].min())).requires_grad_()
        hi = torch.full_like(xi, float(x[i].max())).requires_grad_()
        z = (F.conv2d(xi, w, stride=4, padding=padding) - F.conv2d(lo, w.clamp(min=0), stride=4, padding=padding)
             - F.conv2d(hi, w.clamp(max=0), stride=4, padding=padding))
        assert (z >= -1e-12).all()  # z^B denominators are non-negative (float64; z ≥ 50 here, slack is rounding only)
        g = torch.autograd.grad(z, (xi, lo, hi), stabilized_divide(r[i:i + 1], z))
        torch.testing.assert_close(out[i:i + 1], (xi * g[0] + lo * g[1] + hi * g[2]).detach())
        torch.testing.assert_close(out[i].sum(), r[i].sum())


def test_rule_sets() -> None:
    assert isinstance(CONSERVATIVE.linear, LinearAlpha1Beta0)
    assert isinstance(CONSERVATIVE.add, ResidualAdd)
    assert isinstance(SEPARATE.linear, LinearAlpha1Beta0Separate)
    assert isinstance(SEPARATE.add, AddZ)
    assert CONSERVATIVE.matmul.share == SEPARATE.matmul.share == 0.5
