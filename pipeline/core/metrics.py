"""Metrics with textbook definitions: confusion-matrix IoU, average precision, AUC, mAP."""
from __future__ import annotations

import numpy as np

IGNORE_INDEX = 255


def confusion_matrix(pred: np.ndarray, target: np.ndarray, num_classes: int, ignore_index: int = IGNORE_INDEX) -> np.ndarray:
    """Counts[t, p] of pixels with target t predicted as p; target pixels equal to `ignore_index` are skipped.

    Predictions outside [0, num_classes) (e.g. a 255 "neutral" label) are counted in an extra
    last column so that coverage can be measured; the returned matrix is (C, C + 1).
    """
    pred = np.asarray(pred).ravel().astype(np.int64)
    target = np.asarray(target).ravel().astype(np.int64)
    if pred.shape != target.shape:
        raise ValueError(f"prediction has {pred.size} pixels but target has {target.size}")
    keep = target != ignore_index
    pred, target = pred[keep], target[keep]
    if target.size and (target.min() < 0 or target.max() >= num_classes):
        raise ValueError(f"target labels must be in [0, {num_classes}) or {ignore_index}, got {target.min()}..{target.max()}")
    pred = np.where((pred >= 0) & (pred < num_classes), pred, num_classes)
    counts = np.bincount(target * (num_classes + 1) + pred, minlength=num_classes * (num_classes + 1))
    return counts.reshape(num_classes, num_classes + 1)


def iou_per_class(confusion: np.ndarray) -> np.ndarray:
    """IoU_c = TP / (TP + FP + FN) from a (C, C) or (C, C + 1) confusion matrix; NaN where a class never occurs."""
    confusion = np.asarray(confusion, dtype=np.float64)
    num_classes = confusion.shape[0]
    square = confusion[:, :num_classes]
    tp = np.diag(square)
    fn = confusion.sum(axis=1) - tp  # target pixels missed, including those left unlabelled
    fp = square.sum(axis=0) - tp
    denom = tp + fp + fn
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denom > 0, tp / np.where(denom > 0, denom, 1), np.nan)


def mean_iou(confusion: np.ndarray) -> float:
    """Mean IoU over the classes that occur (in target or prediction)."""
    return float(np.nanmean(iou_per_class(confusion)))


def average_precision(scores: np.ndarray, labels: np.ndarray) -> float:
    """Non-interpolated AP: mean of precision at the rank of every positive (ties broken by score order).

    Equals the area under the step precision-recall curve (the scikit-learn definition).
    NaN when there are no positives.
    """
    scores = np.asarray(scores, dtype=np.float64).ravel()
    labels = np.asarray(labels).ravel().astype(bool)
    num_pos = int(labels.sum())
    if num_pos == 0:
        return float("nan")
    order = np.argsort(-scores, kind="stable")
    sorted_scores, sorted_labels = scores[order], labels[order]
    # Group ties: precision is evaluated at the last index of each distinct score.
    distinct = np.r_[np.nonzero(np.diff(sorted_scores))[0], sorted_scores.size - 1]
    tps = np.cumsum(sorted_labels)[distinct]
    fps = (distinct + 1) - tps
    precision = tps / (tps + fps)
    recall_gain = np.diff(np.r_[0, tps]) / num_pos
    return float(np.sum(precision * recall_gain))


def mean_average_precision(scores: np.ndarray, labels: np.ndarray) -> tuple[float, np.ndarray]:
    """Multi-label mAP over columns (classes); classes without positives are NaN and skipped in the mean."""
    per_class = np.array([average_precision(scores[:, c], labels[:, c]) for c in range(scores.shape[1])])
    return float(np.nanmean(per_class)) if np.any(~np.isnan(per_class)) else float("nan"), per_class


def trapezoid_auc(y: np.ndarray, x: np.ndarray) -> float:
    """Area under y(x) by the trapezoid rule."""
    y = np.asarray(y, dtype=np.float64)
    x = np.asarray(x, dtype=np.float64)
    return float(np.sum((x[1:] - x[:-1]) * (y[1:] + y[:-1]) / 2.0))
