"""PASCAL VOC 2012 layout: reading images, label masks and image-level labels.

Layout, relative to a root folder::

    JPEGImages/<id>.jpg                 the image
    SegmentationClass/<id>.png          palette PNG: 0 background, k class k, 255 ignore
    SegmentationClassAug/<id>.png       (optional, SBD) same convention, often greyscale
    Annotations/<id>.xml                <object><name> elements -> image-level labels
    ImageSets/Segmentation/<split>.txt  one id per line
    class_names.txt                     (optional) foreground class names, one a line

Label convention: masks are uint8 HxW with 0 = background, k = ``class_names[k - 1]``,
255 = ignore. Image-level labels are a uint8 multi-hot vector of length K (no background).

Where an image's labels come from, first that applies:

1. ``Annotations/<id>.xml`` with at least one ``<object>``: the object names (every object,
   ``difficult`` ones included: they are in the image). Only direct ``object/name`` is read,
   so VOC's person-layout ``<part><name>head</name>`` entries are not mistaken for classes.
   A name outside the class list is an error naming the file.
2. the mask: every class index present in it.
3. neither: the image is kept with an all-zero label vector (a pure-background image). It is
   a legitimate negative for the classifier; :meth:`VOCDataset.labels` never fails for it.
"""
from __future__ import annotations

import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.core.config import knob
from pipeline.core.errors import DatasetError
from pipeline.data.images import image_size, read_image
from pipeline.data.label_maps import load_label_png
from pipeline.sources.base import IGNORE, check_mask, class_names_file, file_mask_digest

VOC_CLASSES: tuple[str, ...] = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
    "train", "tvmonitor",
)

_SPLIT_DIR = Path("ImageSets") / "Segmentation"
_MAX_LISTED = 5  # ids named in an error message before "... and N more"


def read_class_names(root: str | Path) -> tuple[str, ...]:
    """Foreground class names from ``<root>/class_names.txt`` if present, else VOC_CLASSES."""
    return class_names_file(Path(root)) or VOC_CLASSES


@dataclass(frozen=True)
class VOCConfig:
    """The ``dataset.voc`` subsection."""

    use_aug: bool = knob("also read masks from SegmentationClassAug/ (SBD) where SegmentationClass/ has none", default=False)


class VOCSource:
    """A VOC-layout folder; each split file under ImageSets/Segmentation/ is a split.

    Masks: ``SegmentationClass/`` (with VOC's 255 boundary band) wherever an image has one,
    ``SegmentationClassAug/`` (SBD) only where it does not and ``use_aug`` is set: the standard
    protocol scores train against the official masks and reads SBD's for the rest of train_aug.
    The per-image methods take any id under the root, whatever its split.
    """

    masks_are_files = True

    def __init__(self, root: str | Path, config: VOCConfig | None = None) -> None:
        self.root = Path(root)
        self.use_aug = config.use_aug if config is not None else False
        _check_root(self.root)
        self.class_names: tuple[str, ...] = read_class_names(self.root)
        self._class_index = {name: k for k, name in enumerate(self.class_names)}

    @property
    def num_classes(self) -> int:
        """K, the number of foreground classes (label vector length)."""
        return len(self.class_names)

    def split_ids(self, split: str) -> tuple[str, ...]:
        """The ids of ImageSets/Segmentation/<split>.txt; stops if any has no image."""
        ids = _read_split(self.root, split)
        missing = [i for i in ids if not (self.root / self.image_file(i)).is_file()]
        if missing:
            raise DatasetError(
                f"{len(missing)} of {len(ids)} ids in split {split!r} have no image "
                f"{self.root / 'JPEGImages'}/<id>.jpg: {_listing(missing)}; "
                "restore the images or remove those ids from the split file")
        return ids

    def image_file(self, image_id: str) -> str:
        return f"JPEGImages/{image_id}.jpg"

    def image(self, image_id: str) -> np.ndarray:
        """The image as uint8 HxWx3 RGB (:func:`pipeline.data.images.read_image`)."""
        return read_image(self.root / self.image_file(image_id))

    def size(self, image_id: str) -> tuple[int, int]:
        """(height, width) from the image header, without decoding the pixels."""
        return image_size(self.root / self.image_file(image_id))

    def mask(self, image_id: str) -> np.ndarray | None:
        """The uint8 HxW label mask, or None where the image has none (e.g. VOC test images)."""
        path = self._mask_path(image_id)
        if path is None:
            return None
        return check_mask(load_label_png(path), self.size(image_id), self.num_classes, str(path))

    def has_mask(self, image_id: str) -> bool:
        """Whether the image has a label mask, without reading it."""
        return self._mask_path(image_id) is not None

    def mask_digest(self, image_id: str) -> np.ndarray | None:
        return file_mask_digest(self._mask_path(image_id))

    def labels(self, image_id: str) -> np.ndarray:
        """Multi-hot uint8 vector of length K: XML objects, else mask classes, else all zero."""
        vector = np.zeros(self.num_classes, dtype=np.uint8)
        names = self._xml_names(image_id)
        if names:
            for name in names:
                if name not in self._class_index:
                    raise DatasetError(
                        f"{self._xml_path(image_id)} names object {name!r}, which is not a class "
                        f"({', '.join(self.class_names)}); add it to class_names.txt or fix the annotation")
                vector[self._class_index[name]] = 1
            return vector
        mask = self.mask(image_id)
        if mask is not None:
            present = np.unique(mask)
            present = present[(present > 0) & (present != IGNORE)]
            vector[present.astype(np.int64) - 1] = 1
        return vector

    def _xml_path(self, image_id: str) -> Path:
        return self.root / "Annotations" / f"{image_id}.xml"

    def _mask_path(self, image_id: str) -> Path | None:
        folders = ("SegmentationClass", "SegmentationClassAug") if self.use_aug else ("SegmentationClass",)
        for folder in folders:
            path = self.root / folder / f"{image_id}.png"
            if path.is_file():
                return path
        return None

    def _xml_names(self, image_id: str) -> list[str]:
        path = self._xml_path(image_id)
        if not path.is_file():
            return []
        try:
            tree = ET.parse(path)
        except ET.ParseError as error:
            raise DatasetError(f"cannot parse annotation {path}: {error}; fix or delete it "
                               "(labels then come from the mask)") from error
        return [(obj.findtext("name") or "").strip() for obj in tree.getroot().findall("object")]


