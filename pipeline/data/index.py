"""Read side of the indexed dataset (data/dataset.zarr): which images, in which splits, with
which labels, and their pixels, whatever format the dataset came in (see pipeline.sources.build_index)."""
from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from pipeline.core.artifacts import Artifact
from pipeline.core.errors import InputError
from pipeline.data.images import decode_image, file_digest, read_image_bytes

KIND = "dataset"


class DatasetIndex:
    """Read side of data/dataset.zarr: ids, split membership, labels, sizes, and images by position."""

    def __init__(self, path: str | os.PathLike, root: str | None = None):
        self.store = Artifact(path, KIND)
        attrs = self.store.attrs
        self.ids: list[str] = self.store.ids
        self.class_names: list[str] = list(attrs["class_names"])
        self.splits: list[str] = list(attrs["splits"])
        self.root = Path(root if root is not None else attrs["root"])
        self.files: list[str] = list(attrs["files"])
        self.labels: np.ndarray = self.store.read_all("labels")
        self.membership: np.ndarray = self.store.read_all("splits").astype(bool)
        self.sizes: np.ndarray = self.store.read_all("size")
        self.has_mask: np.ndarray = self.store.read_all("has_mask").astype(bool)
        self.digests: np.ndarray = self.store.read_all("md5")

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def in_split(self, split: str) -> np.ndarray:
        """(N,) bool: which images belong to `split`."""
        if split not in self.splits:
            raise InputError(f"split '{split}' is not indexed (dataset.splits has {', '.join(self.splits)}); add it to dataset.splits")
        return self.membership[:, self.splits.index(split)]

    def indices(self, splits: Sequence[str]) -> np.ndarray:
        """Positions (in store order) of the images in any of `splits`."""
        selected = np.zeros(len(self.ids), dtype=bool)
        for split in splits:
            selected |= self.in_split(split)
        return np.flatnonzero(selected)

    def image(self, index: int) -> np.ndarray:
        """The pixels of image ``index``, as indexed: only the dataset stage depends on the image
        folder in dvc.yaml, so a file edited since then is refused rather than read."""
        path = self.root / self.files[index]
        data = read_image_bytes(path)
        if not np.array_equal(file_digest(data), self.digests[index]):
            raise InputError(f"{path} changed since the dataset stage indexed it; run `dvc repro` (it re-indexes the dataset first)")
        return decode_image(data, path)
