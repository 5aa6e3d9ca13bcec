"""Dense CRF and seeds -> confident labels (Ahn & Kwak, CVPR 2018; docs/methods.md,
"Seeds to confident labels (dense CRF)").

Label maps follow the project convention: uint8, 0 = background, k = class label k (1..K),
255 = neutral.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

import numpy as np
import pydensecrf.densecrf as dcrf
from pydensecrf.utils import unary_from_softmax

from pipeline.seeds import seed_scores

NEUTRAL = 255


@dataclass(frozen=True)
class CRFParams:
    """Reference CRF settings; the spatial std-devs (`*_sxy`) are in pixels of ~500 px VOC images."""

    alpha_low: float = 4
    alpha_high: float = 32
    gauss_sxy: float = 3
    gauss_compat: float = 3
    bilateral_sxy: float = 80
    bilateral_srgb: float = 13
    bilateral_compat: float = 10
    iterations: int = 10


def scaled_to(params: CRFParams, image_side: float, reference_side: float = 500) -> CRFParams:
    """`params` with the spatial std-devs scaled by image_side / reference_side.

    The reference values are in pixels of ~500 px images; on a 96 px image a bilateral
    sxy of 80 would span the whole image and the colour term would act globally. Scaling
    keeps the kernels covering the same fraction of the image. Colour std-dev (srgb),
    compatibilities, alphas and iterations do not depend on size and are kept.
    `image_side` is the caller's choice of side (e.g. the longer one, or sqrt(H * W)).
    """
    if image_side <= 0 or reference_side <= 0:
        raise ValueError(f"sides must be positive, got {image_side} and {reference_side}")
    factor = image_side / reference_side
    return dataclasses.replace(
        params, gauss_sxy=params.gauss_sxy * factor, bilateral_sxy=params.bilateral_sxy * factor
    )


def _check_image(image: np.ndarray) -> None:
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image must be uint8 (H, W, 3), got {image.dtype} {image.shape}")


def dense_crf(image: np.ndarray, probs: np.ndarray, params: CRFParams = CRFParams()) -> np.ndarray:
    """Mean-field marginals (L, H, W) float32 of a dense CRF with unary -log(probs).

    `probs` (L, H, W) need not sum to 1 over labels (the seed scores do not); values are
    clipped at 1e-5 before the log, as pydensecrf's `unary_from_softmax` does.
    """
    _check_image(image)
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


def _average_pool(maps: np.ndarray, cell: int) -> np.ndarray:
    """Mean over non-overlapping cell x cell blocks of (L, H, W) maps (H, W multiples of cell)."""
    n, height, width = maps.shape
    return maps.reshape(n, height // cell, cell, width // cell, cell).mean(axis=(2, 4))


def confident_labels(
    image: np.ndarray,
    seeds: np.ndarray,
    class_labels: Sequence[int],
    params: CRFParams = CRFParams(),
    pool: int = 1,
) -> np.ndarray:
    """Confident label map from seeds: uint8 (H / pool, W / pool), values 0, class labels, 255.

    `seeds` (C, H, W) are the C present classes' seeds in [0, 1] (each normalised by its
    own max) at image resolution; `class_labels` (C,) their label values (1..254).
    Two CRFs run on [background, classes] with background (1 - max)^alpha_low and
    (1 - max)^alpha_high. A pixel is the low-alpha argmax class where that is a class
    (confident foreground), 0 where the high-alpha argmax is background (confident
    background, which wins where both hold, as in the reference), otherwise 255.
    `pool` > 1 averages both CRF marginals over pool x pool cells first (the reference
    decides at feature resolution, pool = 8); H and W must be multiples of it.
    With no present class (C == 0) every pixel is confident background.
    """
    image = np.asarray(image)
    _check_image(image)
    seeds = np.asarray(seeds, dtype=np.float32)
    labels = np.asarray(class_labels, dtype=np.int64)
    if seeds.ndim != 3 or seeds.shape[1:] != image.shape[:2]:
        raise ValueError(f"seeds must be (C, {image.shape[0]}, {image.shape[1]}), got {seeds.shape}")
    if labels.shape != (seeds.shape[0],):
        raise ValueError(f"class_labels must be ({seeds.shape[0]},) to match seeds, got {labels.shape}")
    if labels.size and (labels.min() < 1 or labels.max() >= NEUTRAL or np.unique(labels).size != labels.size):
        raise ValueError(f"class labels must be distinct values in 1..254, got {labels.tolist()}")
    height, width = image.shape[:2]
    if pool < 1 or height % pool or width % pool:
        raise ValueError(f"pool must be >= 1 and divide the image size {height}x{width}, got {pool}")
    if labels.size == 0:
        return np.zeros((height // pool, width // pool), np.uint8)
    low = _average_pool(dense_crf(image, seed_scores(seeds, params.alpha_low), params), pool).argmax(axis=0)
    high = _average_pool(dense_crf(image, seed_scores(seeds, params.alpha_high), params), pool).argmax(axis=0)
    lookup = np.concatenate([[NEUTRAL], labels]).astype(np.uint8)  # low-alpha background -> neutral
    out = lookup[low]
    out[high == 0] = 0
    return out


def _confident_labels_job(job: tuple[np.ndarray, np.ndarray, Sequence[int], CRFParams, int]) -> np.ndarray:
    return confident_labels(*job)


def confident_labels_many(
    images: Sequence[np.ndarray],
    seeds: Sequence[np.ndarray],
    class_labels: Sequence[Sequence[int]],
    params: CRFParams | Sequence[CRFParams] = CRFParams(),
    workers: int = 1,
    pool: int = 1,
    progress: Callable[[int], None] | None = None,
) -> list[np.ndarray]:
    """`confident_labels` for many images, in order, with `workers` processes (1 = in this process).

    Each image is computed by the same deterministic function whatever the worker count, so
    results are identical. `params` is one setting for all images or one per image (e.g. each
    scaled to its image's size with `scaled_to`). `progress`, if given, is called with 1 after each image (e.g. a
    `pipeline.progress.progress_bar(...).update`).
    """
    if not len(images) == len(seeds) == len(class_labels):
        raise ValueError(f"{len(images)} images, {len(seeds)} seeds and {len(class_labels)} label lists differ")
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    per_image = [params] * len(images) if isinstance(params, CRFParams) else list(params)
    if len(per_image) != len(images):
        raise ValueError(f"{len(per_image)} CRF settings for {len(images)} images")
    jobs = [(image, seed, labels, crf, pool) for image, seed, labels, crf in zip(images, seeds, class_labels, per_image)]
    if workers == 1:
        return _collect(map(_confident_labels_job, jobs), progress)
    with ProcessPoolExecutor(max_workers=workers) as executor:
        return _collect(executor.map(_confident_labels_job, jobs), progress)  # yields in submission order


def _collect(outputs: Iterator[np.ndarray], progress: Callable[[int], None] | None) -> list[np.ndarray]:
    results = []
    for out in outputs:
        results.append(out)
        if progress is not None:
            progress(1)
    return results
