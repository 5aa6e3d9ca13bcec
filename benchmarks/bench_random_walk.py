"""Sparse random walk vs the dense N x N formulation, per image on a feature grid.

The dense formulation is the reference code's: a dense W^beta (N x N), row-normalised, raised
to the power `steps` by repeated squaring, then applied to the seeds. The sparse one is
`pipeline.refine.random_walk`. Both must give the same scores (to float tolerance) and labels.
Peak memory is what tracemalloc sees (numpy and scipy arrays; not BLAS scratch buffers).

    .venv/bin/python benchmarks/bench_random_walk.py --grid 56 --beta 16 --steps 8
"""
from __future__ import annotations

import argparse
import time
import tracemalloc

import numpy as np

from pipeline.refine.affinity.pairs import half_disc_offsets
from pipeline.refine.random_walk import random_walk, seed_scores, transition_matrix


def synthetic_case(grid: int, offsets: list[tuple[int, int]], classes: int, seed: int):
    """Blocky regions: affinity ~U(0.8, 1) inside a region, ~U(0, 0.3) across; seeds on two regions."""
    rng = np.random.default_rng(seed)
    cells = rng.integers(0, 4, size=(4, 4))
    region = np.kron(cells, np.ones((grid // 4 + 1, grid // 4 + 1), int))[:grid, :grid]
    affinity = np.empty((len(offsets), grid, grid))
    for p, (dy, dx) in enumerate(offsets):
        partner = np.roll(region, (-dy, -dx), axis=(0, 1))
        affinity[p] = np.where(partner == region, rng.uniform(0.8, 1.0, region.shape), rng.uniform(0, 0.3, region.shape))
    cams = np.stack([(region == c) * rng.uniform(0.2, 1.0, region.shape) + 0.01 for c in range(classes)])
    return affinity, seed_scores(cams / cams.max(axis=(1, 2), keepdims=True), alpha=16)


def dense_walk(scores: np.ndarray, affinity: np.ndarray, offsets: list[tuple[int, int]], beta: float, steps: int) -> np.ndarray:
    _, h, w = affinity.shape
    n = h * w
    index = np.arange(n).reshape(h, w)
    weights = np.eye(n)
    for p, (dy, dx) in enumerate(offsets):
        ys = slice(max(0, -dy), min(h, h - dy))
        xs = slice(max(0, -dx), min(w, w - dx))
        src = index[ys, xs].ravel()
        dst = src + dy * w + dx
        weights[src, dst] = weights[dst, src] = affinity[p, ys, xs].ravel() ** beta
    transition = weights / weights.sum(axis=1, keepdims=True)
    del weights
    power = np.linalg.matrix_power(transition, steps)
    return (power @ scores.reshape(scores.shape[0], -1).T).T.reshape(scores.shape)


def sparse_walk(scores: np.ndarray, affinity: np.ndarray, offsets: list[tuple[int, int]], beta: float, steps: int) -> np.ndarray:
    return random_walk(scores, transition_matrix(affinity, offsets, beta), steps)


def measure(fn, *args) -> tuple[np.ndarray, float, float]:
    """Result, seconds, peak MiB allocated while it ran."""
    tracemalloc.start()
    start = time.perf_counter()
    result = fn(*args)
    seconds = time.perf_counter() - start
    peak = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    return result, seconds, peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--grid", type=int, default=56)
    parser.add_argument("--radius", type=int, default=5)
    parser.add_argument("--beta", type=float, default=16)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--classes", type=int, default=2, help="present classes per image (+1 background)")
    parser.add_argument("--images", type=int, default=3)
    args = parser.parse_args()
    offsets = half_disc_offsets(args.radius)
    n = args.grid**2
    print(f"grid {args.grid}x{args.grid} (N={n}), radius {args.radius} ({len(offsets)} offsets), "
          f"beta {args.beta:g}, steps {args.steps}, {args.classes + 1} score maps")
    totals = {"sparse": [0.0, 0.0], "dense": [0.0, 0.0]}
    for image in range(args.images):
        affinity, scores = synthetic_case(args.grid, offsets, args.classes, seed=image)
        sparse, t_sparse, m_sparse = measure(sparse_walk, scores, affinity, offsets, args.beta, args.steps)
        dense, t_dense, m_dense = measure(dense_walk, scores, affinity, offsets, args.beta, args.steps)
        max_diff = float(np.abs(sparse - dense).max())
        same_labels = bool(np.array_equal(sparse.argmax(0), dense.argmax(0)))
        if not (np.allclose(sparse, dense, rtol=1e-4, atol=1e-6) and same_labels):
            raise SystemExit(f"image {image}: outputs differ (max |diff| {max_diff:.2e}, same labels {same_labels})")
        print(f"image {image}: sparse {t_sparse * 1e3:8.1f} ms {m_sparse:7.1f} MiB | dense {t_dense * 1e3:8.1f} ms "
              f"{m_dense:7.1f} MiB | max |diff| {max_diff:.1e}, labels equal")
        for key, t, m in (("sparse", t_sparse, m_sparse), ("dense", t_dense, m_dense)):
            totals[key][0] += t
            totals[key][1] = max(totals[key][1], m)
    (ts, ms), (td, md) = totals["sparse"], totals["dense"]
    print(f"per image: sparse {ts / args.images * 1e3:.1f} ms, dense {td / args.images * 1e3:.1f} ms "
          f"-> dense/sparse time x{td / ts:.1f}; peak memory sparse {ms:.1f} MiB, dense {md:.1f} MiB (x{md / ms:.0f})")


if __name__ == "__main__":
    main()
