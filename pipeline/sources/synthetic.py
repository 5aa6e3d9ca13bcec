"""A synthetic weakly-supervised segmentation set, written in the exact VOC layout.

Each image shows 1-3 objects on a cluttered, textured background. Every class is a shape
family (disc, square, triangle, ...) with its own hue and texture; the background carries
distractor blobs and strokes that borrow those hues and textures (``mimicry``), so colour
alone does not tell the classes apart, shape does. Objects are drawn in order, later ones
over earlier ones, and the mask records what is visible.

Rules (the contract the tests check):

- mask values are 0 (background), k (class ``k``, 1-based) or 255 (ignore);
- a band of ``ignore_border`` px on each side of every instance outline is 255, as VOC's
  boundary band (between two touching instances too, even of the same class);
- an instance whose visible part (after occlusion and image-edge clipping) is less than
  ``min_visible`` of its full area does not count: it is left out of the labels and the XML,
  and its visible pixels are set to 255 (they show part of a class the labels deny);
- an instance that keeps no pixel outside the ignore band does not count either (same rule);
- so every labelled class has pixels in the mask and every class in the mask is labelled;
  an image always keeps at least one labelled object (its object layer is redrawn if not).

Determinism: image ``i`` is drawn from its own generator seeded by ``(seed, i)``, so the
same arguments give byte-identical files and any image can be rendered alone
(:func:`render`), in any order or process.
"""
from __future__ import annotations

import colorsys
import dataclasses
import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from scipy import ndimage

from pipeline.core.config import knob
from pipeline.core.progress import progress
from pipeline.data.label_maps import save_label_png
from pipeline.sources.voc import IGNORE, DatasetError

SHAPES: tuple[str, ...] = (
    "disc", "square", "triangle", "ring", "cross", "star", "ellipse", "crescent", "lshape", "hexagon",
)
TEXTURES: tuple[str, ...] = ("stripes", "dots", "checker", "noise", "plain", "gradient")
_GOLDEN = 0.381966  # golden-angle hue spacing keeps any number of classes far apart on the wheel
_MAX_ATTEMPTS = 50  # object-layer redraws before giving up (a fully hidden layer is rare)


@dataclasses.dataclass(frozen=True)
class SyntheticConfig:
    """The ``synthetic`` section: set size, image size, class count and the difficulty knobs."""

    num_train: int = knob("images of the train split", 0)
    num_val: int = knob("images of the val split", 0)
    image_size: int = knob("side of the square images, px", 16, 2048)
    num_classes: int = knob("K; class k is shape family SHAPES[k - 1]", 1, len(SHAPES))
    objects: tuple[int, int] = knob("(min, max) objects drawn per image (some may end up occluded)", 1, 20, length=2)
    scale: tuple[float, float] = knob("(min, max) object radius as a fraction of the image side", 0.01, 0.5, length=2)
    aspect_jitter: float = knob("objects are stretched by exp(U(-a, a)) along a random axis", 0.0, 2.0)
    shape_jitter: float = knob("amplitude of smooth outline wobble, fraction of the radius", 0.0, 1.0)
    hue_jitter: float = knob("std of an object's hue around its class hue, fraction of the colour wheel", 0.0, 1.0)
    texture_contrast: float = knob("0 flat colours, 1 full-strength stripes, dots and checkers", 0.0, 1.0)
    clutter: float = knob("background distractors: on average 3 x clutter blobs and 5 x clutter strokes", 0.0, 10.0)
    mimicry: float = knob("probability that a distractor copies a random class's hue and texture", 0.0, 1.0)
    noise: float = knob("std of per-pixel colour noise, in [0, 1] intensity units", 0.0, 1.0)
    min_visible: float = knob("an instance counts only if at least this fraction of it is visible", 0.0, 0.99)
    ignore_border: int = knob("px of 255 on each side of every instance outline (0 turns it off)", 0, 16)
    jpeg_quality: int = knob("JPEG quality of the written images", 1, 100)
    seed: int = knob("image i is drawn from a generator seeded by (seed, i)", 0)

    def check(self) -> None:
        if self.num_train + self.num_val == 0:
            raise ValueError("num_train + num_val must be at least 1")
        if self.objects[0] > self.objects[1] or self.scale[0] > self.scale[1]:
            raise ValueError("objects and scale are (min, max) pairs; put the smaller value first")

    @property
    def class_names(self) -> tuple[str, ...]:
        return SHAPES[: self.num_classes]


