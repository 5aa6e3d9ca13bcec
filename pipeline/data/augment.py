"""Training randomness as functions of (seed, epoch, index): sample order and batches, and the
mirror, colour jitter and rescaling of each sample.

Nothing is drawn from a stream shared by a batch, so a sample's augmentation is the same
whatever the batch size, the process count, or the epoch a run resumed from.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from pipeline.data.preprocess import MEAN


def sample_rng(seed: int, epoch: int, index: int) -> np.random.Generator:
    """The random stream of training sample ``index`` in ``epoch``."""
    return np.random.default_rng([seed, epoch, index])


def epoch_order(count: int, seed: int, epoch: int) -> list[int]:
    """The sample order of ``epoch``: a permutation of range(count) that depends on (seed, epoch) only."""
    return np.random.default_rng([seed, epoch]).permutation(count).tolist()


def steps_per_epoch(count: int, batch_size: int) -> int:
    """Optimiser steps in an epoch of ``count`` samples: full batches only, the one rule of every
    training loop. The last partial batch is dropped (BatchNorm needs more than one sample, and
    every step then weighs the same); a set smaller than one batch is a single batch."""
    return max(1, count // batch_size)


def epoch_batches(count: int, batch_size: int, seed: int, epoch: int) -> list[list[int]]:
    """The global batches of ``epoch``: :func:`epoch_order` cut into :func:`steps_per_epoch` batches."""
    order = epoch_order(count, seed, epoch)
    return [order[i * batch_size : (i + 1) * batch_size] for i in range(steps_per_epoch(count, batch_size))]


def color_jitter(images: torch.Tensor, factors: torch.Tensor) -> torch.Tensor:
    """Brightness, contrast and saturation scaled by ``factors`` (B, 3), on [0, 1] floats (B, 3, H, W)."""
    factors = factors.to(images.device, images.dtype).view(-1, 3, 1, 1, 1)
    images = images * factors[:, 0]
    mean = images.mean(dim=(1, 2, 3), keepdim=True)
    images = (images - mean) * factors[:, 1] + mean
    grey = images.mean(dim=1, keepdim=True)
    images = (images - grey) * factors[:, 2] + grey
    return images.clamp(0, 1)


def augment(images: torch.Tensor, hflip: bool, jitter: float, rngs: Sequence[np.random.Generator],
            labels: np.ndarray | None = None) -> tuple[torch.Tensor, np.ndarray | None]:
    """uint8 (B, 3, H, W) to augmented [0, 1] floats: a mirror with probability 1/2, then
    brightness, contrast and saturation factors in [1 - jitter, 1 + jitter].

    Sample i draws four numbers from ``rngs[i]`` (mirror, then the three factors) whatever the
    settings, so turning one augmentation off leaves the other's draws unchanged. ``labels``
    (B, h, w), if given, are mirrored with their images (a copy; jitter leaves them alone).
    """
    if len(rngs) != images.shape[0]:
        raise ValueError(f"{len(rngs)} random streams for {images.shape[0]} images")
    draws = torch.from_numpy(np.array([rng.random(4) for rng in rngs], dtype=np.float64).reshape(-1, 4)).float()
    x = images.float() / 255.0
    if hflip:
        flip = draws[:, 0] < 0.5
        x = torch.where(flip.view(-1, 1, 1, 1).to(x.device), x.flip(-1), x)
        if labels is not None:
            labels = labels.copy()
            labels[flip.numpy()] = labels[flip.numpy()][:, :, ::-1]
    if jitter > 0:
        x = color_jitter(x, 1 + (draws[:, 1:] * 2 - 1) * jitter)
    return x, labels


def random_rescale(images: torch.Tensor, scale_range: tuple[float, float], rngs: Sequence[np.random.Generator]) -> torch.Tensor:
    """[0, 1] floats (B, 3, S, S), each resized by a factor drawn uniformly from ``scale_range`` and
    brought back to S x S: a random window of an enlarged image, or a shrunk one at a random place
    on a canvas of the normalisation mean (padding reads as zeros to the model).

    Sample i draws three numbers from ``rngs[i]`` (factor, then row and column of the window or
    placement), after whatever :func:`augment` drew; a range of (1, 1) draws nothing and returns
    ``images`` unchanged.
    """
    low, high = scale_range
    if low == high == 1.0:
        return images
    if len(rngs) != images.shape[0]:
        raise ValueError(f"{len(rngs)} random streams for {images.shape[0]} images")
    side = images.shape[-1]
    out = torch.tensor(MEAN, dtype=images.dtype, device=images.device).view(1, 3, 1, 1).expand_as(images).clone()
    for i, rng in enumerate(rngs):
        factor, row, col = rng.random(3)
        size = max(1, round(side * (low + (high - low) * factor)))
        resized = F.interpolate(images[i : i + 1], size=(size, size), mode="bilinear", align_corners=False)[0]
        # Offsets into the larger of the two squares, uniform over every position that fits.
        top, left = (int(u * (abs(size - side) + 1)) for u in (row, col))
        if size >= side:
            out[i] = resized[:, top : top + side, left : left + side]
        else:
            out[i, :, top : top + size, left : left + size] = resized
    return out
