"""Our own forward pass over a timm VisionTransformer's submodules, recording what relevance needs.

The model is never modified: weights are read detached (so no autograd path reaches a
parameter), no hooks are registered, and train/eval flags are restored on exit. Blocks whose
internals no method needs run as the model's own blocks under ``no_grad``.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor
from timm.layers import HybridEmbed, LayerScale, Mlp, PatchEmbed
from timm.layers.attention import Attention
from timm.models.vision_transformer import Block, VisionTransformer

from .registry import get_method, token_method_names
from .rules import RuleSet, branch_sum

# --------------------------------------------------------------------------- model checks

def check_model(model: nn.Module, method: str) -> None:
    """Raise ValueError naming what is unsupported and what works."""
    supported = ("a timm VisionTransformer (vit_*, deit_*, hybrid vit_*_r*_*) with a class token, "
                 "global_pool='token', a Linear head and standard timm Blocks")
    if not isinstance(model, VisionTransformer):
        raise ValueError(f"explain() needs {supported}; got {type(model).__name__}.")
    if not getattr(model, "has_class_token", False) or model.cls_token is None:
        raise ValueError(f"the model has no class token; relevance is read from the class token's row. "
                         f"explain() needs {supported}.")
    if model.global_pool != "token" or getattr(model, "attn_pool", None) is not None:
        raise ValueError(f"global_pool={model.global_pool!r} is not supported: the methods explain a "
                         f"class-token classifier. explain() needs {supported}.")
    if not isinstance(model.head, nn.Linear):
        raise ValueError(f"the head is {type(model.head).__name__}, not nn.Linear (num_classes must be > 0). "
                         f"explain() needs {supported}.")
    if len(model.blocks) == 0:
        raise ValueError("the model has no transformer blocks.")
    for i, blk in enumerate(model.blocks):
        _check_block(i, blk, supported)
    if get_method(method).pixels:
        embed = model.patch_embed
        if isinstance(embed, HybridEmbed) or not (
                isinstance(embed, PatchEmbed) and type(embed).forward is PatchEmbed.forward
                and isinstance(embed.proj, nn.Conv2d)):
            raise ValueError(
                f"method {method!r} propagates relevance down to the pixels through a plain patch-embedding "
                f"convolution; this model's patch embedding is {type(embed).__name__} (e.g. a CNN stem), "
                f"where relevance stops at the tokens. Use one of {', '.join(token_method_names())}.")


def _check_block(i: int, blk: nn.Module, supported: str) -> None:
    def refuse(what: str) -> None:
        raise ValueError(f"block {i}: {what} is not supported. explain() needs {supported}.")

    if not isinstance(blk, Block) or type(blk).forward is not Block.forward:
        refuse(f"block type {type(blk).__name__}")
    attn = blk.attn
    if not isinstance(attn, Attention) or type(attn).forward is not Attention.forward:
        refuse(f"attention type {type(attn).__name__}")
    if getattr(attn, "gate", None) is not None:
        refuse("gated attention")
    mlp = blk.mlp
    if not isinstance(mlp, Mlp) or type(mlp).forward is not Mlp.forward or not (
            isinstance(mlp.fc1, nn.Linear) and isinstance(mlp.fc2, nn.Linear)):
        refuse(f"MLP type {type(mlp).__name__}")
    for name in ("ls1", "ls2"):
        if not isinstance(getattr(blk, name), (LayerScale, nn.Identity)):
            refuse(f"{name} of type {type(getattr(blk, name)).__name__}")


# --------------------------------------------------------------------------- small helpers

def _param(p: Tensor | None) -> Tensor | None:
    return None if p is None else p.detach()


def _norm(module: nn.Module, x: Tensor) -> Tensor:
    """A norm layer with detached parameters (any other module type is called as is)."""
    if isinstance(module, nn.Identity):
        return x
    if isinstance(module, nn.LayerNorm):
        return F.layer_norm(x, module.normalized_shape, _param(module.weight), _param(module.bias), module.eps)
    return module(x)


def _layer_scale(module: nn.Module, x: Tensor) -> Tensor:
    return x * module.gamma.detach() if isinstance(module, LayerScale) else x


@dataclass
class LinearTrace:
    """A Linear layer's input, its bias-free product x Wᵀ, and the (detached) weight."""

    x: Tensor
    xw: Tensor
    weight: Tensor

    def relevance(self, rules: RuleSet, relevance: Tensor) -> Tensor:
        return rules.linear(self.x, self.weight, relevance, self.xw)


