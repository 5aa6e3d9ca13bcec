"""Segmenting images with a trained network: multi-scale + flip averaging and dense-CRF
post-processing (docs/methods.md, "Segmentation network")."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial

import numpy as np
import torch
import torch.nn.functional as F

from pipeline.core.config import knob
from pipeline.core.errors import InputError
from pipeline.core.eval_mode import eval_mode
from pipeline.core.memory import GIB, on_meta, peak_bytes, require_available
from pipeline.data.preprocess import normalise, to_tensor
from pipeline.refine.dense_crf import CRFKernels, dense_crf, for_image
from pipeline.segmentation.net import Segmenter


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


def inference_peak(meta_net: Segmenter, size: tuple[int, int], scales: Sequence[float], flip: bool) -> int:
    """Peak tensor bytes of ``predict_probs`` on an image of ``size`` (H, W): a dry run of its
    largest step on ``on_meta(net)`` (pipeline/core/memory.py); the weights are not counted."""
    dtype = next(meta_net.parameters()).dtype
    multiple = max(meta_net.backbone.strides)

    def one_scale(scale: float) -> None:
        batch = torch.zeros(2 if flip else 1, 3, *scaled_size(size, scale, multiple), device="meta", dtype=dtype)
        F.interpolate(meta_net(batch), size=size, mode="bilinear", align_corners=False).softmax(dim=1)

    with torch.no_grad(), eval_mode(meta_net):
        return max(peak_bytes(partial(one_scale, scale)) for scale in scales)


def check_inference_fits(net: Segmenter, size: tuple[int, int], scales: Sequence[float], flip: bool, budget: int | None,
                         device: torch.device, what: str) -> None:
    """Stop before any image is segmented when an image of ``size`` would pass the memory budget
    (None: no budget, e.g. outside a project) or the device's free memory at its largest scale;
    the message names the size and the scales."""
    need = inference_peak(on_meta(net), size, scales, flip)
    where = f"{what}: a {size[1]}×{size[0]} image at scales {list(scales)}{' with its mirror' if flip else ''}"
    if budget is not None and need > budget:
        raise InputError(f"{where} needs {need / GIB:.2f} GiB of tensors, more than memory.budget_gib={budget / GIB:g}; "
                         "raise memory.budget_gib if the device has the room, or use smaller scales")
    require_available(need, device, where)


def crf_labels(image: np.ndarray, probs: np.ndarray, kernels: CRFKernels) -> np.ndarray:
    """Dense-CRF post-processing: argmax of the mean-field marginals with unary -log(probs),
    the kernels scaled to the image as :func:`pipeline.refine.dense_crf.for_image` does; uint8 (H, W)."""
    return dense_crf(image, probs, for_image(kernels, image)).argmax(axis=0).astype(np.uint8)
