"""Segmenting images with a trained network: multi-scale + flip averaging and dense-CRF
post-processing (docs/methods.md, "Segmentation network")."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from pipeline.config import knob
from pipeline.dense_crf import CRFKernels, dense_crf, for_image
from pipeline.preprocess import normalise, to_tensor
from pipeline.segmentation.net import Segmenter
from pipeline.training import eval_mode


@dataclass(frozen=True)
class EvaluateSegConfig:
    """The ``evaluate_seg`` section: which images, the test-time scales, and the CRF used after."""

    split: str = knob("split the segmenter is judged on (val: images it never saw)")
    scales: list[float] = knob("input scales whose softmax outputs are averaged", 0.1, 4.0)
    flip: bool = knob("also average the mirrored image's prediction at every scale")
    crf: CRFKernels = knob("dense CRF on the averaged probabilities (kept apart from crf.*, which makes seeds confident)")

    def check(self) -> None:
        if not self.scales:
            raise ValueError("scales must hold at least one scale, e.g. [1.0]")


def scaled_size(size: tuple[int, int], scale: float, multiple: int) -> tuple[int, int]:
    """``size`` times ``scale``, each side rounded to the nearest multiple of ``multiple`` (at least one)."""
    return tuple(max(multiple, int(round(side * scale / multiple)) * multiple) for side in size)


@torch.no_grad()
def predict_probs(net: Segmenter, image: np.ndarray, scales: Sequence[float], flip: bool,
                  device: torch.device | str = "cpu") -> np.ndarray:
    """Class probabilities (L, H, W) float32 of one uint8 (H, W, 3) image: the mean over scales
    (and mirror images) of the softmax, each brought back to (H, W) bilinearly.

    At each scale the image is resized to sides that are multiples of the backbone's coarsest
    stride; the image and its mirror go through the network as one batch of two.
    """
    size = image.shape[:2]
    x = normalise(to_tensor([image]).to(device))
    dtype = next(net.parameters()).dtype
    total = None
    with eval_mode(net):
        for scale in scales:
            scaled = F.interpolate(x, size=scaled_size(size, scale, max(net.backbone.strides)), mode="bilinear", align_corners=False)
            batch = torch.cat([scaled, scaled.flip(-1)]) if flip else scaled
            probs = F.interpolate(net(batch.to(dtype)), size=size, mode="bilinear", align_corners=False).softmax(dim=1)
            summed = probs[0] + probs[1].flip(-1) if flip else probs[0]
            total = summed if total is None else total + summed
    return (total / (len(scales) * (2 if flip else 1))).float().cpu().numpy()


def crf_labels(image: np.ndarray, probs: np.ndarray, kernels: CRFKernels) -> np.ndarray:
    """Dense-CRF post-processing: argmax of the mean-field marginals with unary -log(probs),
    the kernels scaled to the image as :func:`pipeline.dense_crf.for_image` does; uint8 (H, W)."""
    return dense_crf(image, probs, for_image(kernels, image)).argmax(axis=0).astype(np.uint8)
