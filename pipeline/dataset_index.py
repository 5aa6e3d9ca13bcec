"""The indexed dataset (data/dataset.zarr) and pixel access to the VOC-layout folder it indexes."""
from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.config import knob
from pipeline.errors import InputError
from pipeline.artifacts import Artifact, ArtifactWriter
from pipeline.voc import DatasetError, VOCDataset

KIND = "dataset"


@dataclass(frozen=True)
class DatasetConfig:
    """The ``dataset`` section: which VOC-layout folder and splits to index."""

    root: str = knob("a VOC-layout folder: data/synthetic (built-in) or e.g. /data/VOCdevkit/VOC2012")
    splits: list[str] = knob("split files (ImageSets/Segmentation/<split>.txt) to index, disjoint")
    use_aug: bool = knob("read masks from SegmentationClassAug/ (SBD) where present")


MAX_REPORTED = 20  # bad files listed in one error before "... and N more"


@dataclass(frozen=True)
class IndexEntry:
    """One image of the index: its id, the position of its split in ``splits``, and the split's dataset."""

    image_id: str
    split_index: int
    dataset: VOCDataset


@dataclass(frozen=True)
class ImageRecord:
    """What the index stores per image, read while every file was decoded and checked."""

    labels: np.ndarray
    size: tuple[int, int]
    has_mask: bool


def index_entries(config: DatasetConfig) -> list[IndexEntry]:
    """The images of the configured splits in order; stops if a split file is broken or an id is in two splits."""
    datasets = [VOCDataset(config.root, split, use_aug=config.use_aug) for split in config.splits]
    seen: dict[str, str] = {}
    entries: list[IndexEntry] = []
    for split_index, dataset in enumerate(datasets):
        for image_id in dataset.ids:
            if image_id in seen:
                raise InputError(f"dataset.splits: image '{image_id}' is in both '{seen[image_id]}' and '{dataset.split}'; list disjoint splits (e.g. train and val, not trainval)")
            seen[image_id] = dataset.split
            entries.append(IndexEntry(image_id, split_index, dataset))
    return entries


def check_files(entries: Sequence[IndexEntry], progress: Callable[[Sequence[IndexEntry]], Iterable[IndexEntry]] | None = None,
                max_reported: int = MAX_REPORTED) -> list[ImageRecord]:
    """Decode every image and mask and read every annotation; one record per entry.

    A truncated or unreadable image, a mask whose size differs from its image or holds values
    beyond the classes, and an annotation naming an unknown class are all collected, and
    reported together (up to ``max_reported``) in one :class:`DatasetError`.
    """
    records: list[ImageRecord] = []
    problems: list[str] = []
    for entry in progress(entries) if progress else entries:
        dataset, image_id = entry.dataset, entry.image_id
        try:
            image = dataset.image(image_id)
            dataset.mask(image_id)  # checks size and values against the image and the classes
            records.append(ImageRecord(dataset.labels(image_id), image.shape[:2], dataset.has_mask(image_id)))
        except DatasetError as error:
            problems.append(str(error))
    if problems:
        shown = "\n  ".join(problems[:max_reported])
        more = f"\n  ... and {len(problems) - max_reported} more" if len(problems) > max_reported else ""
        raise DatasetError(f"{len(problems)} of {len(entries)} images have bad files:\n  {shown}{more}\n"
                           "fix or remove these files (or their ids from the split files), then rerun")
    return records


def write_index(path: str | os.PathLike, config: DatasetConfig, progress=None) -> dict:
    """Index the configured splits of a VOC-layout folder into a store; returns a summary.

    Every file is decoded and checked (:func:`check_files`) before the store is committed.
    """
    root, splits, use_aug = config.root, config.splits, config.use_aug
    entries = index_entries(config)
    records = check_files(entries, progress)
    names = entries[0].dataset.class_names
    ids = [e.image_id for e in entries]
    attrs = {"class_names": list(names), "splits": list(splits), "root": str(root), "use_aug": use_aug}
    with ArtifactWriter(path, KIND, ids, attrs) as out:
        out.create("labels", (len(names),), "uint8")
        out.create("split", (), "uint8")
        out.create("size", (2,), "int32")
        out.create("has_mask", (), "uint8")
        for index, (entry, record) in enumerate(zip(entries, records)):
            out.write("labels", index, record.labels)
            out.write("split", index, np.uint8(entry.split_index))
            out.write("size", index, np.array(record.size, dtype=np.int32))
            out.write("has_mask", index, np.uint8(record.has_mask))
    counts = {split: sum(1 for e in entries if e.split_index == i) for i, split in enumerate(splits)}
    return {"images": len(ids), "per_split": counts, "classes": len(names)}


class DatasetIndex:
    """Read side of data/dataset.zarr: ids, splits, labels, sizes, and images/masks by id."""

    def __init__(self, path: str | os.PathLike, root: str | None = None):
        self.store = Artifact(path, KIND)
        attrs = self.store.attrs
        self.ids: list[str] = self.store.ids
        self.class_names: list[str] = list(attrs["class_names"])
        self.splits: list[str] = list(attrs["splits"])
        self.root = Path(root if root is not None else attrs["root"])
        self.labels: np.ndarray = self.store.read_all("labels")
        self.split_of: np.ndarray = self.store.read_all("split")
        self.sizes: np.ndarray = self.store.read_all("size")
        self.has_mask: np.ndarray = self.store.read_all("has_mask").astype(bool)
        self._voc = VOCDataset(self.root, self.splits[0], use_aug=bool(attrs["use_aug"]))

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def indices(self, splits: Sequence[str]) -> np.ndarray:
        """Positions (in store order) of the images in any of `splits`."""
        unknown = [s for s in splits if s not in self.splits]
        if unknown:
            raise InputError(f"split '{unknown[0]}' is not indexed (dataset.splits has {', '.join(self.splits)}); add it to dataset.splits")
        wanted = [self.splits.index(s) for s in splits]
        return np.nonzero(np.isin(self.split_of, wanted))[0]

    def image(self, index: int) -> np.ndarray:
        return self._voc.image(self.ids[index])

    def mask(self, index: int) -> np.ndarray | None:
        return self._voc.mask(self.ids[index])
