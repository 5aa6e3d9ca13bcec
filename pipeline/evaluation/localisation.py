"""The segmentation test of explanations (Chefer et al., CVPR 2021; docs/methods.md,
"Evaluating explanations"): maps against object masks, by pixel accuracy, mIoU and AP."""
from __future__ import annotations

import math
from typing import Any, Literal

import numpy as np
import torch

from pipeline.core.metrics import IGNORE_INDEX, average_precision, confusion_matrix, iou_per_class
from pipeline.evaluation.perturbation import check_choice, finite

ApRule = Literal["pooled", "mean_of_classes"]
AP_RULES = ("pooled", "mean_of_classes")


def foreground(scores: torch.Tensor) -> torch.Tensor:
    """(R, H, W) bool: pixels whose score exceeds the mean of their own map (over all its pixels)."""
    return scores > scores.mean(dim=(-2, -1), keepdim=True)


def image_average_precision(scores: np.ndarray, mask: np.ndarray, rule: ApRule = "pooled") -> float:
    """AP of one image's pixel scores against its fg/bg mask (255 ignored); NaN if no pixel is labelled.

    Each pixel is scored twice: ``score`` as a foreground candidate, ``1 − score`` as a background
    candidate. "pooled" (default; docs/methods.md, "Segmentation test": one AP of the pixel scores; the reference code
    computes a single binary AP over the flattened two-channel (1 − map, map) scores against the
    one-hot mask) ranks all 2·H·W candidates together. "mean_of_classes" is the mean of the
    foreground AP and the background AP, skipping a class absent from the image.
    """
    check_choice("ap rule", rule, AP_RULES)
    valid = mask != IGNORE_INDEX
    score = np.asarray(scores, dtype=np.float64)[valid]
    is_fg = np.asarray(mask)[valid] == 1
    if score.size == 0:
        return float("nan")
    if rule == "pooled":
        return average_precision(np.concatenate([score, 1.0 - score]), np.concatenate([is_fg, ~is_fg]))
    per_class = [average_precision(score, is_fg), average_precision(1.0 - score, ~is_fg)]
    return float(np.nanmean(per_class))


class SegmentationAccumulator:
    """Segmentation test over a dataset: confusion counts summed, per-image APs averaged at the end."""

    def __init__(self, ap_rule: ApRule = "pooled") -> None:
        check_choice("ap_rule", ap_rule, AP_RULES)
        self.ap_rule = ap_rule
        self.confusion = np.zeros((2, 2), dtype=np.int64)  # [target, prediction], 0 = bg, 1 = fg
        self.aps: list[float] = []
        self.count = 0

    def update(self, scores: torch.Tensor, masks: torch.Tensor | np.ndarray) -> None:
        """Add maps prepared by :func:`prepare_maps` (R, H, W) and their masks (R, H, W): 0 bg, 1 fg, 255 ignored."""
        masks = torch.as_tensor(masks).cpu().numpy()
        if tuple(masks.shape) != tuple(scores.shape):
            raise ValueError(f"masks {tuple(masks.shape)} do not match maps {tuple(scores.shape)}")
        predictions = foreground(scores).cpu().numpy()
        self.confusion += confusion_matrix(predictions, masks, num_classes=2)[:, :2]
        for score, mask in zip(scores.float().cpu().numpy(), masks):
            ap = image_average_precision(score, mask, self.ap_rule)
            if not math.isnan(ap):  # images without a labelled pixel say nothing about ranking
                self.aps.append(ap)
        self.count += len(masks)

    def merge(self, other: "SegmentationAccumulator") -> None:
        """Add another rank's images (the mean AP is an exactly rounded sum: independent of order)."""
        self.confusion += other.confusion
        self.aps += other.aps
        self.count += other.count

    @property
    def pixel_accuracy(self) -> float:
        total = self.confusion.sum()
        return float(np.trace(self.confusion) / total) if total else float("nan")

    @property
    def iou(self) -> np.ndarray:
        """(background IoU, foreground IoU) from the summed confusion counts."""
        return iou_per_class(self.confusion)

    @property
    def miou(self) -> float:
        """Mean of the two IoUs (NaN while either is undefined)."""
        return float(np.mean(self.iou))

    @property
    def mean_ap(self) -> float:
        return math.fsum(self.aps) / len(self.aps) if self.aps else float("nan")

    def summary(self) -> dict[str, Any]:
        """JSON-ready, in percent as the paper's Table 3."""
        iou = self.iou
        return {
            "count": self.count,
            "pixel_accuracy": finite(100.0 * self.pixel_accuracy),
            "map": finite(100.0 * self.mean_ap),
            "miou": finite(100.0 * self.miou),
            "iou_background": finite(100.0 * iou[0]),
            "iou_foreground": finite(100.0 * iou[1]),
            "ap_rule": self.ap_rule,
        }


def class_masks(masks: torch.Tensor, class_ids: torch.Tensor, offset: int = 1) -> torch.Tensor:
    """Class-index masks (R, H, W) to fg/bg masks of each row's class: 1 where label == class + offset, 255 kept."""
    target = (class_ids.long() + offset).reshape(-1, 1, 1).to(masks.device)
    binary = (masks.long() == target).to(torch.uint8)
    return torch.where(masks.long() == IGNORE_INDEX, IGNORE_INDEX, binary).to(torch.uint8)


# --- driver -----------------------------------------------------------------------------------
