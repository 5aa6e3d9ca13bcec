"""Segmentation evaluation of seeds, CRF confident labels and random-walk masks (REFERENCE.md §3)."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from pipeline.maps import upsample
from pipeline.metrics import IGNORE_INDEX, confusion_matrix, iou_per_class


def seed_labels(maps: np.ndarray, class_labels: np.ndarray, size: tuple[int, int], background: float) -> np.ndarray:
    """Argmax of [constant background score, upsampled present-class seeds] as a label map."""
    if len(class_labels) == 0:
        return np.zeros(size, np.uint8)
    full = upsample(torch.from_numpy(maps.astype(np.float32)), size).numpy()
    scores = np.concatenate([np.full((1, *size), background, np.float32), full])
    return np.concatenate([[0], class_labels]).astype(np.uint8)[scores.argmax(axis=0)]


@dataclass
class SegmentationScore:
    """Confusion counts over a split; `(C, C + 1)`, the last column counting unlabelled (255) predictions."""

    num_classes: int
    confusion: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.confusion = np.zeros((self.num_classes, self.num_classes + 1), np.int64)

    def add(self, prediction: np.ndarray, target: np.ndarray) -> None:
        self.confusion += confusion_matrix(prediction, target, self.num_classes)

    def iou(self) -> np.ndarray:
        return iou_per_class(self.confusion)

    def miou(self) -> float:
        return float(np.nanmean(self.iou()))

    def confident_iou(self) -> np.ndarray:
        """IoU over the pixels that received a label (precision of confident labels, per class)."""
        return iou_per_class(self.confusion[:, : self.num_classes])

    def coverage(self) -> float:
        """Share of evaluated pixels that received a label (not neutral)."""
        total = self.confusion.sum()
        return float(1 - self.confusion[:, -1].sum() / total) if total else float("nan")

    def pixel_precision(self) -> float:
        """Share of labelled pixels whose label is right."""
        labelled = self.confusion[:, : self.num_classes]
        return float(np.trace(labelled) / labelled.sum()) if labelled.sum() else float("nan")


__all__ = ["IGNORE_INDEX", "SegmentationScore", "seed_labels"]
