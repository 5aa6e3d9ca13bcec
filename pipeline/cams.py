"""Making seeds: relevance per (image, present class), averaged over scales and flips, max-normalised."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from pipeline.preprocess import normalise
from pipeline.errors import InputError
from pipeline.config import knob
from pipeline.explain import check_model, explain, method_names
from pipeline.explain.registry import get_method
from pipeline.maps import upsample


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


def multiscale_relevance(
    model: torch.nn.Module,
    images: torch.Tensor,
    class_ids: torch.Tensor,
    grid: tuple[int, int],
    stride: int,
    config: CamsConfig,
) -> torch.Tensor:
    """Raw relevance (B, *grid) of ``config.method`` for uint8 images (B, 3, S, S), averaged over
    ``config.scales`` and, with ``config.flip``, mirrors.

    Each scale's map is resized to `grid` (the token grid at scale 1) before averaging;
    a mirrored image's map is mirrored back.
    """
    total = torch.zeros(images.shape[0], *grid, device=images.device)
    count = 0
    pixels = get_method(config.method).pixels
    for scale in config.scales:
        side = scaled_size(images.shape[-1], scale, stride)
        x = normalise(images)
        if side != images.shape[-1]:
            x = F.interpolate(x, size=(side, side), mode="bilinear", align_corners=False)
        for mirrored in (False, True) if config.flip else (False,):
            maps = explain(model, x.flip(-1) if mirrored else x, class_ids, method=config.method, start_layer=config.start_layer)
            if pixels:  # pixel relevance: pool back to the token grid
                maps = F.avg_pool2d(maps[:, None], stride)[:, 0]
            maps = maps.flip(-1) if mirrored else maps
            total += maps if tuple(maps.shape[-2:]) == tuple(grid) else upsample(maps, grid)
            count += 1
    return total / count


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