@dataclasses.dataclass(frozen=True)
class SyntheticObject:
    """A labelled (counted) instance: 0-based class index and visible bbox (x0, y0, x1, y1), inclusive."""

    class_index: int
    bbox: tuple[int, int, int, int]


@dataclasses.dataclass(frozen=True)
class Sample:
    """One rendered image with its VOC-convention mask and the instances that count."""

    image: np.ndarray  # uint8 HxWx3 RGB
    mask: np.ndarray  # uint8 HxW: 0 background, k class k, 255 ignore
    objects: tuple[SyntheticObject, ...]
    dropped: int  # instances drawn but not counted (hidden below min_visible)

    def labels(self, num_classes: int) -> np.ndarray:
        """Multi-hot uint8 vector of length K."""
        vector = np.zeros(num_classes, dtype=np.uint8)
        vector[[o.class_index for o in self.objects]] = 1
        return vector


@dataclasses.dataclass(frozen=True)
class SyntheticSummary:
    """What :func:`generate` wrote."""

    root: Path
    class_names: tuple[str, ...]
    num_train: int
    num_val: int
    images_per_class: tuple[int, ...]  # images (train + val) in which each class is labelled
    objects: int  # counted instances, all images
    dropped: int  # instances hidden below min_visible, all images


def image_id(index: int) -> str:
    """The id of image ``index``: ``syn_000123``."""
    return f"syn_{index:06d}"


def generate(root: str | Path, config: SyntheticConfig) -> SyntheticSummary:
    """Write a synthetic set in VOC layout under ``root`` (which must not exist or be empty).

    Images ``0 .. num_train - 1`` form the ``train`` split, the next ``num_val`` ``val``,
    both ``trainval``. Writing is not atomic; a caller that needs that writes to a temporary
    root and renames.
    """
    num_train, num_val, num_classes = config.num_train, config.num_val, config.num_classes
    root = Path(root)
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise DatasetError(f"{root} exists and is not an empty folder; delete it or pick another root "
                           "(generate never mixes with old files)")
    folders = {name: root / name for name in ("JPEGImages", "SegmentationClass", "Annotations")}
    for folder in (*folders.values(), root / "ImageSets" / "Segmentation"):
        folder.mkdir(parents=True, exist_ok=True)
    (root / "class_names.txt").write_text("".join(f"{name}\n" for name in config.class_names))

    per_class = np.zeros(num_classes, dtype=np.int64)
    objects = dropped = 0
    total = num_train + num_val
    for index in progress(range(total), total=total, desc="synthetic"):
        sample = render(config, index)
        name = image_id(index)
        Image.fromarray(sample.image).save(folders["JPEGImages"] / f"{name}.jpg", quality=config.jpeg_quality)
        save_label_png(folders["SegmentationClass"] / f"{name}.png", sample.mask)
        (folders["Annotations"] / f"{name}.xml").write_text(_annotation_xml(name, sample, config))
        per_class += sample.labels(num_classes)
        objects += len(sample.objects)
        dropped += sample.dropped

    ids = [image_id(i) for i in range(total)]
    for split, split_ids in (("train", ids[:num_train]), ("val", ids[num_train:]), ("trainval", ids)):
        (root / "ImageSets" / "Segmentation" / f"{split}.txt").write_text("".join(f"{i}\n" for i in split_ids))
    return SyntheticSummary(root, config.class_names, num_train, num_val,
                            tuple(int(n) for n in per_class), objects, dropped)


