"""Our own forward pass over a timm VisionTransformer's submodules, recording what relevance needs.

The model is never modified: weights are read detached (so no autograd path reaches a
parameter), no hooks are registered, and train/eval flags are restored on exit. Blocks whose
internals no method needs run as the model's own blocks under ``no_grad``.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import HybridEmbed, LayerScale, Mlp, PatchEmbed
from timm.layers.attention import Attention
from timm.models.vision_transformer import Block, VisionTransformer
from torch import Tensor

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
    logits: Tensor | None  # Q·Kᵀ (B, h, nq, N); None in a kept trace, remade when needed
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
        # q @ kᵀ again (when not kept) is the same operation on the same operands: the same bytes
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


def _embed(model: VisionTransformer, images: Tensor) -> tuple[Tensor, Tensor, Tensor, tuple[int, int]]:
    """Patch tokens, tokens with the position embedding, the first block's input, and the grid."""
    with torch.no_grad():
        tokens = model.patch_embed(images)
        embedded = model._pos_embed(tokens)
        return tokens, embedded, model.norm_pre(model.patch_drop(embedded)), _grid(model, tokens, images)


@dataclass
class _Recorded:
    """One recorded block between the forward pass and its turn in the top-down sweep."""

    index: int
    x: Tensor                                   # block input; a leaf needing grad when gradients are taken
    out: Tensor | None = None                   # block output (kept traces only)
    trace: BlockTrace | None = None             # kept traces only; None: recomputed from x in the sweep


class ModelTrace:
    """The model run once on ``images`` in eval semantics, its recorded blocks visited top-down.

    Blocks below ``first_recorded`` run as the model's own blocks under no_grad; the others run
    through ``block_forward``, the last one for the class token only. Every method reads the
    blocks from the top down (relevance and gradients flow that way), so ``top_down()`` hands out
    one block's trace at a time and lets it go before the next: the peak holds one block's
    attention-sized tensors, not one per block.

    - ``class_ids`` given: each block comes with ∂(one_hot · logits)/∂A, its attention map's
      gradient. Each recorded block's input is a leaf of its own graph, so the backward pass
      runs block by block, and a block's graph is freed as soon as its gradient is out.
    - ``recompute``: the forward pass keeps only each block's input (B, N, D); the sweep runs
      the block again to trace it. The same operations on the same inputs give the same bytes,
      so this trades one more forward pass for memory, never results.

    Nothing reaches a parameter (weights are read detached).
    """

    def __init__(self, model: VisionTransformer, images: Tensor, first_recorded: int, class_ids: Tensor | None = None,
                 recompute: bool = False, keep_embed: bool = False) -> None:
        self.model, self.first_recorded = model, first_recorded
        self.with_grads = class_ids is not None
        tokens, embedded, x, self.grid = _embed(model, images)
        self.num_prefix = npt = model.num_prefix_tokens
        self.embed = EmbedTrace(tokens.reshape(tokens.shape[0], -1, tokens.shape[-1]), embedded[:, npt:]) if keep_embed else None

        self._recorded: list[_Recorded] = []
        for i, blk in enumerate(model.blocks):
            if i < first_recorded:
                with torch.no_grad():
                    x = blk(x)
                continue
            record = _Recorded(i, self._leaf(x))
            with torch.set_grad_enabled(self.with_grads and not recompute):
                out, trace = block_forward(blk, record.x, self._n_query(i, x))
            if not recompute:
                trace.logits = None  # only the Q·Kᵀ rule reads it, and q, k remake it
                record.out, record.trace = out, trace
            del trace
            self._recorded.append(record)
            x = out.detach()

        top = self._leaf(x)
        with torch.set_grad_enabled(self.with_grads):
            pooled = _norm(model.fc_norm, _norm(model.norm, top)[:, 0])  # head_drop: identity in eval
            logits, self.head = _linear(pooled, model.head.weight.detach(), _param(model.head.bias))
        self.logits = logits.detach()
        self._grad_out = None
        if self.with_grads:
            with torch.enable_grad():  # per-image terms: batch-independent
                target = (logits * F.one_hot(class_ids, logits.shape[-1]).to(logits.dtype)).sum()
            (self._grad_out,) = torch.autograd.grad(target, top)
            self.head = LinearTrace(self.head.x.detach(), self.head.xw.detach(), self.head.weight)

    def _leaf(self, x: Tensor) -> Tensor:
        """A block input as the root of a graph of its own (when gradients are taken)."""
        return x.detach().requires_grad_(self.with_grads)

    def _n_query(self, index: int, x: Tensor) -> int:
        return 1 if index == len(self.model.blocks) - 1 else x.shape[1]

    def __len__(self) -> int:
        return len(self._recorded)

    def top_down(self) -> Iterator[tuple[BlockTrace, Tensor | None]]:
        """Recorded blocks from the top down: (trace, gradient of its attention map or None).
        Each block's trace and graph are released when the loop moves on."""
        grad_out = self._grad_out
        while self._recorded:
            record = self._recorded.pop()
            out, trace = record.out, record.trace
            if trace is None:
                with torch.set_grad_enabled(self.with_grads):
                    out, trace = block_forward(self.model.blocks[record.index], record.x, self._n_query(record.index, record.x))
            grad_attn = None
            if self.with_grads:
                # the bottom recorded block's input gradient is never used
                wanted = (trace.attn, record.x) if record.index > self.first_recorded else (trace.attn,)
                grad_attn, *below = torch.autograd.grad(out, wanted, grad_outputs=grad_out)
                grad_out = below[0] if below else None
                del wanted, below
            del record, out
            yield trace, grad_attn
            del trace, grad_attn


def attention_maps(model: VisionTransformer, images: Tensor, first_recorded: int,
                   reduce: Callable[[Tensor], Tensor]) -> tuple[tuple[int, int], int, list[Tensor]]:
    """``reduce`` of the attention map (B, h, nq, N) of each block from ``first_recorded`` on,
    bottom block first, with the token grid and the prefix-token count. Only the reduced maps
    (e.g. a head mean) outlive their block. Runs under no_grad."""
    _, _, x, grid = _embed(model, images)
    with torch.no_grad():
        maps = []
        last = len(model.blocks) - 1
        for i, blk in enumerate(model.blocks):
            if i < first_recorded:
                x = blk(x)
                continue
            x, trace = block_forward(blk, x, n_query=1 if i == last else x.shape[1])
            maps.append(reduce(trace.attn))
            del trace
    return grid, model.num_prefix_tokens, maps
