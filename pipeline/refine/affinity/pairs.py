"""Pair targets: which pixel pairs within a radius are confident positives or negatives."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from pipeline.core.config import knob


@dataclass(frozen=True)
class AffPairsConfig:
    """The ``aff_pairs`` section: which images, at which size, and the pair radius."""

    split: str = knob("split whose confident labels train AffinityNet")
    radius: int = knob("pairs within this distance on the feature grid (5: 34 offsets of the half-disc)", 2, 16)
    image_size: int = knob("AffinityNet input side; labels live at image_size / backbone stride", 16, 2048)


NEUTRAL = 255

# Pair codes: what a pair (pixel, pixel + offset) teaches the network.
NEGATIVE = 0  # both confident, different labels: affinity -> 0
BG_POSITIVE = 1  # both confident background: affinity -> 1
FG_POSITIVE = 2  # both confident, same foreground class: affinity -> 1
IGNORE = 255  # partner outside the image, or either end neutral
CODE_NAMES = {NEGATIVE: "negative", BG_POSITIVE: "bg_positive", FG_POSITIVE: "fg_positive", IGNORE: "ignore"}


def half_disc_offsets(radius: int) -> list[tuple[int, int]]:
    """Offsets (dy, dx) with 0 < sqrt(dy^2 + dx^2) < radius, one of each +/- pair.

    The half kept is dy > 0, plus dy == 0 with dx > 0 (the pixel's right and the rows
    below it), sorted by (dy, dx). Radius 5 gives 34 offsets.
    """
    if radius < 1:
        raise ValueError(f"radius must be >= 1, got {radius}")
    return [
        (dy, dx)
        for dy in range(radius)
        for dx in range(-radius + 1, radius)
        if (dy > 0 or dx > 0) and dy * dy + dx * dx < radius * radius
    ]


def reach(offsets: Sequence[tuple[int, int]]) -> int:
    return max((max(abs(dy), abs(dx)) for dy, dx in offsets), default=0)


def pair_codes(labels: np.ndarray, offsets: Sequence[tuple[int, int]]) -> np.ndarray:
    """Code (P, h, w) uint8 of each pair (pixel (y, x), pixel (y + dy, x + dx)) for offsets[p] = (dy, dx)."""
    labels = np.asarray(labels)
    if labels.dtype != np.uint8 or labels.ndim != 2:
        raise ValueError(f"labels must be a uint8 (h, w) map, got {labels.dtype} {labels.shape}")
    h, w = labels.shape
    extent = reach(offsets)
    padded = np.pad(labels, extent, constant_values=NEUTRAL)  # outside the image = neutral = ignored
    codes = np.empty((len(offsets), h, w), np.uint8)
    for p, (dy, dx) in enumerate(offsets):
        other = padded[extent + dy : extent + dy + h, extent + dx : extent + dx + w]
        kind = np.where(labels != other, NEGATIVE, np.where(labels == 0, BG_POSITIVE, FG_POSITIVE))
        codes[p] = np.where((labels != NEUTRAL) & (other != NEUTRAL), kind, IGNORE)
    return codes


def pair_counts(codes: np.ndarray | torch.Tensor) -> dict[str, int]:
    """Number of pairs of each kind: keys negative, bg_positive, fg_positive, ignore."""
    codes = np.asarray(codes)
    return {name: int(np.count_nonzero(codes == code)) for code, name in CODE_NAMES.items()}