def render(config: SyntheticConfig, index: int) -> Sample:
    """Draw image ``index`` of the set ``config`` makes; independent of every other image."""
    rng = np.random.default_rng([config.seed, index])
    side = config.image_size
    grid = _Grid(side)
    canvas = _background(rng, grid, config)
    _distractors(rng, grid, canvas, config)
    for _ in range(_MAX_ATTEMPTS):
        layer = canvas.copy()
        mask, objects, dropped = _objects(rng, grid, layer, config)
        if objects:
            break
    else:  # pragma: no cover - needs _MAX_ATTEMPTS layers in a row with every object hidden
        raise RuntimeError(f"image {index}: every object layer was hidden; raise scale or lower min_visible")
    layer += config.noise * rng.standard_normal(layer.shape, dtype=np.float32)
    image = np.clip(layer * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return Sample(image, mask, objects, dropped)


class _Grid:
    """Pixel-centre coordinates of a square image, shared by every texture."""

    def __init__(self, side: int) -> None:
        self.side = side
        coords = np.arange(side, dtype=np.float32) + 0.5
        self.y, self.x = np.meshgrid(coords, coords, indexing="ij")


def _colour(hue: float, saturation: float, value: float) -> np.ndarray:
    return np.array(colorsys.hsv_to_rgb(hue % 1.0, min(max(saturation, 0.0), 1.0), min(max(value, 0.0), 1.0)),
                    dtype=np.float32)


def _class_hue(class_index: int) -> float:
    return (0.05 + class_index * _GOLDEN) % 1.0


def _class_texture(class_index: int) -> str:
    return TEXTURES[class_index % len(TEXTURES)]


def _smooth_noise(rng: np.random.Generator, side: int, cells: int, channels: int) -> np.ndarray:
    """Bilinearly upsampled random grid, values in [0, 1): low-frequency blotches."""
    grid = rng.random((cells + 1, cells + 1, channels), dtype=np.float32)
    pos = (np.arange(side, dtype=np.float32) + 0.5) * (cells / side)
    i = np.minimum(pos.astype(np.int64), cells - 1)
    f = (pos - i)[:, None]
    rows = grid[i] * (1 - f)[..., None] + grid[i + 1] * f[..., None]  # (side, cells + 1, C)
    cols = rows[:, i] * (1 - f.T)[..., None] + rows[:, i + 1] * f.T[..., None]
    return cols


def _texture(rng: np.random.Generator, grid: _Grid, region: np.ndarray, hue: float, kind: str,
             centre: tuple[float, float], radius: float, config: SyntheticConfig) -> np.ndarray:
    """(n, 3) colours of the ``region`` pixels: a two-tone pattern anchored at ``centre``.

    Only the region's pixels are computed: textures are most of the drawing time.
    """
    base = _colour(hue + rng.normal(0, config.hue_jitter), rng.uniform(0.45, 0.95), rng.uniform(0.45, 0.95))
    partner = _colour(hue + rng.uniform(-0.08, 0.08), rng.uniform(0.2, 0.9), rng.uniform(0.05, 0.35)
                      if base.max() > 0.6 else rng.uniform(0.75, 1.0))
    angle = rng.uniform(0, math.pi)
    x, y = grid.x[region] - centre[0], grid.y[region] - centre[1]
    u = x * math.cos(angle) + y * math.sin(angle)
    v = -x * math.sin(angle) + y * math.cos(angle)
    period = rng.uniform(0.07, 0.13) * grid.side
    if kind == "stripes":
        pattern = (np.sin(u * (2 * math.pi / period)) > 0).astype(np.float32)
    elif kind == "dots":
        du, dv = np.mod(u, period) - period / 2, np.mod(v, period) - period / 2
        pattern = (du * du + dv * dv < (0.3 * period) ** 2).astype(np.float32)
    elif kind == "checker":
        pattern = ((np.floor(u / period) + np.floor(v / period)) % 2).astype(np.float32)
    elif kind == "noise":
        pattern = _smooth_noise(rng, grid.side, int(rng.integers(5, 10)), 1)[region, 0]
    elif kind == "gradient":
        pattern = np.clip(u / (2 * radius) + 0.5, 0, 1)
    else:  # plain: a flat colour; per-pixel noise is the only texture
        pattern = np.zeros_like(u)
    weight = (config.texture_contrast * pattern)[..., None]
    return base * (1 - weight) + partner * weight


def _background(rng: np.random.Generator, grid: _Grid, config: SyntheticConfig) -> np.ndarray:
    """A two-colour linear gradient with low-frequency colour blotches; any hue, so it overlaps the classes."""
    first = _colour(rng.random(), rng.uniform(0.1, 0.7), rng.uniform(0.25, 0.9))
    second = _colour(rng.random(), rng.uniform(0.1, 0.7), rng.uniform(0.25, 0.9))
    angle = rng.uniform(0, 2 * math.pi)
    ramp = ((grid.x * math.cos(angle) + grid.y * math.sin(angle)) / (grid.side * math.sqrt(2)) + 0.5)[..., None]
    blotches = _smooth_noise(rng, grid.side, int(rng.integers(3, 7)), 3) - 0.5
    return (first * (1 - ramp) + second * ramp + 0.25 * blotches).astype(np.float32)


def _style(rng: np.random.Generator, config: SyntheticConfig) -> tuple[float, str]:
    """A distractor's hue and texture: a random class's with probability ``mimicry``, else random."""
    if rng.random() < config.mimicry:
        k = int(rng.integers(config.num_classes))
        return _class_hue(k), _class_texture(k)
    return float(rng.random()), TEXTURES[int(rng.integers(len(TEXTURES)))]


def _distractors(rng: np.random.Generator, grid: _Grid, canvas: np.ndarray, config: SyntheticConfig) -> None:
    """Paint amoeba-like blobs and polyline strokes onto ``canvas`` in random order."""
    side = grid.side
    kinds = ["blob"] * int(rng.poisson(3 * config.clutter)) + ["stroke"] * int(rng.poisson(5 * config.clutter))
    for kind in rng.permutation(kinds):
        hue, texture = _style(rng, config)
        centre = (rng.uniform(0, side), rng.uniform(0, side))
        paper = Image.new("L", (side, side))
        draw = ImageDraw.Draw(paper)
        if kind == "blob":
            radius = rng.uniform(0.05, 0.15) * side
            theta = np.linspace(0, 2 * math.pi, 24, endpoint=False)
            # Several comparable harmonics make an irregular outline; one dominant harmonic h would
            # look like an h-gon (a triangle or star class), so none is allowed to dominate.
            r = 1 + sum(rng.uniform(0.08, 0.22) * np.cos(h * theta + rng.uniform(0, 2 * math.pi)) for h in (2, 3, 4, 5))
            points = np.stack([centre[0] + radius * r * np.cos(theta), centre[1] + radius * r * np.sin(theta)], 1)
            draw.polygon([tuple(p) for p in points], fill=1)
        else:
            radius = rng.uniform(0.1, 0.3) * side
            points = np.cumsum(rng.normal(0, radius / 2, (int(rng.integers(2, 5)), 2)), axis=0) + centre
            width = max(1, round(rng.uniform(0.01, 0.035) * side))
            draw.line([tuple(p) for p in points], fill=1, width=width, joint="curve")
        region = np.asarray(paper, dtype=bool)
        canvas[region] = _texture(rng, grid, region, hue, texture, centre, radius, config)


def _unit_shape(rng: np.random.Generator, family: str) -> list[tuple[np.ndarray, int]]:
    """The family's outline in unit coordinates (radius about 1) as (polygon, fill) layers; fill 0 cuts a hole."""

    def regular(n: int, radius: float = 1.0, phase: float = -math.pi / 2) -> np.ndarray:
        t = phase + np.linspace(0, 2 * math.pi, n, endpoint=False)
        return np.stack([radius * np.cos(t), radius * np.sin(t)], 1)

    if family in ("disc", "ellipse"):
        return [(regular(40), 1)]
    if family == "square":
        return [(np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], dtype=np.float64) * 0.85, 1)]
    if family == "triangle":
        return [(regular(3, 1.15), 1)]
    if family == "ring":
        return [(regular(40), 1), (regular(40, rng.uniform(0.5, 0.62)), 0)]
    if family == "cross":
        w = rng.uniform(0.26, 0.34)
        return [(np.array([[-w, -1], [w, -1], [w, -w], [1, -w], [1, w], [w, w], [w, 1], [-w, 1], [-w, w],
                           [-1, w], [-1, -w], [-w, -w]]), 1)]
    if family == "star":
        outer, inner = regular(5), regular(5, rng.uniform(0.38, 0.48), -math.pi / 2 + math.pi / 5)
        return [(np.stack([outer, inner], 1).reshape(10, 2), 1)]
    if family == "crescent":
        return [(regular(40), 1), (regular(40, rng.uniform(0.85, 0.95)) + [rng.uniform(0.4, 0.55), 0], 0)]
    if family == "lshape":
        w = rng.uniform(0.55, 0.75)
        return [(np.array([[-1, -1], [-1 + w, -1], [-1 + w, 1 - w], [1, 1 - w], [1, 1], [-1, 1]]) * 0.95, 1)]
    if family == "hexagon":
        return [(regular(6), 1)]
    raise AssertionError(family)


