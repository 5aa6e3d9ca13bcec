"""Random walk over predicted affinities (Ahn & Kwak, CVPR 2018; docs/methods.md, "Random walk").

Affinities live on the feature grid (h, w) for the half-disc offsets of
`pipeline.refine.affinity.half_disc_offsets`. The transition matrix is sparse: a pixel has at
most 2 * P + 1 non-zero entries (P half-disc offsets, their mirror images, itself), so
a 56x56 grid with radius 5 holds ~0.2 M entries instead of the ~10 M of a dense N x N.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch

from pipeline.core.config import knob
from pipeline.refine.calibration import calibrate_peaks
from pipeline.seeds.maps import upsample
from pipeline.seeds.stored import seed_scores


@dataclass(frozen=True)
class RandomWalkConfig:
    """The ``random_walk`` section: how far and how sharply the seeds spread."""

    beta: float = knob("affinities are raised to beta before normalising (sharper walk)", 1.0, 256.0)
    steps: int = knob("t: the walk applies T ** t", 0)
    alpha: float = knob("background score (1 - max seed) ** alpha of the walked seeds", 0.0, 1000.0)
    peak_fraction: float = knob("each seed is first divided by the mean of its top peak_fraction of pixels, clipped at 1; "
                                "0 keeps the single maximum (the reference)", 0.0, 1.0)


def transition_matrix(affinity: np.ndarray, offsets: Sequence[tuple[int, int]], beta: float) -> sp.csr_matrix:
    """Row-stochastic T = D^-1 W^beta as a sparse (N, N) matrix, N = h * w (row-major pixels).

    `affinity[p, y, x]` is the affinity of pixel (y, x) with pixel (y + dy, x + dx) for
    `offsets[p] = (dy, dx)`; values whose partner falls outside the grid are ignored. Each
    half-disc entry fills both (i, j) and (j, i), so W is symmetric; W_ii = 1.
    """
    affinity = np.asarray(affinity, dtype=np.float64)
    if affinity.ndim != 3 or affinity.shape[0] != len(offsets):
        raise ValueError(f"affinity must be (P={len(offsets)}, h, w), got shape {affinity.shape}")
    kept = {tuple(offset) for offset in offsets}
    if any((-dy, -dx) in kept for dy, dx in kept):
        raise ValueError("offsets must hold one of each +/- pair (a half-disc); both would count a pair twice")
    _, h, w = affinity.shape
    n = h * w
    index = np.arange(n).reshape(h, w)
    rows, cols, vals = [index.ravel()], [index.ravel()], [np.ones(n)]
    for p, (dy, dx) in enumerate(offsets):
        # Pixels (y, x) whose partner (y + dy, x + dx) is inside the grid.
        ys = slice(max(0, -dy), min(h, h - dy))
        xs = slice(max(0, -dx), min(w, w - dx))
        src = index[ys, xs].ravel()
        dst = src + dy * w + dx
        val = affinity[p, ys, xs].ravel() ** beta
        rows += [src, dst]
        cols += [dst, src]
        vals += [val, val]
    weights = sp.csr_matrix(
        (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(n, n)
    )
    degree = np.asarray(weights.sum(axis=1)).ravel()  # >= 1 thanks to the diagonal
    return (sp.diags(1.0 / degree) @ weights).tocsr()


def random_walk(scores: np.ndarray, transition: sp.spmatrix, steps: int) -> np.ndarray:
    """vec(M_l) <- T^steps vec(M_l) for every map l of `scores` (L, h, w), as `steps` sparse products.

    Seed report: steps = 8; reference code: 256 (it squares a dense matrix 8 times instead).
    """
    scores = np.asarray(scores)
    if scores.ndim != 3 or scores.shape[1] * scores.shape[2] != transition.shape[0]:
        raise ValueError(f"scores must be (L, h, w) with h * w = {transition.shape[0]}, got shape {scores.shape}")
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    # One column per map, so each step is a single sparse-times-dense product.
    state = scores.reshape(scores.shape[0], -1).T.astype(np.float64)
    for _ in range(steps):
        state = transition @ state
    return state.T.reshape(scores.shape).astype(np.float32)


def refine(
    cams: np.ndarray,
    class_labels: Sequence[int],
    affinity: np.ndarray,
    offsets: Sequence[tuple[int, int]],
    config: RandomWalkConfig,
    out_size: tuple[int, int],
) -> np.ndarray:
    """Seeds -> random walk -> pseudo-mask: uint8 (H, W) with 0 = background, else the class label.

    `cams` (C, gh, gw) are the present classes' seeds in [0, 1] (each normalised by its own max),
    `class_labels` (C,) their label values (1..K). Seeds are rescaled by :func:`calibrate_peaks`
    with ``config.peak_fraction`` on their own grid, resized bilinearly to the affinity grid
    (h, w) if they differ, background (1 - max)^alpha is added, the walk runs on the grid, and
    the walked scores are upsampled bilinearly to `out_size` before the argmax.
    """
    cams = np.asarray(cams, dtype=np.float32)
    labels = np.asarray(class_labels, dtype=np.int64)
    if cams.ndim != 3 or labels.shape != (cams.shape[0],):
        raise ValueError(f"cams (C, h, w) and class_labels (C,) disagree: {cams.shape} vs {labels.shape}")
    if labels.size and (labels.min() < 1 or labels.max() > 254):
        raise ValueError(f"class labels must be in 1..254, got {labels.tolist()}")
    if cams.shape[0] == 0:
        return np.zeros(out_size, np.uint8)
    cams = calibrate_peaks(cams, config.peak_fraction)
    grid = tuple(np.asarray(affinity).shape[1:])
    if cams.shape[1:] != grid:
        cams = upsample(torch.from_numpy(cams), grid).numpy()
    walked = random_walk(seed_scores(cams, config.alpha), transition_matrix(affinity, offsets, config.beta), config.steps)
    full = upsample(torch.from_numpy(walked), out_size).numpy()
    lookup = np.concatenate([[0], labels]).astype(np.uint8)
    return lookup[full.argmax(axis=0)]
