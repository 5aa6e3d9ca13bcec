"""Using stored seeds: reading them back per image, upsampling, and scoring the background."""
from __future__ import annotations

import numpy as np
import torch

from pipeline.core.artifacts import Artifact
from pipeline.core.errors import InputError
from pipeline.data.index import DatasetIndex
from pipeline.seeds.maps import upsample


def seed_scores(cams: np.ndarray, alpha: float) -> np.ndarray:
    """Stack a background score in front of the class seeds: (C, h, w) -> (C + 1, h, w) float32.

    `cams` are the present classes' seeds in [0, 1], each normalised by its own max.
    Background = (1 - max_c cams_c) ** alpha; with no class (C == 0) it is 1 everywhere.
    Shared by the CRF (alpha_low / alpha_high) and the random walk (its own alpha).
    """
    cams = np.asarray(cams, dtype=np.float32)
    if cams.ndim != 3:
        raise ValueError(f"cams must be (C, h, w), got shape {cams.shape}")
    top = cams.max(axis=0) if cams.shape[0] else np.zeros(cams.shape[1:], np.float32)
    # Clip so that a max slightly above 1 (float16 storage) cannot give NaN for a fractional alpha.
    background = np.clip(1.0 - top, 0.0, 1.0) ** alpha
    return np.concatenate([background[None], cams]).astype(np.float32)


def upsample_seeds(maps: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(C, h, w) token-grid seeds bilinearly resized to (C, *size), float32."""
    return upsample(torch.from_numpy(maps.astype(np.float32)), size).numpy()


def present_class_maps(cams: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """From a (K, h, w) seed store entry and its multi-hot labels: the present classes' maps and their label values (1..K)."""
    present = np.nonzero(labels)[0]
    return cams[present].astype(np.float32), (present + 1).astype(np.int64)


def cam_positions(index: DatasetIndex, cams: Artifact) -> list[int]:
    """Positions in the dataset of the CAM store's images; stops if ids or classes disagree."""
    if cams.attrs["class_names"] != index.class_names:
        raise InputError(f"{cams.path} has classes {cams.attrs['class_names']} but {index.store.path} has {index.class_names}; rerun cams")
    where = {image_id: i for i, image_id in enumerate(index.ids)}
    unknown = [i for i in cams.ids if i not in where]
    if unknown:
        raise InputError(f"{cams.path} has images not in {index.store.path} (e.g. {unknown[:3]}); rerun cams")
    positions = [where[i] for i in cams.ids]
    if not np.array_equal(cams.read_all("labels"), index.labels[positions]):
        raise InputError(f"{cams.path} was made with other image labels than {index.store.path}; rerun cams")
    return positions


def full_resolution_seeds(cams: Artifact, row: int, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Present classes' seeds bilinearly upsampled to the original image size, and their label values."""
    maps, labels = present_class_maps(cams.read("cams", row), cams.read("labels", row))
    if len(labels) == 0:
        return np.zeros((0, *size), np.float32), labels
    return upsample_seeds(maps, size).clip(0, 1), labels
