"""Confident-label CRF throughput (two dense CRFs per image) with 1 and more worker processes.

Synthetic images: random bright rectangles on a noisy background, one soft seed per rectangle.
CRF spatial std-devs are scaled to the image size (`pipeline.refine.dense_crf.for_image`).

    .venv/bin/python benchmarks/bench_crf.py --size 224 --images 16 --workers 1 2
"""
from __future__ import annotations

import argparse
import dataclasses
import time

import numpy as np

from pipeline.refine.confident import CRFConfig, confident_labels_many
from stages.runner import params as P


def synthetic_image(size: int, classes: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, list[int]]:
    image = rng.integers(0, 60, size=(size, size, 3), dtype=np.uint8)
    yy, xx = np.mgrid[:size, :size]
    seeds = []
    for _ in range(classes):
        top, left = rng.integers(0, size // 2, size=2)
        side = int(rng.integers(size // 6, size // 2))
        image[top : top + side, left : left + side] = rng.integers(120, 255, size=3, dtype=np.uint8)
        cy, cx = top + side / 2, left + side / 2
        seeds.append(np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * (side / 3) ** 2)))
    labels = sorted(rng.choice(np.arange(1, 21), size=classes, replace=False).tolist())
    return image, np.stack(seeds).astype(np.float32), labels


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=224, help="image side in pixels")
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--classes", type=int, default=2, help="present classes per image")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--params", default="params.yaml", help="the crf section to use")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    images, seeds, labels = zip(*(synthetic_image(args.size, args.classes, rng) for _ in range(args.images)))
    params = P.section(P.load(args.params), "crf", CRFConfig)  # scaled to each image's side, as in the stage
    print(f"{args.images} images of {args.size}x{args.size}, {args.classes} classes, "
          f"{params.iterations} mean-field iterations x 2 CRFs per image")
    reference = None
    for workers in args.workers:
        start = time.perf_counter()
        maps = confident_labels_many(images, seeds, labels, dataclasses.replace(params, workers=workers))
        seconds = time.perf_counter() - start
        if reference is None:
            reference = maps
        identical = all(np.array_equal(a, b) for a, b in zip(reference, maps))
        print(f"workers {workers}: {args.images / seconds:6.2f} images/s ({seconds:.2f} s, pool start included), "
              f"identical to workers={args.workers[0]}: {identical}")


if __name__ == "__main__":
    main()
