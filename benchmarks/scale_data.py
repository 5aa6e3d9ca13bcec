"""Dataset scales and generated images for benchmarks/bench_scale.py (numpy and PIL only, no torch).

A generated sample is a smooth colour image at the dataset's typical size with one elliptic blob
per present class; its mask (0 background, k class k) stands in for CRF labels, pseudo-masks and
ground truth, and its coarse seeds for the relevance maps of the cams stage.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import cycle, islice

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from pipeline.core.errors import InputError


@dataclass(frozen=True)
class DatasetScale:
    """The full dataset a preset is run on: images per split, typical size, labels per image."""

    name: str
    split_images: dict[str, int]
    height: int
    width: int
    classes_per_image: float
    num_classes: int

    def images(self, splits: Sequence[str], param: str) -> int:
        """Images of ``splits`` together (an image in two splits counts twice, as a stage over both
        lists would see it); ``param`` names the setting in the message for an unknown split."""
        unknown = [s for s in splits if s not in self.split_images]
        if unknown:
            raise InputError(f"{param}={list(splits)}: {self.name} has no split {unknown[0]!r} "
                             f"(known: {', '.join(self.split_images)})")
        return sum(self.split_images[s] for s in splits)


# Sources: VOC 2012 + SBD train_aug (10,582) and VOC 2012 train / val (1,464 / 1,449), ~500x375,
# ~1.5 classes per image; COCO 2014 train / val without unannotated images (82,081 / 40,137),
# ~640x480, ~2.9 categories per image.
SCALES = {
    "voc": DatasetScale("VOC 2012 + SBD", {"train_aug": 10_582, "train": 1_464, "val": 1_449}, 375, 500, 1.5, 20),
    "coco": DatasetScale("COCO 2014", {"train": 82_081, "val": 40_137}, 480, 640, 2.9, 80),
}


def dataset_scale(params: dict) -> DatasetScale:
    """The scale of the preset's ``dataset.format``; stops for a format without a reference size."""
    fmt = params.get("dataset", {}).get("format")
    if fmt not in SCALES:
        raise InputError(f"dataset.format={fmt!r}: bench_scale projects the reference datasets only "
                         f"({', '.join(f'{k}: {v.name}' for k, v in SCALES.items())})")
    return SCALES[fmt]


@dataclass(frozen=True)
class Sample:
    """One generated image: uint8 (H, W, 3), its mask uint8 (H, W) and present label values (1..K)."""

    image: np.ndarray
    mask: np.ndarray
    labels: np.ndarray


def generate(scale: DatasetScale, count: int, seed: int = 0) -> list[Sample]:
    """``count`` samples; the present classes per image are 1 + Poisson(mean - 1), so their mean is the dataset's."""
    rng = np.random.default_rng(seed)
    return [_sample(scale, rng) for _ in range(count)]


def _sample(scale: DatasetScale, rng: np.random.Generator) -> Sample:
    height, width = scale.height, scale.width
    # A smooth background: a coarse grid of random colours, bilinearly enlarged.
    coarse = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
    canvas = Image.fromarray(coarse).resize((width, height), Image.BILINEAR)
    mask = Image.new("L", (width, height), 0)
    present = min(scale.num_classes, 1 + int(rng.poisson(scale.classes_per_image - 1)))
    labels = np.sort(rng.choice(scale.num_classes, present, replace=False) + 1)
    paint, label_paint = ImageDraw.Draw(canvas), ImageDraw.Draw(mask)
    for label in labels:
        cy, cx = rng.uniform(0.2, 0.8) * height, rng.uniform(0.2, 0.8) * width
        ry, rx = rng.uniform(0.1, 0.3) * height, rng.uniform(0.1, 0.3) * width
        box = (cx - rx, cy - ry, cx + rx, cy + ry)
        paint.ellipse(box, fill=tuple(int(v) for v in rng.integers(0, 256, 3)))
        label_paint.ellipse(box, fill=int(label))
    image = np.asarray(canvas.filter(ImageFilter.GaussianBlur(2)))
    return Sample(image=image, mask=np.asarray(mask), labels=labels)


def repeated(samples: Sequence[Sample], count: int) -> list[Sample]:
    """``count`` samples, the generated ones over and over (a training batch may be larger than --images)."""
    return list(islice(cycle(samples), count))


def coarse_seeds(sample: Sample, grid: tuple[int, int]) -> np.ndarray:
    """Seeds (C, *grid) float32 in [0, 1], one per present class: its blob averaged down to the
    grid and blurred by a cell, each map divided by its own max, like stored relevance maps."""
    maps = []
    for label in sample.labels:
        blob = Image.fromarray((sample.mask == label).astype(np.uint8) * 255)
        small = blob.resize((grid[1], grid[0]), Image.BOX).filter(ImageFilter.GaussianBlur(1))
        m = np.asarray(small, dtype=np.float32)
        maps.append(m / m.max() if m.max() > 0 else m)
    return np.stack(maps)


def multi_hot(samples: Sequence[Sample], num_classes: int) -> np.ndarray:
    """Image labels (N, K) uint8, column k - 1 for label value k."""
    out = np.zeros((len(samples), num_classes), np.uint8)
    for row, sample in enumerate(samples):
        out[row, sample.labels - 1] = 1
    return out
