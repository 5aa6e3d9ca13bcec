"""Seeds -> confident labels with two dense CRFs (Ahn & Kwak, CVPR 2018; docs/methods.md,
"Seeds to confident labels (dense CRF)").

Label maps follow the project convention: uint8, 0 = background, k = class label k (1..K),
255 = neutral.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

import numpy as np

from pipeline.core.config import knob
from pipeline.refine.calibration import calibrate_peaks
from pipeline.refine.dense_crf import CRFKernels, check_image, dense_crf, for_image
from pipeline.seeds.stored import seed_scores

NEUTRAL = 255


@dataclass(frozen=True)
class CRFConfig(CRFKernels):
    """The ``crf`` section: the kernels, plus the two background exponents that turn seeds into
    confident labels and the worker count."""

    alpha_low: float = knob("confident foreground: background score (1 - max seed) ** alpha_low", 0.0, 1000.0)
    alpha_high: float = knob("confident background: background score (1 - max seed) ** alpha_high", 0.0, 1000.0)
    peak_fraction: float = knob("each seed is first divided by the mean of its top peak_fraction of pixels, clipped at 1; "
                                "0 keeps the single maximum (the reference)", 0.0, 1.0)
    workers: int = knob("processes for the CRFs of different images (results do not depend on it)", 1, 256)


def _average_pool(maps: np.ndarray, cell: int) -> np.ndarray:
    """Mean over non-overlapping cell x cell blocks of (L, H, W) maps (H, W multiples of cell)."""
    n, height, width = maps.shape
    return maps.reshape(n, height // cell, cell, width // cell, cell).mean(axis=(2, 4))


def confident_labels(
    image: np.ndarray,
    seeds: np.ndarray,
    class_labels: Sequence[int],
    params: CRFConfig,
    pool: int = 1,
) -> np.ndarray:
    """Confident label map from seeds: uint8 (H / pool, W / pool), values 0, class labels, 255.

    `seeds` (C, H, W) are the C present classes' seeds in [0, 1] (each normalised by its
    own max) at image resolution; `class_labels` (C,) their label values (1..254).
    They are first rescaled by :func:`calibrate_peaks` with ``params.peak_fraction``. Two CRFs
    run on [background, classes] with background (1 - max)^alpha_low and
    (1 - max)^alpha_high. A pixel is the low-alpha argmax class where that is a class
    (confident foreground), 0 where the high-alpha argmax is background (confident
    background, which wins where both hold, as in the reference), otherwise 255.
    `pool` > 1 averages both CRF marginals over pool x pool cells first (the reference
    decides at feature resolution, pool = 8); H and W must be multiples of it.
    With no present class (C == 0) every pixel is confident background.
    """
    image = np.asarray(image)
    check_image(image)
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
    seeds = calibrate_peaks(seeds, params.peak_fraction)
    low = _average_pool(dense_crf(image, seed_scores(seeds, params.alpha_low), params), pool).argmax(axis=0)
    high = _average_pool(dense_crf(image, seed_scores(seeds, params.alpha_high), params), pool).argmax(axis=0)
    lookup = np.concatenate([[NEUTRAL], labels]).astype(np.uint8)  # low-alpha background -> neutral
    out = lookup[low]
    out[high == 0] = 0
    return out


def _confident_labels_job(job: tuple[np.ndarray, np.ndarray, Sequence[int], CRFConfig, int]) -> np.ndarray:
    image, seeds, labels, config, pool = job
    return confident_labels(image, seeds, labels, for_image(config, image), pool)


def confident_labels_many(
    images: Sequence[np.ndarray],
    seeds: Sequence[np.ndarray],
    class_labels: Sequence[Sequence[int]],
    config: CRFConfig,
    pool: int = 1,
    progress: Callable[[int], None] | None = None,
) -> list[np.ndarray]:
    """`confident_labels` for many images, in order, each with :func:`for_image` settings, in
    ``config.workers`` processes (1 = in this process).

    Each image is computed by the same deterministic function whatever the worker count, so
    results are identical. `progress`, if given, is called with 1 after each image (e.g. a
    `pipeline.core.progress.progress_bar(...).update`).
    """
    if not len(images) == len(seeds) == len(class_labels):
        raise ValueError(f"{len(images)} images, {len(seeds)} seeds and {len(class_labels)} label lists differ")
    jobs = [(image, seed, labels, config, pool) for image, seed, labels in zip(images, seeds, class_labels)]
    if config.workers == 1:
        return _collect(map(_confident_labels_job, jobs), progress)
    with ProcessPoolExecutor(max_workers=config.workers) as executor:
        return _collect(executor.map(_confident_labels_job, jobs), progress)  # yields in submission order


def _collect(outputs: Iterator[np.ndarray], progress: Callable[[int], None] | None) -> list[np.ndarray]:
    results = []
    for out in outputs:
        results.append(out)
        if progress is not None:
            progress(1)
    return results
