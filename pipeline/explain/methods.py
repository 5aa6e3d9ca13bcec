"""The explanation methods of docs/methods.md ("Explanation methods") behind one entry point, ``explain``."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from timm.models.vision_transformer import VisionTransformer
from torch import Tensor

from pipeline.core.eval_mode import eval_mode

from .registry import get_method, register_method
from .rules import CONSERVATIVE, SEPARATE, ConvZB, RuleSet, cls_pool
from .trace import ModelTrace, attention_maps, check_model


def _one_hot(trace: ModelTrace, class_ids: Tensor) -> Tensor:
    return F.one_hot(class_ids, trace.logits.shape[-1]).to(trace.logits.dtype)


def _relevance_at_last_block(trace: ModelTrace, class_ids: Tensor, rules: RuleSet) -> Tensor:
    """The one-hot at the logits through the head; norm/fc_norm are identities and CLS pooling sends
    it to token 0, which is the last block's only (query) token: (B, 1, D)."""
    r_pooled = trace.head.relevance(rules, _one_hot(trace, class_ids))
    return cls_pool(r_pooled, num_tokens=1)


def _to_grid(grid: tuple[int, int], num_prefix: int, cls_row: Tensor) -> Tensor:
    """(B, N) class-token row -> (B, gh, gw) over the patch tokens (prefix tokens dropped)."""
    return cls_row[:, num_prefix:].reshape(cls_row.shape[0], *grid)


def _chain_row(row: Tensor | None, cam: Tensor) -> Tensor:
    """CLS row (B, 1, N) of (I + cam_top)···(I + cam) for the head-mean maps (B, nq, N) of the
    blocks so far, top block first: only that row of the chain is ever needed, a row vector
    times (I + cam) per block (the top block's maps cover the class-token query alone)."""
    if row is None:
        row = cam[:, :1].clone()
        row[..., 0] += 1
        return row
    return row + row @ cam


def _check_start(model: VisionTransformer, start_layer: int) -> None:
    depth = len(model.blocks)
    if not 0 <= start_layer < depth:
        raise ValueError(f"start_layer must be in [0, {depth}) for this {depth}-block model; got {start_layer}")


# --------------------------------------------------------------------------- methods
# Each method reads the blocks top-down and folds each one into what its chain needs (a class-token
# row, a relevance vector per token) before the next block is traced or released. ``recompute``
# (ModelTrace) only changes memory and time, never the maps.

@register_method(recomputable=True)
def transformer_attribution(model: VisionTransformer, images: Tensor, class_ids: Tensor, start_layer: int,
                            recompute: bool = False) -> Tensor:
    """Chefer et al.: Ā_i = mean_h clamp(∇A_i ⊙ R_A_i, 0); CLS row of (Ā_L−1 + I)···(Ā_s + I)."""
    _check_start(model, start_layer)
    trace = ModelTrace(model, images, first_recorded=start_layer, class_ids=class_ids, recompute=recompute)
    relevance = _relevance_at_last_block(trace, class_ids, CONSERVATIVE)
    row, left = None, len(trace)
    # not enumerate(): it would hold the previous block's trace while the next one is traced
    for block, grad in trace.top_down():
        left -= 1
        r_attn, relevance = block.propagate(relevance, CONSERVATIVE, to_input=left > 0)
        del block
        row = _chain_row(row, grad.mul_(r_attn).clamp_(min=0).mean(dim=1))
        del r_attn, grad
    return _to_grid(trace.grid, trace.num_prefix, row[:, 0])


@register_method()
def rollout(model: VisionTransformer, images: Tensor, class_ids: Tensor, start_layer: int) -> Tensor:
    """Abnar & Zuidema: head-mean attention, (A + I) row-normalised, chained from start_layer; CLS row."""
    _check_start(model, start_layer)
    grid, num_prefix, means = attention_maps(model, images, start_layer, reduce=lambda attn: attn.mean(dim=1))
    row = None
    while means:
        joint = means.pop()  # (B, nq, N), top block first
        nq, n = joint.shape[-2:]
        joint = joint + torch.eye(nq, n, dtype=joint.dtype, device=joint.device)
        joint = joint / joint.sum(dim=-1, keepdim=True)
        row = joint[:, :1] if row is None else row @ joint
    return _to_grid(grid, num_prefix, row[:, 0])


@register_method()
def raw_attention(model: VisionTransformer, images: Tensor, class_ids: Tensor, start_layer: int) -> Tensor:
    """Last block's attention, head mean, CLS row."""
    grid, num_prefix, (cls_row,) = attention_maps(model, images, len(model.blocks) - 1,
                                                  reduce=lambda attn: attn[:, :, 0].mean(dim=1))
    return _to_grid(grid, num_prefix, cls_row)


@register_method()
def gradcam(model: VisionTransformer, images: Tensor, class_ids: Tensor, start_layer: int) -> Tensor:
    """GradCAM on the last block's CLS-row attention: heads weighted by the mean gradient over the
    patch tokens, head mean, clamp ≥ 0."""
    trace = ModelTrace(model, images, first_recorded=len(model.blocks) - 1, class_ids=class_ids)
    ((block, grad),) = trace.top_down()
    npt = trace.num_prefix
    attn, grad = block.attn[:, :, 0, npt:], grad[:, :, 0, npt:]
    cam = (attn * grad.mean(dim=-1, keepdim=True)).mean(dim=1).clamp(min=0)
    return cam.reshape(cam.shape[0], *trace.grid)


