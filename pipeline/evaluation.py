"""Segmentation evaluation of seeds, CRF confident labels and random-walk masks (docs/methods.md, "Evaluation metrics")."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from pipeline.config import knob
from pipeline.metrics import confusion_matrix, iou_per_class


@dataclass(frozen=True)
class EvaluateConfig:
    """The ``evaluate`` section: where pseudo-labels are judged, and the seeds' background score."""

    split: str = knob("split judged (pseudo-labels are judged on the images they are made for)")
    seed_background: float = knob("constant background score for the seeds' argmax (a sweep is reported beside it)", 0.0, 1.0)


def seed_labels(full: np.ndarray, class_labels: np.ndarray, background: float) -> np.ndarray:
    """Argmax of [constant background score, present-class seeds at full resolution (C, H, W)] as a label map."""
    size = full.shape[1:]
    if len(class_labels) == 0:
        return np.zeros(size, np.uint8)
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

