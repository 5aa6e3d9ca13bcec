"""Making seeds: relevance per (image, present class), averaged over scales and flips, max-normalised."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from pipeline.core.config import knob
from pipeline.core.errors import InputError
from pipeline.core.memory import on_meta
from pipeline.data.preprocess import normalise
from pipeline.explain import check_model, explain, method_names
from pipeline.explain.planning import ExplainPlan, plan_explanations
from pipeline.explain.registry import get_method
from pipeline.seeds.maps import upsample


@dataclass(frozen=True)
class CamsConfig:
    """The ``cams`` section: which explanation seeds the pipeline, at which scales."""

    method: str = knob("a registered explanation method (pipeline.explain.METHODS)", choices=method_names)
    start_layer: int = knob("first block of the chain (the reference evaluation uses 1)", 0)
    splits: list[str] = knob("the images pseudo-labels are made for")
    image_size: int = knob("input side (the classifier's train_cls.image_size); maps live on its token grid", 16, 2048)
    scales: list[float] = knob("input scales the maps are averaged over (position embedding resized)", 0.1, 4.0)
    flip: bool = knob("also average with the mirrored image (twice the cost)")
    batch_size: int = knob("(image, class) pairs explained per batch", 1)


def scaled_size(image_size: int, scale: float, stride: int) -> int:
    """Input side for a scale, rounded to whole tokens."""
    return max(stride, int(round(image_size * scale / stride)) * stride)


def plan_scales(model: torch.nn.Module, image_size: int, stride: int, config: CamsConfig, budget: int) -> list[ExplainPlan]:
    """One explanation plan per scale of ``config.scales``: at most ``config.batch_size`` pairs
    per call, fewer where the batch's measured peak would pass ``budget`` bytes."""
    meta_model = on_meta(model)
    return [plan_explanations(model, config.method, config.start_layer, scaled_size(image_size, scale, stride), config.batch_size,
                              budget, what=f"cams at scale {scale}", meta_model=meta_model)
            for scale in config.scales]


def multiscale_relevance(
    model: torch.nn.Module,
    images: torch.Tensor,
    class_ids: torch.Tensor,
    grid: tuple[int, int],
    stride: int,
    config: CamsConfig,
    plans: list[ExplainPlan],
    progress: Callable[[int], object] | None = None,
) -> torch.Tensor:
    """Raw relevance (P, *grid) of ``config.method`` for uint8 images (P, 3, S, S) on the host,
    averaged over ``config.scales`` and, with ``config.flip``, mirrors; one plan per scale
    (``plan_scales``) says how many pairs go through the model at once.

    Each scale's map is resized to `grid` (the token grid at scale 1) before averaging;
    a mirrored image's map is mirrored back. Every pair's maps are added in the same order
    (scales, then mirror) whatever the batches. ``progress`` gets the pairs done per scale.
    """
    weight = next(model.parameters())
    total = torch.zeros(images.shape[0], *grid, device=weight.device, dtype=weight.dtype)
    pixels = get_method(config.method).pixels
    flips = (False, True) if config.flip else (False,)
    for plan in plans:
        for start in range(0, images.shape[0], plan.batch):
            stop = min(start + plan.batch, images.shape[0])
            x = normalise(images[start:stop].to(weight.device)).to(weight.dtype)
            if plan.side != images.shape[-1]:
                x = F.interpolate(x, size=(plan.side, plan.side), mode="bilinear", align_corners=False)
            ids = class_ids[start:stop].to(weight.device)
            for mirrored in flips:
                maps = explain(model, x.flip(-1) if mirrored else x, ids, method=config.method,
                               start_layer=config.start_layer, recompute=plan.recompute)
                if pixels:  # pixel relevance: pool back to the token grid
                    maps = F.avg_pool2d(maps[:, None], stride)[:, 0]
                maps = maps.flip(-1) if mirrored else maps
                total[start:stop] += maps if tuple(maps.shape[-2:]) == tuple(grid) else upsample(maps, grid)
            if progress is not None:
                progress(stop - start)
    return total / (len(plans) * len(flips))


def require_method(model: torch.nn.Module, method: str, param: str) -> None:
    """Stop before any work when `method` cannot explain `model` (e.g. `lrp` on a hybrid), naming the param."""
    try:
        check_model(model, method)
    except ValueError as error:
        raise InputError(f"{param}={method}: {error}") from None


def normalise_by_max(maps: np.ndarray) -> np.ndarray:
    """Each (h, w) map clipped at 0 and divided by its own max (docs/methods.md, "From relevance to seeds"); an all-zero map stays 0."""
    positive = np.maximum(maps, 0)
    peak = positive.reshape(positive.shape[0], -1).max(axis=1)
    return np.where(peak[:, None, None] > 0, positive / np.where(peak > 0, peak, 1)[:, None, None], 0.0)
