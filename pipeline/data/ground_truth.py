"""Ground-truth masks in a store of their own (data/masks.zarr), read by evaluation only.

Keeping them out of data/dataset.zarr makes the leakage rule structural: the stages that make
seeds and pseudo-labels do not depend on this store, and no code of theirs reads masks. Only
the evaluation stages, the report and ``train_seg.supervision: ground_truth`` read it.
"""
from __future__ import annotations

import os
from collections.abc import Iterable, Sequence

import numpy as np

from pipeline.core.artifacts import Artifact, ArtifactError

KIND = "masks"


def no_ground_truth(split: str) -> str:
    """What the evaluation stages write instead of scores when no image of `split` has a mask."""
    return f"no ground truth for split {split}"


class GroundTruth:
    """Read side of the masks store: masks by image id."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.store = Artifact(path, KIND)
        self._row = {image_id: row for row, image_id in enumerate(self.store.ids)}

    def __contains__(self, image_id: str) -> bool:
        return image_id in self._row

    def __len__(self) -> int:
        return len(self._row)

    def _rows(self, image_ids: Sequence[str]) -> list[int]:
        missing = [i for i in image_ids if i not in self._row]
        if missing:
            raise ArtifactError(f"{self.store.path} has no mask for image '{missing[0]}'; rerun the masks stage (`dvc repro masks`)")
        return [self._row[i] for i in image_ids]

    def mask(self, image_id: str) -> np.ndarray:
        return self.store.read("masks", self._rows([image_id])[0])

    def masks(self, image_ids: Sequence[str]) -> Iterable[np.ndarray]:
        """The masks of `image_ids` in that order, read a shard at a time."""
        return self.store.iter_rows("masks", self._rows(image_ids))
