"""Explanation batches sized from their measured peak memory (pipeline/core/memory.py).

A plan is made once per input side from dry runs on the meta device, so it depends on the model's
shapes, the method, the side and the budget, and on nothing the machine at hand decides.
"""
from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial

import torch
from timm.models.vision_transformer import VisionTransformer
from torch import Tensor

from pipeline.core.errors import InputError
from pipeline.core.memory import GIB, forward_batch, largest_batch, on_meta, peak_bytes, require_available

from .methods import explain
from .registry import get_method


@dataclass(frozen=True)
class ExplainPlan:
    """How to explain inputs of one side: ``batch`` rows per call, with or without recomputation,
    and the measured tensor peak of such a call (bytes, beyond the model's weights)."""

    side: int
    batch: int
    recompute: bool
    peak: int


def _dry_peak(meta_model: VisionTransformer, method: str, start_layer: int, side: int, batch: int, recompute: bool) -> int:
    images = torch.zeros(batch, 3, side, side, device="meta", dtype=meta_model.cls_token.dtype)
    class_ids = torch.zeros(batch, dtype=torch.long)  # on the host: explain() checks their range
    return peak_bytes(lambda: explain(meta_model, images, class_ids, method=method, start_layer=start_layer, recompute=recompute))


def plan_explanations(model: VisionTransformer, method: str, start_layer: int, side: int, wanted: int, budget: int,
                      what: str, meta_model: VisionTransformer | None = None) -> ExplainPlan:
    """The largest batch ≤ ``wanted`` whose peak fits ``budget`` bytes, keeping every block's trace
    when that fits as large a batch as recomputing does (it is faster), recomputing otherwise.

    ``what`` names the work in the message raised when not even one row fits, e.g.
    "cams at scale 2.0"; pass ``meta_model`` (``on_meta(model)``) to reuse one across plans.
    """
    meta_model = on_meta(model) if meta_model is None else meta_model
    peak = functools.cache(partial(_dry_peak, meta_model, method, start_layer, side))
    batch, recompute = largest_batch(partial(peak, recompute=False), wanted, budget), False
    if batch < wanted and get_method(method).recomputable:
        rebuilt = largest_batch(partial(peak, recompute=True), wanted, budget)
        batch, recompute = (rebuilt, True) if rebuilt > batch else (batch, False)
    if batch == 0:
        need = peak(1, recompute=get_method(method).recomputable)
        raise InputError(f"{what}: explaining one {side}×{side} px input with {method} needs {need / GIB:.2f} GiB of tensors, "
                         f"more than memory.budget_gib={budget / GIB:g}; raise memory.budget_gib "
                         "if the device has the room, or explain at a smaller size")
    return ExplainPlan(side=side, batch=batch, recompute=recompute, peak=peak(batch, recompute=recompute))


def explain_planned(model: VisionTransformer, images: Tensor, class_ids: Tensor, method: str, start_layer: int,
                    plan: ExplainPlan) -> Tensor:
    """``explain`` over ``images`` in the plan's batches, concatenated in order."""
    return torch.cat([explain(model, part, ids, method=method, start_layer=start_layer, recompute=plan.recompute)
                      for part, ids in zip(images.split(plan.batch), class_ids.split(plan.batch))])


def planned_explainers(model: VisionTransformer, methods: Sequence[str], start_layer: int, side: int, batch_size: int,
                       forward_batch_size: int, budget: int, device: torch.device,
                       what: str) -> tuple[dict[str, Callable[[Tensor, Tensor], Tensor]], int, int]:
    """An explainer per method (``explain_planned`` over batches of at most ``batch_size`` rows that
    fit ``budget``), the largest inference batch ≤ ``forward_batch_size`` that fits too, for
    ``side``-px inputs, and the largest planned peak (bytes). Stops early when the device lacks it."""
    meta_model = on_meta(model)
    plans = {method: plan_explanations(model, method, start_layer, side, batch_size, budget, what=f"{what} {method}",
                                       meta_model=meta_model) for method in methods}
    forward = forward_batch(model, side, forward_batch_size, budget, f"{what}'s forward passes")
    peak = max(plan.peak for plan in plans.values())
    require_available(peak, device, f"{what} (the largest planned batch)")
    return {method: partial(explain_planned, model, method=method, start_layer=start_layer, plan=plan)
            for method, plan in plans.items()}, forward, peak