class VOCDataset(VOCSource):
    """One split of a VOC-layout folder: :class:`VOCSource` plus that split's ``ids``.

    Construction validates the folder, the split file and that every image exists, so a
    broken dataset fails before any stage does work. Unreadable files are reported when read.
    """

    def __init__(self, root: str | Path, split: str, use_aug: bool = False) -> None:
        super().__init__(root, VOCConfig(use_aug=use_aug))
        self.split = split
        self.ids: tuple[str, ...] = self.split_ids(split)

    def __len__(self) -> int:
        return len(self.ids)

    def __repr__(self) -> str:
        return f"VOCDataset(root={str(self.root)!r}, split={self.split!r}, {len(self)} images, K={self.num_classes})"


def _check_root(root: Path) -> None:
    if not root.exists():
        raise DatasetError(f"dataset root {root} does not exist; point dataset.root at a VOC-layout folder "
                           "(JPEGImages/, ImageSets/Segmentation/, ...) or use the synthetic source")
    if not root.is_dir():
        raise DatasetError(f"dataset root {root} is not a folder; point it at the folder holding JPEGImages/")
    if not any(root.iterdir()):
        raise DatasetError(f"dataset root {root} is empty; download/extract VOC2012 there "
                           "(the folder holding JPEGImages/) or use the synthetic source")


def _read_split(root: Path, split: str) -> tuple[str, ...]:
    path = root / _SPLIT_DIR / f"{split}.txt"
    if not path.is_file():
        available = sorted(p.stem for p in (root / _SPLIT_DIR).glob("*.txt"))
        hint = f"available: {', '.join(available)}" if available else f"{root / _SPLIT_DIR} has no split files"
        raise DatasetError(f"split file {path} not found ({hint}); fix the split name or add the file")
    ids = []
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        token = line.split()[0]
        # DeepLab-style lists give "/JPEGImages/<id>.jpg /SegmentationClassAug/<id>.png"; keep the id.
        ids.append(Path(token).stem if "/" in token else token)
    if not ids:
        raise DatasetError(f"split file {path} lists no ids; put one image id per line")
    duplicates = sorted(i for i, n in Counter(ids).items() if n > 1)
    if duplicates:
        raise DatasetError(f"split file {path} lists ids more than once: {_listing(duplicates)}; list each once")
    return tuple(ids)


def _listing(items: Sequence[str]) -> str:
    shown = ", ".join(items[:_MAX_LISTED])
    return shown if len(items) <= _MAX_LISTED else f"{shown} ... and {len(items) - _MAX_LISTED} more"
