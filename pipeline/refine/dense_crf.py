"""A dense CRF (Kraehenbuehl & Koltun, NeurIPS 2011, via pydensecrf) on any per-pixel scores:
its kernels, their scaling to the image, and mean-field inference. Used on the seeds
(`pipeline.refine.confident`) and on the segmentation network's probabilities (`pipeline.segmentation.infer`).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import pydensecrf.densecrf as dcrf
from pydensecrf.utils import unary_from_softmax

from pipeline.core.config import knob


@dataclass(frozen=True)
class CRFKernels:
    """A dense CRF's pairwise kernels and inference, as used on any score maps.

    The spatial std-devs (``*_sxy``) are in pixels of ``reference_side``-px images (the
    reference's ~500 px VOC images); with ``scale_with_image`` each image gets them scaled by
    its longer side / ``reference_side`` (:func:`scaled_to`).
    """

    gauss_sxy: float = knob("smoothness kernel std-dev, px at reference_side", 0.0)
    gauss_compat: float = knob("smoothness kernel weight", 0.0)
    bilateral_sxy: float = knob("appearance kernel spatial std-dev, px at reference_side", 0.0)
    bilateral_srgb: float = knob("appearance kernel colour std-dev, 0-255 intensity units", 0.0)
    bilateral_compat: float = knob("appearance kernel weight", 0.0)
    iterations: int = knob("mean-field iterations", 1, 1000)
    reference_side: int = knob("image side, px, the spatial std-devs are given for", 1)
    scale_with_image: bool = knob("scale the spatial std-devs by each image's longer side / reference_side")


K = TypeVar("K", bound=CRFKernels)


def scaled_to(config: K, image_side: float) -> K:
    """``config`` with the spatial std-devs scaled by image_side / reference_side.

    On a 96 px image a bilateral sxy of 80 would span the whole image and the colour term
    would act globally; scaling keeps the kernels covering the same fraction of the image.
    Colour std-dev (srgb), compatibilities, alphas and iterations do not depend on size.
    """
    if image_side <= 0:
        raise ValueError(f"image side must be positive, got {image_side}")
    factor = image_side / config.reference_side
    return dataclasses.replace(config, gauss_sxy=config.gauss_sxy * factor, bilateral_sxy=config.bilateral_sxy * factor)


def for_image(config: K, image: np.ndarray) -> K:
    """The settings one image is processed with: scaled to its longer side if ``scale_with_image``."""
    return scaled_to(config, max(image.shape[:2])) if config.scale_with_image else config


def check_image(image: np.ndarray) -> None:
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image must be uint8 (H, W, 3), got {image.dtype} {image.shape}")


def dense_crf(image: np.ndarray, probs: np.ndarray, params: CRFKernels) -> np.ndarray:
    """Mean-field marginals (L, H, W) float32 of a dense CRF with unary -log(probs).

    ``params`` apply as given (no scaling here; :func:`for_image` does that).

    `probs` (L, H, W) need not sum to 1 over labels (the seed scores do not); values are
    clipped at 1e-5 before the log, as pydensecrf's `unary_from_softmax` does.
    """
    check_image(image)
    probs = np.asarray(probs, dtype=np.float32)
    if probs.ndim != 3 or probs.shape[1:] != image.shape[:2]:
        raise ValueError(f"probs must be (L, {image.shape[0]}, {image.shape[1]}), got {probs.shape}")
    n_labels, height, width = probs.shape
    crf = dcrf.DenseCRF2D(width, height, n_labels)
    crf.setUnaryEnergy(np.ascontiguousarray(unary_from_softmax(probs)))
    crf.addPairwiseGaussian(sxy=params.gauss_sxy, compat=params.gauss_compat)
    crf.addPairwiseBilateral(
        sxy=params.bilateral_sxy,
        srgb=params.bilateral_srgb,
        rgbim=np.array(image, dtype=np.uint8, order="C"),  # a writable copy: pydensecrf rejects read-only buffers
        compat=params.bilateral_compat,
    )
    marginals = crf.inference(params.iterations)
    return np.asarray(marginals, dtype=np.float32).reshape(n_labels, height, width)
