"""Segmentation evaluation of seeds, CRF confident labels and random-walk masks (docs/methods.md, "Evaluation metrics")."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from pipeline.core.config import knob
from pipeline.core.metrics import confusion_matrix, iou_per_class


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



# Background scores of the seeds' sweep: their best mIoU is reported beside the configured one.
SEED_BACKGROUND_SWEEP = tuple(round(float(b), 2) for b in np.arange(0.05, 0.55, 0.05))


def _percent(values: np.ndarray) -> list[float | None]:
    return [None if np.isnan(v) else round(float(v) * 100, 3) for v in values]


class PseudoLabelEvaluation:
    """Confusion counts of the seeds (at the configured background score and over a sweep), the
    CRF confident labels and the random-walk masks, image by image."""

    def __init__(self, num_classes: int, config: EvaluateConfig) -> None:
        self.config = config
        self.images = 0
        self.scores = {name: SegmentationScore(num_classes) for name in ("seed", "crf", "random_walk")}
        self.sweep = {b: SegmentationScore(num_classes) for b in SEED_BACKGROUND_SWEEP}

    def add(self, target: np.ndarray, seed_maps: np.ndarray, class_labels: np.ndarray,
            crf_labels: np.ndarray, walk_labels: np.ndarray) -> None:
        """One image: its mask, its present classes' seeds (C, H, W) at full resolution with their
        label values, its CRF confident labels and its random-walk mask."""
        self.images += 1
        self.scores["seed"].add(seed_labels(seed_maps, class_labels, self.config.seed_background), target)
        for background, score in self.sweep.items():
            score.add(seed_labels(seed_maps, class_labels, background), target)
        self.scores["crf"].add(crf_labels, target)
        self.scores["random_walk"].add(walk_labels, target)

    def metrics(self) -> dict[str, object]:
        """The figures of metrics/segmentation.json, mIoU in %."""
        seed, crf, walk = self.scores["seed"], self.scores["crf"], self.scores["random_walk"]
        metrics: dict[str, object] = {
            "images": self.images,
            "split": self.config.split,
            "seed_miou": round(seed.miou() * 100, 3),
            "seed_miou_best_background": round(max(score.miou() for score in self.sweep.values()) * 100, 3),
            "seed_best_background": max(self.sweep, key=lambda b: self.sweep[b].miou()),
            "crf_confident_miou": round(float(np.nanmean(crf.confident_iou())) * 100, 3),
            "crf_pixel_precision": round(crf.pixel_precision() * 100, 3),
            "crf_coverage": round(crf.coverage() * 100, 3),
            "random_walk_miou": round(walk.miou() * 100, 3),
        }
        # Against the seeds at their best background, so a gain is never the background score's doing.
        metrics["random_walk_gain"] = round(metrics["random_walk_miou"] - metrics["seed_miou_best_background"], 3)
        return metrics

    def per_class(self, names: list[str]) -> list[dict[str, object]]:
        """IoU per class (background first), in %: seeds, CRF confident labels, random walk."""
        seed, crf, walk = self.scores["seed"], self.scores["crf"], self.scores["random_walk"]
        rows = zip(names, _percent(seed.iou()), _percent(crf.confident_iou()), _percent(walk.iou()))
        return [{"class": n, "seed": s, "crf_confident": c, "random_walk": w} for n, s, c, w in rows]

    def confusion(self, names: list[str]) -> dict[str, object]:
        return {"classes": names, "columns": [*names, "unlabelled"], **{k: v.confusion.tolist() for k, v in self.scores.items()}}