def _linear(x: Tensor, weight: Tensor, bias: Tensor | None) -> tuple[Tensor, LinearTrace]:
    xw = F.linear(x, weight)
    return (xw if bias is None else xw + bias), LinearTrace(x, xw, weight)


# --------------------------------------------------------------------------- one block

@dataclass
class BlockTrace:
    """What one block's forward recorded. Queries (and everything token-wise after attention)
    cover the first ``n_query`` tokens: all of them, or just the class token in the last block,
    where no other token's output reaches the logits."""

    n_query: int
    x: Tensor          # block input (B, N, D)
    q_lin: LinearTrace
    kv_lin: LinearTrace
    q: Tensor          # (B, h, nq, d), normalised and scaled: the operand of Q·Kᵀ
    k: Tensor          # (B, h, N, d)
    v: Tensor          # (B, h, N, d)
    logits: Tensor     # Q·Kᵀ (B, h, nq, N)
    attn: Tensor       # softmax (B, h, nq, N)
    ctx: Tensor        # A·V (B, h, nq, d)
    proj: LinearTrace
    attn_out: Tensor   # attention branch, after LayerScale (B, nq, D)
    y: Tensor          # after the first residual (B, nq, D)
    fc1: LinearTrace
    fc2: LinearTrace
    mlp_out: Tensor    # MLP branch, after LayerScale (B, nq, D)

    def propagate(self, relevance: Tensor, rules: RuleSet, to_input: bool = True) -> tuple[Tensor, Tensor | None]:
        """Relevance at the block output (B, nq, D) -> (relevance of the attention map
        (B, h, nq, N), halved as the reference saves it; relevance at the block input (B, N, D),
        or None when ``to_input`` is False and the pass can stop at the attention map)."""
        nq = self.n_query
        b, heads, _, d = self.q.shape
        # MLP residual; ls2, drop, norm2, act, mlp.norm are identities
        r_y, r_mlp = rules.add(self.y, self.mlp_out, relevance)
        r_h2 = self.fc1.relevance(rules, self.fc2.relevance(rules, r_mlp))
        r_y = branch_sum([r_y, r_h2])
        # attention residual; ls1, proj_drop, attn.norm are identities
        r_x, r_attn_out = rules.add(self.x[:, :nq], self.attn_out, r_y)
        r_ctx = self.proj.relevance(rules, r_attn_out).reshape(b, nq, heads, d).transpose(1, 2)
        if not to_input:
            return rules.matmul.relevance_a(self.attn, self.v, r_ctx, self.ctx), None
        r_attn, r_v = rules.matmul(self.attn, self.v, r_ctx, self.ctx)
        # softmax, attn_drop: identities; Q·Kᵀ
        r_q, r_kt = rules.matmul(self.q, self.k.transpose(-2, -1), r_attn, self.logits)
        r_k = r_kt.transpose(-2, -1)

        def merge(r: Tensor) -> Tensor:  # (B, h, n, d) -> (B, n, h·d), the qkv column layout
            return r.transpose(1, 2).reshape(b, r.shape[2], heads * d)

        r_h1 = self.kv_lin.relevance(rules, torch.cat([merge(r_k), merge(r_v)], dim=-1))
        r_h1[:, :nq] += self.q_lin.relevance(rules, merge(r_q))
        r_h1[:, :nq] += r_x  # the block input feeds both norm1 and the residual
        return r_attn, r_h1


def block_forward(blk: Block, x: Tensor, n_query: int) -> tuple[Tensor, BlockTrace]:
    """timm Block.forward in eval semantics, with queries restricted to the first ``n_query``
    tokens; returns the (B, n_query, D) output and its trace."""
    attn = blk.attn
    b, n, _ = x.shape
    heads, d = attn.num_heads, attn.head_dim
    inner = heads * d
    w_qkv, b_qkv = attn.qkv.weight.detach(), _param(attn.qkv.bias)

    h1 = _norm(blk.norm1, x)
    q, q_lin = _linear(h1[:, :n_query], w_qkv[:inner], None if b_qkv is None else b_qkv[:inner])
    kv, kv_lin = _linear(h1, w_qkv[inner:], None if b_qkv is None else b_qkv[inner:])
    q = q.reshape(b, n_query, heads, d).transpose(1, 2)
    k, v = kv.reshape(b, n, 2, heads, d).permute(2, 0, 3, 1, 4).unbind(0)
    q, k = _norm(attn.q_norm, q) * attn.scale, _norm(attn.k_norm, k)
    logits = q @ k.transpose(-2, -1)
    a = logits.softmax(dim=-1)
    ctx = a @ v
    o = _norm(attn.norm, ctx.transpose(1, 2).reshape(b, n_query, inner))
    attn_out, proj = _linear(o, attn.proj.weight.detach(), _param(attn.proj.bias))
    attn_out = _layer_scale(blk.ls1, attn_out)
    y = x[:, :n_query] + attn_out

    mlp = blk.mlp
    h2 = _norm(blk.norm2, y)
    hidden, fc1 = _linear(h2, mlp.fc1.weight.detach(), _param(mlp.fc1.bias))
    hidden = _norm(mlp.norm, mlp.act(hidden))
    mlp_out, fc2 = _linear(hidden, mlp.fc2.weight.detach(), _param(mlp.fc2.bias))
    mlp_out = _layer_scale(blk.ls2, mlp_out)
    out = y + mlp_out
    return out, BlockTrace(n_query=n_query, x=x, q_lin=q_lin, kv_lin=kv_lin, q=q, k=k, v=v, logits=logits, attn=a, ctx=ctx,
                           proj=proj, attn_out=attn_out, y=y, fc1=fc1, fc2=fc2, mlp_out=mlp_out)


