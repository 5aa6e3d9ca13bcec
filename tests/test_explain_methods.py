"""explain(): each method against a slow, per-image reference; batching; the model left untouched;
hybrid and stock timm models; refusals. Tiny models, CPU, offline."""
from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import pytest
import timm
import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import HybridEmbed
from timm.models.vision_transformer import ResPostBlock, VisionTransformer

from pipeline.explain import METHODS, explain

torch.set_num_threads(1)

TOKEN_METHODS = [m for m in METHODS if m != "lrp"]


# --------------------------------------------------------------------------- tiny models

def _perturb(model: nn.Module, seed: int) -> nn.Module:
    """Random-init ViTs are nearly degenerate (uniform attention, zero biases): add noise."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=gen, dtype=p.dtype))
    return model


def plain_vit(dtype: torch.dtype = torch.float64, seed: int = 0) -> VisionTransformer:
    torch.manual_seed(seed)
    model = VisionTransformer(img_size=32, patch_size=8, embed_dim=32, depth=3, num_heads=4, num_classes=5)
    return _perturb(model, seed).to(dtype).eval()


def rich_vit(dtype: torch.dtype = torch.float64, seed: int = 1) -> VisionTransformer:
    """Registers, LayerScale, qk/scale norms, pre-norm, fc_norm, pos-embed after the prefix, dropouts."""
    torch.manual_seed(seed)
    model = VisionTransformer(
        img_size=(32, 24), patch_size=8, embed_dim=48, depth=3, num_heads=3, mlp_ratio=2, num_classes=4,
        reg_tokens=2, no_embed_class=True, init_values=0.5, qk_norm=True, scale_attn_norm=True,
        scale_mlp_norm=True, pre_norm=True, fc_norm=True, drop_rate=0.1, attn_drop_rate=0.1,
        proj_drop_rate=0.1, drop_path_rate=0.1)
    return _perturb(model, seed).to(dtype).eval()


def stem() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                         nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU())


def hybrid_vit(dtype: torch.dtype = torch.float64, seed: int = 2) -> VisionTransformer:
    """The demo hybrid: timm HybridEmbed over a small conv stem (stride 4), 2×2 patches of its map."""
    torch.manual_seed(seed)
    model = VisionTransformer(img_size=32, patch_size=2, embed_layer=partial(HybridEmbed, backbone=stem()),
                              embed_dim=32, depth=2, num_heads=2, num_classes=3)
    return _perturb(model, seed).to(dtype).eval()


def images_for(model: VisionTransformer, n: int, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    h, w = model.patch_embed.img_size
    return torch.randn(n, 3, h, w, generator=gen).to(model.cls_token.dtype)


# --------------------------------------------------------------------------- slow reference
# One image at a time, every token of every block, the reference's structure: each rule is
# "gradient × input" computed with torch.autograd on the very expression the layer computes.

def sdiv(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.where(b == 0, torch.zeros_like(a), a / (b + 1e-9))


def grad_x_input(fn, inputs: list[torch.Tensor], relevance: torch.Tensor) -> list[torch.Tensor]:
    inputs = [x.detach().clone().requires_grad_() for x in inputs]
    with torch.enable_grad():
        z = fn(*inputs)
        grads = torch.autograd.grad(z, inputs, sdiv(relevance, z.detach()))
    return [x.detach() * g for x, g in zip(inputs, grads)]


def ref_linear(x: torch.Tensor, layer: nn.Linear, r: torch.Tensor, joint: bool) -> torch.Tensor:
    w = layer.weight.detach()
    xp, xn, wp, wn = x.clamp(min=0), x.clamp(max=0), w.clamp(min=0), w.clamp(max=0)
    if joint:
        rp, rn = grad_x_input(lambda a, b: F.linear(a, wp) + F.linear(b, wn), [xp, xn], r)
        return rp + rn
    (rp,) = grad_x_input(lambda a: F.linear(a, wp), [xp], r)
    (rn,) = grad_x_input(lambda b: F.linear(b, wn), [xn], r)
    return rp + rn


def ref_add(u: torch.Tensor, v: torch.Tensor, r: torch.Tensor, conserve: bool) -> list[torch.Tensor]:
    ru, rv = grad_x_input(torch.add, [u, v], r)
    if conserve:  # one image: whole-tensor sums
        su, sv, total = ru.sum(), rv.sum(), r.sum()
        ru = ru * sdiv(sdiv(su.abs(), su.abs() + sv.abs()) * total, su)
        rv = rv * sdiv(sdiv(sv.abs(), su.abs() + sv.abs()) * total, sv)
    return [ru, rv]


def ref_matmul(a: torch.Tensor, b: torch.Tensor, r: torch.Tensor) -> list[torch.Tensor]:
    return [t / 2 for t in grad_x_input(torch.matmul, [a, b], r)]


@dataclass
class RefBlock:
    x: torch.Tensor
    h1: torch.Tensor
    q: torch.Tensor
    k: torch.Tensor
    v: torch.Tensor
    attn: torch.Tensor
    o: torch.Tensor
    attn_out: torch.Tensor
    y: torch.Tensor
    h2: torch.Tensor
    hidden: torch.Tensor
    mlp_out: torch.Tensor


class Reference:
    """Forward of one image by calling the model's modules; ∇A by autograd; relevance layer by layer."""

    def __init__(self, model: VisionTransformer, image: torch.Tensor, class_id: int) -> None:
        self.model, m = model, model
        self.npt = m.num_prefix_tokens
        tokens = m.patch_embed(image)
        self.patch = tokens.reshape(1, -1, tokens.shape[-1]).detach()
        embedded = m._pos_embed(tokens)
        self.embedded_patch = embedded[:, self.npt:].detach()
        x = m.norm_pre(m.patch_drop(embedded)).detach().requires_grad_()
        self.blocks: list[RefBlock] = []
        with torch.enable_grad():
            for blk in m.blocks:
                a = blk.attn
                h1 = blk.norm1(x)
                qkv = a.qkv(h1).reshape(1, -1, 3, a.num_heads, a.head_dim).permute(2, 0, 3, 1, 4)
                q, k, v = a.q_norm(qkv[0]) * a.scale, a.k_norm(qkv[1]), qkv[2]
                attn = (q @ k.transpose(-2, -1)).softmax(-1)
                o = a.norm((attn @ v).transpose(1, 2).reshape(1, -1, a.num_heads * a.head_dim))
                attn_out = blk.ls1(a.proj(o))
                y = x + attn_out
                h2 = blk.norm2(y)
                hidden = blk.mlp.norm(blk.mlp.act(blk.mlp.fc1(h2)))
                mlp_out = blk.ls2(blk.mlp.fc2(hidden))
                self.blocks.append(RefBlock(x, h1, q, k, v, attn, o, attn_out, y, h2, hidden, mlp_out))
                x = y + mlp_out
            self.pooled = m.fc_norm(m.norm(x)[:, 0])
            self.logits = m.head(self.pooled)
            grads = torch.autograd.grad(self.logits[0, class_id], [b.attn for b in self.blocks])
        self.grads = [g.detach() for g in grads]
        self.class_id = class_id
        # the reference is the model: float64 forward (timm may take the fused attention path), eps 2.2e-16 × a
        # shallow network is ~1e-14; 1e-9 leaves room for any kernel and catches a wrong layer by orders of magnitude
        assert torch.allclose(self.logits, m(image), rtol=1e-9, atol=1e-9)

    def relevance(self, conserve: bool) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Relevance of every block's attention map (halved), and at the first block's input."""
        m, joint = self.model, conserve
        one_hot = F.one_hot(torch.tensor([self.class_id]), self.logits.shape[-1]).to(self.logits.dtype)
        r_pooled = ref_linear(self.pooled.detach(), m.head, one_hot, joint)
        r = torch.zeros_like(self.blocks[-1].x)
        r[:, 0] = r_pooled
        r_attns = []
        for blk, rec in zip(reversed(m.blocks), reversed(self.blocks)):
            d = lambda t: t.detach()  # noqa: E731
            r_y, r_mlp = ref_add(d(rec.y), d(rec.mlp_out), r, conserve)
            r_h2 = ref_linear(d(rec.h2), blk.mlp.fc1, ref_linear(d(rec.hidden), blk.mlp.fc2, r_mlp, joint), joint)
            r_x, r_attn_out = ref_add(d(rec.x), d(rec.attn_out), r_y + r_h2, conserve)
            r_o = ref_linear(d(rec.o), blk.attn.proj, r_attn_out, joint)
            heads = blk.attn.num_heads
            r_ctx = r_o.reshape(1, -1, heads, r_o.shape[-1] // heads).transpose(1, 2)
            r_a, r_v = ref_matmul(d(rec.attn), d(rec.v), r_ctx)
            r_attns.insert(0, r_a)
            r_q, r_kt = ref_matmul(d(rec.q), d(rec.k).transpose(-2, -1), r_a)
            r_qkv = torch.cat([t.transpose(1, 2).reshape(1, -1, r_o.shape[-1])
                               for t in (r_q, r_kt.transpose(-2, -1), r_v)], dim=-1)
            r = ref_linear(d(rec.h1), blk.attn.qkv, r_qkv, joint) + r_x
        return r_attns, r

    def cls_row(self, joint: torch.Tensor) -> torch.Tensor:
        gh, gw = self.model.patch_embed.grid_size
        return joint[0, self.npt:].reshape(gh, gw)

    def transformer_attribution(self, start_layer: int) -> torch.Tensor:
        r_attns, _ = self.relevance(conserve=True)
        cams = [(g * r).clamp(min=0).mean(dim=1)[0] for g, r in zip(self.grads, r_attns)]
        eye = torch.eye(cams[0].shape[-1], dtype=cams[0].dtype)
        joint = cams[start_layer] + eye
        for cam in cams[start_layer + 1:]:
            joint = (cam + eye) @ joint
        return self.cls_row(joint)

    def rollout(self, start_layer: int) -> torch.Tensor:
        mats = [b.attn.detach().mean(dim=1)[0] for b in self.blocks]
        eye = torch.eye(mats[0].shape[-1], dtype=mats[0].dtype)
        mats = [(a + eye) / (a + eye).sum(dim=-1, keepdim=True) for a in mats]
        joint = mats[start_layer]
        for a in mats[start_layer + 1:]:
            joint = a @ joint
        return self.cls_row(joint)

    def generic_attention(self, start_layer: int) -> torch.Tensor:
        """Chefer 2021b as written there: R = I, then R <- R + Ā R block by block, upwards."""
        attns = [(g * b.attn.detach()).clamp(min=0).mean(dim=1)[0] for g, b in zip(self.grads, self.blocks)]
        r = torch.eye(attns[0].shape[-1], dtype=attns[0].dtype)
        for a in attns[start_layer:]:
            r = r + a @ r
        return self.cls_row(r)

    def raw_attention(self) -> torch.Tensor:
        return self.cls_row(self.blocks[-1].attn.detach().mean(dim=1)[0])

    def gradcam(self) -> torch.Tensor:
        cam = self.blocks[-1].attn.detach()[0, :, 0, self.npt:]
        grad = self.grads[-1][0, :, 0, self.npt:]
        cam = (cam * grad.mean(dim=-1, keepdim=True)).mean(dim=0).clamp(min=0)
        return cam.reshape(self.model.patch_embed.grid_size)

    def partial_lrp(self) -> torch.Tensor:
        r_attns, _ = self.relevance(conserve=False)
        return self.cls_row(r_attns[-1].clamp(min=0).mean(dim=1)[0])

    def lrp(self, image: torch.Tensor) -> torch.Tensor:
        _, r = self.relevance(conserve=False)
        # position-embedding add, z-rule (elementwise, so the patch tokens alone suffice)
        r_patch, _ = ref_add(self.patch, self.embedded_patch - self.patch, r[:, self.npt:], conserve=False)
        gh, gw = self.model.patch_embed.grid_size
        r_conv = r_patch.transpose(1, 2).reshape(1, -1, gh, gw)
        conv = self.model.patch_embed.proj
        w = conv.weight.detach()
        low, high = torch.full_like(image, float(image.min())), torch.full_like(image, float(image.max()))
        z = lambda x, lo, hi: (F.conv2d(x, w, stride=conv.stride) - F.conv2d(lo, w.clamp(min=0), stride=conv.stride)  # noqa: E731
                               - F.conv2d(hi, w.clamp(max=0), stride=conv.stride))
        r_x, r_lo, r_hi = grad_x_input(z, [image, low, high], r_conv)
        return (r_x + r_lo + r_hi)[0].sum(dim=0)


def reference_maps(model: VisionTransformer, images: torch.Tensor, class_ids: torch.Tensor,
                   method: str, start_layer: int = 1) -> torch.Tensor:
    maps = []
    for image, c in zip(images, class_ids.tolist()):
        ref = Reference(model, image[None], c)
        if method in ("transformer_attribution", "rollout", "generic_attention"):
            maps.append(getattr(ref, method)(start_layer))
        elif method == "lrp":
            maps.append(ref.lrp(image[None]))
        else:
            maps.append(getattr(ref, method)())
    return torch.stack(maps)


# Tolerance of every equivalence check below, relative to the map's max magnitude: all of them run in float64.
# Relevance divides by pre-activations layer after layer, which amplifies rounding: the float32 maps of these
# models differ from their float64 maps by up to 2e-3 of the max (lrp), i.e. ~2e4 × float32 eps, and in float64
# the implementation and the slow reference differ by up to 1.2e-11 of the max (~5e4 × eps 2.2e-16). Any other
# CPU, BLAS, thread count or summation order changes the rounding, not that amplification: 1e-9 keeps ~100×
# headroom over it, while a real bug (wrong sign, missing term, flipped or mixed-up map) is off by ≥ 1e-3.
REL_F64 = 1e-9


def assert_maps_close(actual: torch.Tensor, expected: torch.Tensor, rel: float) -> None:
    """Equal up to ``rel`` times the largest magnitude of the expected map (per map)."""
    assert actual.shape == expected.shape
    for a, e in zip(actual, expected):
        scale = e.abs().max().clamp_min(1e-30)
        err = (a - e).abs().max()
        assert err <= rel * scale, f"max error {float(err):.3g} vs scale {float(scale):.3g}"


# --------------------------------------------------------------------------- tests

@pytest.fixture(scope="module")
def plain() -> VisionTransformer:
    return plain_vit()


@pytest.fixture(scope="module")
def rich() -> VisionTransformer:
    return rich_vit()


@pytest.fixture(scope="module")
def hybrid() -> VisionTransformer:
    return hybrid_vit()


@pytest.mark.parametrize("method", list(METHODS))
@pytest.mark.parametrize("name", ["plain", "rich"])
def test_method_matches_reference(method: str, name: str, request: pytest.FixtureRequest) -> None:
    model = request.getfixturevalue(name)
    images = images_for(model, 3)
    class_ids = torch.tensor([0, 2, 1])
    start = 0 if method in ("rollout", "generic_attention") and name == "rich" else 1  # start_layer is honoured
    out = explain(model, images, class_ids, method=method, start_layer=start)
    expected = reference_maps(model, images, class_ids, method, start)
    h, w = model.patch_embed.img_size
    gh, gw = model.patch_embed.grid_size
    assert out.shape == ((3, h, w) if method == "lrp" else (3, gh, gw))
    assert out.dtype == torch.float64 and not out.requires_grad
    assert expected.abs().max() > 0
    assert_maps_close(out, expected, rel=REL_F64)


@pytest.mark.parametrize("method", TOKEN_METHODS)
def test_hybrid_matches_reference(method: str, hybrid: VisionTransformer) -> None:
    images = images_for(hybrid, 2)
    class_ids = torch.tensor([2, 0])
    out = explain(hybrid, images, class_ids, method=method)
    assert out.shape == (2, *hybrid.patch_embed.grid_size)
    assert_maps_close(out, reference_maps(hybrid, images, class_ids, method), rel=REL_F64)


def test_lrp_refuses_hybrid_and_names_what_works(hybrid: VisionTransformer) -> None:
    with pytest.raises(ValueError, match="transformer_attribution") as info:
        explain(hybrid, images_for(hybrid, 1), torch.tensor([0]), method="lrp")
    assert "HybridEmbed" in str(info.value) and "partial_lrp" in str(info.value)


def test_transformer_attribution_start_layers(plain: VisionTransformer) -> None:
    images, class_ids = images_for(plain, 2), torch.tensor([1, 4])
    for start in (0, 2):
        assert_maps_close(explain(plain, images, class_ids, start_layer=start),
                          reference_maps(plain, images, class_ids, "transformer_attribution", start), rel=REL_F64)
    with pytest.raises(ValueError, match="start_layer"):
        explain(plain, images, class_ids, start_layer=3)


@pytest.mark.parametrize("method", list(METHODS))
def test_batch_equals_one_at_a_time(method: str) -> None:
    # float64: batched and one-image matmuls take different BLAS kernels and summation orders, and in float32
    # relevance amplifies that to up to ~2e-3 of the max on some CPUs (see REL_F64); in float64 it is < 1e-12
    model = plain_vit(torch.float64, seed=3)
    images = images_for(model, 4, seed=5)
    class_ids = torch.tensor([3, 0, 4, 1])
    batch = explain(model, images, class_ids, method=method)
    singles = torch.cat([explain(model, images[i:i + 1], class_ids[i:i + 1], method=method) for i in range(4)])
    assert_maps_close(batch, singles, rel=REL_F64)
    # the same image with other neighbours (and another batch size)
    other = explain(model, torch.stack([images[2], images[0] * 2]), torch.tensor([4, 2]), method=method)
    assert_maps_close(other[:1], singles[2:3], rel=REL_F64)


def _snapshot(model: nn.Module) -> dict:
    return {
        "state": {k: v.clone() for k, v in model.state_dict().items()},
        "flags": [m.training for m in model.modules()],
        "requires_grad": [p.requires_grad for p in model.parameters()],
        "grads": [None if p.grad is None else p.grad.clone() for p in model.parameters()],
        "modules": [type(m) for m in model.modules()],
    }


def _assert_untouched(model: nn.Module, before: dict) -> None:
    after = _snapshot(model)
    assert after["state"].keys() == before["state"].keys()
    for k, v in before["state"].items():
        assert torch.equal(after["state"][k], v), k
    assert after["flags"] == before["flags"]
    assert after["requires_grad"] == before["requires_grad"]
    assert after["modules"] == before["modules"]
    for g_after, g_before in zip(after["grads"], before["grads"]):
        assert (g_after is None) == (g_before is None)
        if g_before is not None:
            assert torch.equal(g_after, g_before)
    for m in model.modules():
        assert not m._forward_hooks and not m._forward_pre_hooks
        assert not m._backward_hooks and not m._backward_pre_hooks
        assert not getattr(m, "_state_dict_hooks", {}) and not getattr(m, "_load_state_dict_pre_hooks", {})


def test_works_under_inference_mode(plain: VisionTransformer) -> None:
    images, class_ids = images_for(plain, 2), torch.tensor([1, 2])
    expected = {m: explain(plain, images, class_ids, method=m) for m in METHODS}
    with torch.inference_mode():
        for method in METHODS:
            # float64; kernels may differ under inference mode, so the same bound as any reordering
            assert_maps_close(explain(plain, images.clone(), class_ids, method=method), expected[method], rel=REL_F64)


@pytest.mark.parametrize("no_grad", [False, True])
def test_model_left_untouched(no_grad: bool) -> None:
    model = hybrid_vit(torch.float32)  # has BatchNorm: running stats must not move
    model.blocks[0].attn.proj.weight.grad = torch.ones_like(model.blocks[0].attn.proj.weight)
    class_ids = torch.tensor([0, 1])
    plain_model = plain_vit(torch.float32)
    for mdl in (model, plain_model):
        before = _snapshot(mdl)
        methods = TOKEN_METHODS if mdl is model else list(METHODS)
        for method in methods:
            if no_grad:
                with torch.no_grad():
                    out = explain(mdl, images_for(mdl, 2), class_ids, method=method)
            else:
                out = explain(mdl, images_for(mdl, 2), class_ids, method=method)
            assert torch.isfinite(out).all() and not out.requires_grad
        _assert_untouched(mdl, before)
    assert torch.is_grad_enabled()


def test_training_mode_model_is_explained_in_eval_semantics_and_left_training() -> None:
    # dropouts and drop-path: eval semantics needed. float64, so that the bound is machine-independent: an active
    # dropout (rate 0.1) changes the maps by O(1) of their max, far above REL_F64
    model = rich_vit(torch.float64)
    images, class_ids = images_for(model, 2), torch.tensor([1, 3])
    expected = {m: explain(model, images, class_ids, method=m) for m in METHODS}
    model.train()
    model.blocks[1].eval()  # a mixed state must come back exactly
    before = _snapshot(model)
    for method in METHODS:
        assert_maps_close(explain(model, images, class_ids, method=method), expected[method], rel=REL_F64)
    _assert_untouched(model, before)
    assert model.training and not model.blocks[1].training and model.blocks[2].training


@pytest.mark.parametrize("name", ["vit_tiny_patch16_224", "deit_tiny_patch16_224"])
def test_stock_timm_models(name: str) -> None:
    model = timm.create_model(name, pretrained=False, img_size=32, num_classes=4).eval()
    images, class_ids = images_for(model, 2), torch.tensor([0, 3])
    for method in METHODS:
        out = explain(model, images, class_ids, method=method)
        assert out.shape == ((2, 32, 32) if method == "lrp" else (2, 2, 2))
        assert torch.isfinite(out).all()
    model = _perturb(model.double(), 0)
    images = images.double()
    assert_maps_close(explain(model, images, class_ids),
                      reference_maps(model, images, class_ids, "transformer_attribution"), rel=REL_F64)


def test_stock_timm_hybrid() -> None:
    model = timm.create_model("vit_tiny_r_s16_p8_224", pretrained=False, img_size=128, num_classes=3).eval()
    images, class_ids = images_for(model, 2), torch.tensor([0, 2])
    assert isinstance(model.patch_embed, HybridEmbed)
    for method in TOKEN_METHODS:
        out = explain(model, images, class_ids, method=method)
        assert out.shape == (2, *model.patch_embed.grid_size) and torch.isfinite(out).all()
    with pytest.raises(ValueError, match="rollout"):
        explain(model, images, class_ids, method="lrp")


@pytest.mark.parametrize("kwargs, match", [
    (dict(global_pool="avg"), "global_pool"),
    (dict(class_token=False, global_pool="avg"), "class token"),
    (dict(block_fn=ResPostBlock), "ResPostBlock"),
    (dict(num_classes=0), "head"),
])
def test_unsupported_models_are_refused(kwargs: dict, match: str) -> None:
    model = VisionTransformer(img_size=16, patch_size=8, embed_dim=16, depth=1, num_heads=2,
                              **{"num_classes": 3, **kwargs}).eval()
    with pytest.raises(ValueError, match=match):
        explain(model, torch.randn(1, 3, 16, 16), torch.tensor([0]))


def test_bad_arguments_are_refused(plain: VisionTransformer) -> None:
    images = images_for(plain, 2)
    with pytest.raises(ValueError, match="unknown method"):
        explain(plain, images, torch.tensor([0, 1]), method="saliency")
    with pytest.raises(ValueError, match="class_ids"):
        explain(plain, images, torch.tensor([0]))
    with pytest.raises(ValueError, match="class_ids"):
        explain(plain, images, torch.tensor([0, 5]))
    with pytest.raises(ValueError, match="VisionTransformer"):
        explain(nn.Linear(2, 2), images, torch.tensor([0, 1]))
