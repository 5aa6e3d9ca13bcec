"""COCO-2014 instance annotations as a WSSS dataset: image labels from the annotations, semantic
masks rasterised from polygons and RLE.

Layout, relative to the root (names set by the ``dataset.coco`` templates, ``{split}`` filled in)::

    train2014/COCO_train2014_000000000009.jpg    images of a split
    annotations/instances_train2014.json         its instances file

Classes: the categories in category-id order become labels 1..K (COCO's 80: person = 1 ...
toothbrush = 80), unless ``<root>/class_names.txt`` fixes the list by name. Every file's
categories must be in the list.

Semantic masks, one per image (the rule, and why):

- non-crowd instances are painted largest first, so where instances overlap the smaller one
  wins: a small object lying on a large one (a cup on a table) keeps its pixels;
- crowd regions (``iscrowd: 1``) are 255, ignored, wherever no non-crowd instance covers them:
  a crowd outline is coarse and holds many instances and gaps, so it is no reliable boundary;
- everything else is background (0).

Image-level labels: every category with an annotation in the image, crowd ones included. The
class is visibly present; counting it as absent would teach the classifier that it is not there.
Its crowd pixels are ignored when scoring, never counted as background.
"""
from __future__ import annotations

import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from pipeline.core.config import knob
from pipeline.core.errors import DatasetError
from pipeline.data.images import file_digest
from pipeline.sources.base import IGNORE, class_names_file

BOUNDS_TOLERANCE = 1.0  # px a polygon vertex may lie past the image border (COCO's own stay within half a pixel)


@dataclass(frozen=True)
class COCOConfig:
    """The ``dataset.coco`` subsection: where each split's images and instances file are."""

    images: str = knob("image folder of a split under dataset.root; {split} is replaced by the split name")
    annotations: str = knob("instances JSON of a split under dataset.root; {split} is replaced by the split name")
    skip_unannotated: bool = knob("leave out images without any annotation, as the usual WSSS lists do (2014: train 82,783 -> 82,081, val 40,504 -> 40,137)")


@dataclass
class _Image:
    file_name: str
    height: int
    width: int
    annotations: list[dict[str, Any]] = field(default_factory=list)


def _load_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise DatasetError(f"COCO annotations {path} not found; check dataset.root and dataset.coco.annotations")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise DatasetError(f"COCO annotations {path} is not valid JSON ({error}); re-download it") from None
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise DatasetError(f"COCO annotations {path} has no '{key}' list; is it an instances_*.json file?")
    return data


def _check_bounds(annotation: dict[str, Any], image: _Image, path: Path) -> None:
    """Stop at an annotation that reaches outside its image (a wrong image id, or a broken export)."""
    where = f"{path}: annotation {annotation.get('id')} (image {annotation['image_id']}, {image.width}x{image.height})"
    segmentation = annotation.get("segmentation")
    if isinstance(segmentation, dict):
        size = [int(s) for s in segmentation.get("size", [])]
        if size != [image.height, image.width]:
            raise DatasetError(f"{where}: RLE size {size} is not the image's [height, width]; fix or remove the annotation")
        return
    if not isinstance(segmentation, list) or not segmentation:
        raise DatasetError(f"{where}: 'segmentation' must be polygons (a list of [x1, y1, x2, y2 ...]) or an RLE dict")
    for polygon in segmentation:
        if not isinstance(polygon, list) or len(polygon) < 6 or len(polygon) % 2:
            raise DatasetError(f"{where}: a polygon needs an even number (>= 6) of coordinates, got {polygon!r:.80}")
        xs, ys = np.asarray(polygon[0::2], dtype=np.float64), np.asarray(polygon[1::2], dtype=np.float64)
        low, high_x, high_y = -BOUNDS_TOLERANCE, image.width + BOUNDS_TOLERANCE, image.height + BOUNDS_TOLERANCE
        if xs.min() < low or ys.min() < low or xs.max() > high_x or ys.max() > high_y:
            raise DatasetError(f"{where}: polygon reaches ({xs.min():g}..{xs.max():g}, {ys.min():g}..{ys.max():g}), outside the image; "
                               "fix the annotation or its image_id")


def rasterise(annotations: list[dict[str, Any]], height: int, width: int) -> np.ndarray:
    """The semantic mask of one image from its annotations (rule: module docstring).

    Each annotation has ``label`` (1..K), ``iscrowd`` and COCO's ``segmentation``: polygons or
    RLE, compressed or not, decoded with pycocotools, i.e. COCO's own rasterisation.
    """
    from pycocotools import mask as coco_mask  # only the COCO format needs it

    def decode(segmentation: Any) -> np.ndarray:
        if isinstance(segmentation, list):  # polygons: one RLE each, merged
            rle = coco_mask.merge(coco_mask.frPyObjects(segmentation, height, width))
        elif isinstance(segmentation["counts"], list):  # uncompressed RLE
            rle = coco_mask.frPyObjects(segmentation, height, width)
        else:
            rle = {"size": segmentation["size"], "counts": segmentation["counts"].encode("ascii")}
        with warnings.catch_warnings():  # pycocotools 2.0 under numpy 2: a harmless copy-keyword deprecation
            warnings.simplefilter("ignore", DeprecationWarning)
            return coco_mask.decode(rle).astype(bool)

    mask = np.zeros((height, width), dtype=np.uint8)
    crowd = np.zeros((height, width), dtype=bool)
    instances = []
    for annotation in annotations:
        region = decode(annotation["segmentation"])
        if annotation["iscrowd"]:
            crowd |= region
        else:
            instances.append((int(region.sum()), annotation["label"], region))
    mask[crowd] = IGNORE
    # Largest first, by pixel count (a stable sort keeps the file's order among equals).
    for _, label, region in sorted(instances, key=lambda item: -item[0]):
        mask[region] = label
    return mask


