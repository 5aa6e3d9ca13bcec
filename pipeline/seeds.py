"""Seed maps: relevance per (image, present class), averaged over scales and flips, max-normalised."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from pipeline.artifacts import Artifact
from pipeline.classifier import normalise
from pipeline.dataset_index import DatasetIndex
from pipeline.errors import InputError
from pipeline.explain import check_model, explain
from pipeline.maps import upsample


def scaled_size(image_size: int, scale: float, stride: int) -> int:
    """Input side for a scale, rounded to whole tokens."""
    return max(stride, int(round(image_size * scale / stride)) * stride)


def multiscale_relevance(
    model: torch.nn.Module,
    images: torch.Tensor,
    class_ids: torch.Tensor,
    method: str,
    grid: tuple[int, int],
    stride: int,
    scales: Sequence[float] = (1.0,),
    flip: bool = False,
    start_layer: int = 1,
) -> torch.Tensor:
    """Raw relevance (B, *grid) for uint8 images (B, 3, S, S), averaged over `scales` and, with `flip`, mirrors.

    Each scale's map is resized to `grid` (the token grid at scale 1) before averaging;
    a mirrored image's map is mirrored back.
    """
    total = torch.zeros(images.shape[0], *grid, device=images.device)
    count = 0
    for scale in scales:
        side = scaled_size(images.shape[-1], scale, stride)
        x = normalise(images)
        if side != images.shape[-1]:
            x = F.interpolate(x, size=(side, side), mode="bilinear", align_corners=False)
        for mirrored in (False, True) if flip else (False,):
            maps = explain(model, x.flip(-1) if mirrored else x, class_ids, method=method, start_layer=start_layer)
            if method == "lrp":  # pixel relevance: pool back to the token grid
                maps = F.avg_pool2d(maps[:, None], stride)[:, 0]
            maps = maps.flip(-1) if mirrored else maps
            total += maps if tuple(maps.shape[-2:]) == tuple(grid) else upsample(maps, grid)
            count += 1
    return total / count


def require_method(model: torch.nn.Module, method: str, param: str) -> None:
    """Stop before any work when `method` cannot explain `model` (e.g. `lrp` on a hybrid), naming the param."""
    try:
        check_model(model, method)
    except ValueError as error:
        raise InputError(f"{param}={method}: {error}") from None


def upsample_seeds(maps: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(C, h, w) token-grid seeds bilinearly resized to (C, *size), float32."""
    return upsample(torch.from_numpy(maps.astype(np.float32)), size).numpy()


def normalise_by_max(maps: np.ndarray) -> np.ndarray:
    """Each (h, w) map clipped at 0 and divided by its own max (REFERENCE.md §3); an all-zero map stays 0."""
    positive = np.maximum(maps, 0)
    peak = positive.reshape(positive.shape[0], -1).max(axis=1)
    return np.where(peak[:, None, None] > 0, positive / np.where(peak > 0, peak, 1)[:, None, None], 0.0)


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