def _objects(rng: np.random.Generator, grid: _Grid, layer: np.ndarray, config: SyntheticConfig
             ) -> tuple[np.ndarray, tuple[SyntheticObject, ...], int]:
    """Paint 1..n objects onto ``layer``; return the mask, the counted instances and the dropped count."""
    side = grid.side
    pad = int(math.ceil(config.scale[1] * side * 1.6))  # the canvas holds each whole shape, clipped or not
    count = int(rng.integers(config.objects[0], config.objects[1] + 1))
    classes = rng.integers(config.num_classes, size=count)
    instances = np.zeros((side, side), dtype=np.int32)  # 0 background, j + 1 instance j
    full_areas = []
    for k in classes:
        family = SHAPES[int(k)]
        radius = rng.uniform(*config.scale) * side
        centre = (rng.uniform(0.15, 0.85) * side, rng.uniform(0.15, 0.85) * side)
        stretch = rng.uniform(0.42, 0.6) if family == "ellipse" else math.exp(rng.uniform(-1, 1) * config.aspect_jitter)
        rotation = rng.uniform(0, 2 * math.pi)
        harmonics = [(rng.uniform(-1, 1) * config.shape_jitter, h, rng.uniform(0, 2 * math.pi)) for h in (2, 3)]
        paper = Image.new("L", (side + 2 * pad, side + 2 * pad))
        draw = ImageDraw.Draw(paper)
        for polygon, fill in _unit_shape(rng, family):
            angle = np.arctan2(polygon[:, 1], polygon[:, 0])
            wobble = 1 + sum(a * np.cos(h * angle + p) for a, h, p in harmonics)
            px, py = polygon[:, 0] * wobble * radius, polygon[:, 1] * wobble * radius / stretch
            px, py = px * math.cos(rotation) - py * math.sin(rotation), px * math.sin(rotation) + py * math.cos(rotation)
            draw.polygon(list(zip((px + centre[0] + pad).tolist(), (py + centre[1] + pad).tolist())), fill=fill)
        whole = np.asarray(paper, dtype=bool)
        full_areas.append(int(whole.sum()))
        region = whole[pad:pad + side, pad:pad + side]
        instances[region] = len(full_areas)
        layer[region] = _texture(rng, grid, region, _class_hue(int(k)), _class_texture(int(k)), centre, radius, config)

    mask = np.zeros((side, side), dtype=np.uint8)
    if config.ignore_border:
        size = 2 * config.ignore_border + 1
        band = ndimage.maximum_filter(instances, size=size, mode="nearest") != \
            ndimage.minimum_filter(instances, size=size, mode="nearest")
    else:
        band = np.zeros_like(mask, dtype=bool)
    counted: list[SyntheticObject] = []
    for j, k in enumerate(classes):
        pixels = instances == j + 1
        core = pixels & ~band
        if full_areas[j] and pixels.sum() >= config.min_visible * full_areas[j] and core.any():
            mask[core] = int(k) + 1
            ys, xs = np.nonzero(pixels)
            counted.append(SyntheticObject(int(k), (int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max()))))
        else:
            mask[pixels] = IGNORE
    mask[band] = IGNORE
    return mask, tuple(counted), count - len(counted)


def _annotation_xml(name: str, sample: Sample, config: SyntheticConfig) -> str:
    """VOC-style annotation; bndbox is 1-based and inclusive as in VOC."""
    side = config.image_size
    objects = "".join(
        f"  <object>\n    <name>{config.class_names[o.class_index]}</name>\n    <difficult>0</difficult>\n"
        f"    <bndbox><xmin>{o.bbox[0] + 1}</xmin><ymin>{o.bbox[1] + 1}</ymin>"
        f"<xmax>{o.bbox[2] + 1}</xmax><ymax>{o.bbox[3] + 1}</ymax></bndbox>\n  </object>\n"
        for o in sample.objects)
    return (f"<annotation>\n  <folder>synthetic</folder>\n  <filename>{name}.jpg</filename>\n"
            f"  <size><width>{side}</width><height>{side}</height><depth>3</depth></size>\n{objects}</annotation>\n")
