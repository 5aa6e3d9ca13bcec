"""Seed calibration shared by the two readers of the seeds in this package: the dense CRF's
confident labels and the random walk."""
from __future__ import annotations

import numpy as np


def calibrate_peaks(seeds: np.ndarray, fraction: float) -> np.ndarray:
    """(C, H, W) seeds, each divided by the mean of its highest ``fraction`` of pixels and clipped
    at 1; ``fraction`` 0 returns them unchanged.

    Seeds normalised by their single maximum hang on one token: a classifier whose relevance
    peaks on a small part of an object leaves the rest of it far below the peak, where
    (1 - max) ** alpha calls it background. The mean of the top pixels is a peak many pixels
    agree on (docs/reproducibility.md, "Where the spread enters"). The CRF (crf.peak_fraction)
    and the random walk (random_walk.peak_fraction) each apply it before their background score.
    """
    if fraction == 0 or seeds.shape[0] == 0:
        return seeds
    flat = seeds.reshape(seeds.shape[0], -1)
    count = max(1, int(round(fraction * flat.shape[1])))
    top = -np.partition(-flat, count - 1, axis=1)[:, :count]  # each seed's `count` highest pixels
    peak = top.mean(axis=1, dtype=np.float64).astype(np.float32)
    scale = np.where(peak > 0, peak, 1.0).astype(np.float32)
    return np.minimum(seeds / scale[:, None, None], 1.0).astype(np.float32)
