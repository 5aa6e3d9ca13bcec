"""The indexed dataset (data/dataset.zarr) and pixel access to the VOC-layout folder it indexes."""
from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from pipeline.errors import InputError
from pipeline.artifacts import Artifact, ArtifactWriter
from pipeline.voc import VOCDataset

KIND = "dataset"


def write_index(path: str | os.PathLike, root: str, splits: Sequence[str], use_aug: bool, progress=None) -> dict:
    """Index the given splits of a VOC-layout folder into a store; returns a summary.

    Every split is validated before anything is written (VOCDataset checks files exist).
    """
    datasets = [VOCDataset(root, split, use_aug=use_aug) for split in splits]
    names = datasets[0].class_names
    seen: dict[str, str] = {}
    entries: list[tuple[str, int, VOCDataset]] = []
    for split_index, dataset in enumerate(datasets):
        for image_id in dataset.ids:
            if image_id in seen:
                raise InputError(f"dataset.splits: image '{image_id}' is in both '{seen[image_id]}' and '{dataset.split}'; list disjoint splits (e.g. train and val, not trainval)")
            seen[image_id] = dataset.split
            entries.append((image_id, split_index, dataset))
    ids = [e[0] for e in entries]
    attrs = {"class_names": list(names), "splits": list(splits), "root": str(root), "use_aug": use_aug}
    with ArtifactWriter(path, KIND, ids, attrs) as out:
        out.create("labels", (len(names),), "uint8")
        out.create("split", (), "uint8")
        out.create("size", (2,), "int32")
        out.create("has_mask", (), "uint8")
        iterator = progress(entries) if progress else entries
        for index, (image_id, split_index, dataset) in enumerate(iterator):
            out.write("labels", index, dataset.labels(image_id))
            out.write("split", index, np.uint8(split_index))
            out.write("size", index, np.array(dataset.size(image_id), dtype=np.int32))
            out.write("has_mask", index, np.uint8(dataset.has_mask(image_id)))
    counts = {split: sum(1 for e in entries if e[1] == i) for i, split in enumerate(splits)}
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