@register_method()
def partial_lrp(model: VisionTransformer, images: Tensor, class_ids: Tensor, start_layer: int) -> Tensor:
    """Voita et al.: the last block's attention relevance (separate-normalisation LRP), clamp ≥ 0,
    head mean, CLS row."""
    trace = ModelTrace(model, images, first_recorded=len(model.blocks) - 1)
    relevance = _relevance_at_last_block(trace, class_ids, SEPARATE)
    ((block, _),) = trace.top_down()
    r_attn, _ = block.propagate(relevance, SEPARATE, to_input=False)
    return _to_grid(trace.grid, trace.num_prefix, r_attn.clamp(min=0).mean(dim=1)[:, 0])


@register_method(pixels=True, recomputable=True)
def lrp(model: VisionTransformer, images: Tensor, class_ids: Tensor, start_layer: int,
        recompute: bool = False) -> Tensor:
    """Binder et al.: separate-normalisation LRP through every block, the position-embedding add
    (z-rule), and the patch-embedding convolution (z^B, per-image bounds); summed over colour."""
    trace = ModelTrace(model, images, first_recorded=0, keep_embed=True, recompute=recompute)
    relevance = _relevance_at_last_block(trace, class_ids, SEPARATE)
    for block, _ in trace.top_down():
        _, relevance = block.propagate(relevance, SEPARATE)
        del block
    # norm_pre, patch_drop: identities; then the position embedding was added to the patch tokens
    embed = trace.embed
    r_patch = relevance[:, trace.num_prefix:]
    r_patch, _ = SEPARATE.add(embed.patch, embed.embedded - embed.patch, r_patch)
    # patch_embed.norm: identity; tokens back to the conv's (B, D, gh, gw) output layout
    b, _, dim = r_patch.shape
    r_conv = r_patch.transpose(1, 2).reshape(b, dim, *trace.grid)
    pe = model.patch_embed
    conv = pe.proj
    x = images
    if pe.dynamic_img_pad:
        pad_h = (-x.shape[-2]) % pe.patch_size[0]
        pad_w = (-x.shape[-1]) % pe.patch_size[1]
        x = F.pad(x, (0, pad_w, 0, pad_h))
    rule = ConvZB(stride=conv.stride, padding=conv.padding, dilation=conv.dilation, groups=conv.groups)
    r_pixels = rule(x, conv.weight.detach(), r_conv)
    return r_pixels[..., :images.shape[-2], :images.shape[-1]].sum(dim=1)


@register_method(recomputable=True)
def generic_attention(model: VisionTransformer, images: Tensor, class_ids: Tensor, start_layer: int,
                      recompute: bool = False) -> Tensor:
    """Chefer et al. 2021b: R <- R + Ā_i R from R = I, Ā_i = mean_h clamp(∇A_i ⊙ A_i, 0); CLS row of R."""
    _check_start(model, start_layer)
    trace = ModelTrace(model, images, first_recorded=start_layer, class_ids=class_ids, recompute=recompute)
    row = None
    # R = (I + Ā_L-1)···(I + Ā_s) from R <- R + Ā R
    for block, grad in trace.top_down():
        row = _chain_row(row, grad.mul_(block.attn).clamp_(min=0).mean(dim=1))
        del block, grad
    return _to_grid(trace.grid, trace.num_prefix, row[:, 0])


def explain(model: VisionTransformer, images: Tensor, class_ids: Tensor,
            method: str = "transformer_attribution", start_layer: int = 1, recompute: bool = False) -> Tensor:
    """Relevance of each image's pixels/tokens for the class to explain.

    Args:
        model: a timm ``VisionTransformer`` (plain or hybrid), normally in eval mode; it is run in
            eval semantics and left exactly as it was (parameters, grads, hooks, training flags).
        images: (B, 3, H, W), normalised for the model, on the model's device and dtype.
        class_ids: (B,) integer class per image.
        method: a registered method (``pipeline.explain.METHODS``).
        start_layer: first block of the chain for ``transformer_attribution`` and ``rollout``
            (ignored by the others).
        recompute: keep only each block's input in the forward pass and run the block again when
            the top-down pass reaches it: the peak then holds one block's attention maps instead
            of one per block, for one more forward pass. The maps are the same bytes either way.

    Returns:
        (B, gh, gw) raw maps on the token grid; (B, H, W) for ``lrp``. Detached, the images' dtype.
    """
    registered = get_method(method)
    check_model(model, method)
    if images.ndim != 4:
        raise ValueError(f"images must be (B, C, H, W); got shape {tuple(images.shape)}")
    class_ids = torch.as_tensor(class_ids)
    if class_ids.shape != images.shape[:1] or class_ids.is_floating_point():
        raise ValueError(f"class_ids must be an integer tensor of shape ({images.shape[0]},); "
                         f"got {class_ids.dtype} {tuple(class_ids.shape)}")
    num_classes = model.head.out_features
    # checked where they are (on the host for a dry run on the meta device), then moved
    if len(class_ids) and not (0 <= int(class_ids.min()) and int(class_ids.max()) < num_classes):
        raise ValueError(f"class_ids must lie in [0, {num_classes})")
    class_ids = class_ids.to(images.device)
    # callers may be in no_grad or inference_mode: gradients w.r.t. attention maps need autograd
    with torch.inference_mode(False), eval_mode(model), torch.no_grad():
        options = {"recompute": recompute} if registered.recomputable else {}
        return registered.function(model, images, class_ids.long(), start_layer, **options).detach()