class COCOSource:
    """COCO instances files of the requested splits, read once; pixels are read on demand."""

    masks_are_files = False

    def __init__(self, root: str | Path, config: COCOConfig, splits: list[str]) -> None:
        self.root = Path(root)
        self.config = config
        self._splits: dict[str, tuple[str, ...]] = {}
        self._images: dict[str, _Image] = {}
        self._folder: dict[str, str] = {}
        loaded = [(split, self.root / config.annotations.format(split=split)) for split in splits]
        files = [(split, path, _load_json(path)) for split, path in loaded]
        fixed = class_names_file(self.root)
        if fixed is not None:
            self.class_names = fixed
        else:  # the first file's categories, in category-id order
            first = sorted(files[0][2]["categories"], key=lambda c: c["id"]) if files else []
            self.class_names = tuple(c["name"] for c in first)
        position = {name: k + 1 for k, name in enumerate(self.class_names)}
        for split, path, data in files:
            self._read_split(split, path, data, position)

    def _read_split(self, split: str, path: Path, data: dict[str, Any], position: dict[str, int]) -> None:
        where = "its categories"
        try:
            labels: dict[int, int] = {}
            for category in data["categories"]:
                if category.get("name") not in position:
                    raise DatasetError(f"{path}: category {category.get('id')} '{category.get('name')}' is not in the class list "
                                       f"({len(position)} classes: {', '.join(list(position)[:5])} ...); "
                                       "add it to class_names.txt or use annotations with the same categories")
                labels[int(category["id"])] = position[category["name"]]
            by_number: dict[int, str] = {}
            folder = self.config.images.format(split=split)
            for k, record in enumerate(data["images"]):
                where = f"image record {k}"
                # The file name without its extension: COCO's own names are unique, and a folder in them is kept.
                image_id = str(PurePosixPath(record["file_name"]).with_suffix(""))
                image = _Image(record["file_name"], int(record["height"]), int(record["width"]))
                known = self._images.get(image_id)
                if known is not None and (known.file_name, self._folder[image_id]) != (image.file_name, folder):
                    raise DatasetError(f"{path}: image {record['id']} '{folder}/{record['file_name']}' has the same id '{image_id}' as "
                                       f"'{self._folder[image_id]}/{known.file_name}'; rename one of them")
                self._images.setdefault(image_id, image)
                self._folder.setdefault(image_id, folder)
                by_number[int(record["id"])] = image_id
            annotated: set[str] = set()
            for k, annotation in enumerate(data["annotations"]):
                where = f"annotation record {k}"
                image_id = by_number.get(int(annotation["image_id"]))
                if image_id is None:
                    raise DatasetError(f"{path}: annotation {annotation.get('id')} refers to image {annotation['image_id']}, which the file does not list")
                if int(annotation["category_id"]) not in labels:
                    raise DatasetError(f"{path}: annotation {annotation.get('id')} has category {annotation['category_id']}, "
                                       "which the file's 'categories' do not define")
                image = self._images[image_id]
                _check_bounds(annotation, image, path)
                image.annotations.append({"id": annotation.get("id"), "label": labels[int(annotation["category_id"])],
                                          "iscrowd": int(annotation.get("iscrowd", 0)), "segmentation": annotation["segmentation"]})
                annotated.add(image_id)
        except DatasetError:
            raise
        except (KeyError, TypeError, ValueError) as error:
            raise DatasetError(f"{path}: {where} is malformed ({type(error).__name__}: {error}); an image needs id, file_name, "
                               "height and width, an annotation id, image_id, category_id and segmentation") from None
        ids = [i for i in dict.fromkeys(by_number.values()) if i in annotated or not self.config.skip_unannotated]
        if not ids:
            raise DatasetError(f"{path} lists no images{' with annotations' if data['images'] else ''}; check dataset.coco.annotations for split '{split}'")
        self._splits[split] = tuple(ids)

    def split_ids(self, split: str) -> tuple[str, ...]:
        if split not in self._splits:
            raise DatasetError(f"COCO split '{split}' was not loaded (loaded: {', '.join(self._splits)}); add it to dataset.splits")
        return self._splits[split]

    def image_file(self, image_id: str) -> str:
        return f"{self._folder[image_id]}/{self._images[image_id].file_name}"

    def size(self, image_id: str) -> tuple[int, int]:
        image = self._images[image_id]
        return image.height, image.width

    def labels(self, image_id: str) -> np.ndarray:
        vector = np.zeros(len(self.class_names), dtype=np.uint8)
        for annotation in self._images[image_id].annotations:
            vector[annotation["label"] - 1] = 1
        return vector

    def has_mask(self, image_id: str) -> bool:
        return True  # every listed image has its annotations (none, if kept: all background)

    def mask(self, image_id: str) -> np.ndarray:
        image = self._images[image_id]
        return rasterise(image.annotations, image.height, image.width)

    def mask_digest(self, image_id: str) -> np.ndarray:
        # The mask is drawn from the image's annotation records at its size: their canonical JSON.
        image = self._images[image_id]
        records = json.dumps([image.height, image.width, image.annotations], sort_keys=True, separators=(",", ":"))
        return file_digest(records.encode())