# --------------------------------------------------------------------------- whole model

@dataclass
class EmbedTrace:
    """Token embedding: the patch tokens before and after the position embedding (B, L, D)."""

    patch: Tensor
    embedded: Tensor


@dataclass
class ModelTrace:
    grid: tuple[int, int]
    num_prefix: int
    blocks: list[BlockTrace]   # one per recorded block; empty when traced with attention_only
    attentions: list[Tensor]   # the attention map (B, h, nq, N) of each recorded block
    first_recorded: int
    head: LinearTrace
    logits: Tensor
    embed: EmbedTrace | None


def _grid(model: VisionTransformer, tokens: Tensor, images: Tensor) -> tuple[int, int]:
    if tokens.ndim == 4:  # NHWC (dynamic_img_size)
        return int(tokens.shape[1]), int(tokens.shape[2])
    embed = model.patch_embed
    size = (int(images.shape[-2]), int(images.shape[-1]))
    grid = tuple(embed.dynamic_feat_size(size)) if hasattr(embed, "dynamic_feat_size") else tuple(embed.grid_size)
    if grid[0] * grid[1] != tokens.shape[1]:
        grid = tuple(embed.grid_size)
    if grid[0] * grid[1] != tokens.shape[1]:
        raise ValueError(f"cannot tell the token grid of {tokens.shape[1]} patch tokens for input {size}")
    return int(grid[0]), int(grid[1])


def trace_model(model: VisionTransformer, images: Tensor, first_recorded: int, grad_from: int | None = None,
                attention_only: bool = False, keep_embed: bool = False) -> ModelTrace:
    """Run the model on ``images`` (in eval semantics; call under ``torch.no_grad()``).

    Blocks below ``first_recorded`` run as the model's own blocks under no_grad; the others run
    through ``block_forward`` and are traced, the last one for the class token only. From block
    ``grad_from`` on, autograd records the computation (the input of that block is a fresh leaf)
    so that gradients with respect to attention maps can be taken; no path reaches a parameter.
    """
    depth = len(model.blocks)
    with torch.no_grad():
        tokens = model.patch_embed(images)
        grid = _grid(model, tokens, images)
        embedded = model._pos_embed(tokens)
        x = model.norm_pre(model.patch_drop(embedded))
    npt = model.num_prefix_tokens
    embed = None
    if keep_embed:
        embed = EmbedTrace(tokens.reshape(tokens.shape[0], -1, tokens.shape[-1]), embedded[:, npt:])

    traces: list[BlockTrace] = []
    attentions: list[Tensor] = []
    for i, blk in enumerate(model.blocks):
        grad = grad_from is not None and i >= grad_from
        with torch.set_grad_enabled(grad):
            if grad and i == grad_from:
                x = x.detach().requires_grad_(True)
            if i < first_recorded:
                x = blk(x)
                continue
            x, trace = block_forward(blk, x, n_query=1 if i == depth - 1 else x.shape[1])
            attentions.append(trace.attn)
            if not attention_only:  # the rest is only kept for relevance passes
                traces.append(trace)

    with torch.set_grad_enabled(grad_from is not None):
        pooled = _norm(model.fc_norm, _norm(model.norm, x)[:, 0])  # head_drop: identity in eval
        logits, head = _linear(pooled, model.head.weight.detach(), _param(model.head.bias))
    return ModelTrace(grid=grid, num_prefix=npt, blocks=traces, attentions=attentions, first_recorded=first_recorded,
                      head=head, logits=logits, embed=embed)
