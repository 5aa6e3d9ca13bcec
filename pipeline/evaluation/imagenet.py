"""Readers for the explainability benchmarks: ImageNet validation and ImageNet-segmentation.

ImageNet validation (ILSVRC2012), two layouts:

- class folders, ``<root>/<wnid>/*.JPEG``: the class index of a folder is its position among
  the sorted folder names (the usual torchvision ``ImageFolder`` order, which matches the
  1000-class index of timm's ImageNet models);
- flat, ``<root>/*.JPEG`` plus a labels file with one ``<filename> <index>`` line per image
  (filename relative to the root).

ImageNet-segmentation (``gtsegs_ijcv.mat``, 4,276 images, a MATLAB v7.3 file, i.e. HDF5):
``/value/img`` and ``/value/gt`` are cell arrays, HDF5 datasets of object references, one per
image, each pointing at a uint8 array. Assumed layout, as MATLAB writes it: an H×W×3 image is
stored column-major, so HDF5 sees it as (3, W, H) and it is returned transposed to (H, W, 3);
an H×W mask is seen as (W, H) and returned as (H, W). A grayscale image stored as (W, H) is
returned with its channel repeated three times. The cell arrays may be stored as (N, 1) or
(1, N); both are read in order. Masks are returned as stored (the published file holds 0 for
background and 1 for foreground).

Evaluation resizes images and masks to 224×224 without cropping (:func:`resize_image`,
:func:`resize_mask`); :func:`batches` turns either dataset into the batch mappings that
:func:`pipeline.evaluation.explanations.evaluate_method` reads.
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import h5py
import numpy as np
import torch
from PIL import Image

from pipeline.data.images import IMAGE_SUFFIXES, read_image


def resize_image(image: np.ndarray, size: int = 224) -> np.ndarray:
    """(H, W, 3) uint8 to (size, size, 3), bilinear, no crop (the aspect ratio is not kept)."""
    return np.array(Image.fromarray(image).resize((size, size), Image.Resampling.BILINEAR))


def resize_mask(mask: np.ndarray, size: int = 224) -> np.ndarray:
    """(H, W) uint8 label mask to (size, size), nearest neighbour so that labels stay labels."""
    return np.array(Image.fromarray(mask).resize((size, size), Image.Resampling.NEAREST))


# --- ImageNet validation ----------------------------------------------------------------------


@dataclass(frozen=True)
class ImageNetVal:
    """ImageNet validation images and their class indices; items are {"image", "label"}."""

    root: Path
    paths: tuple[Path, ...]
    labels: tuple[int, ...]
    wnids: tuple[str, ...]  # class folder names in index order; empty for the flat layout

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return {"image": read_image(self.paths[index]), "label": self.labels[index]}


def _is_image(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES


def read_imagenet_val(root: str | Path, labels_file: str | Path | None = None) -> ImageNetVal:
    """Index an ImageNet validation folder: class folders, or flat files when `labels_file` is given."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: ImageNet validation folder not found")
    if labels_file is not None:
        return _read_flat(root, Path(labels_file))
    wnids = sorted(entry.name for entry in root.iterdir() if entry.is_dir())
    if not wnids:
        raise ValueError(
            f"{root}: no class folders found (expected {root}/<wnid>/*.JPEG); "
            "for a flat folder of images pass a labels file with '<filename> <index>' lines")
    paths, labels = [], []
    for index, wnid in enumerate(wnids):
        files = sorted(path for path in (root / wnid).iterdir() if _is_image(path))
        paths += files
        labels += [index] * len(files)
    if not paths:
        raise ValueError(f"{root}: class folders hold no images ({', '.join(IMAGE_SUFFIXES)})")
    return ImageNetVal(root, tuple(paths), tuple(labels), tuple(wnids))


def _read_flat(root: Path, labels_file: Path) -> ImageNetVal:
    if not labels_file.is_file():
        raise FileNotFoundError(f"{labels_file}: ImageNet labels file not found")
    paths, labels = [], []
    for number, line in enumerate(labels_file.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.split()
        if len(fields) != 2 or not fields[1].isdigit():
            raise ValueError(f"{labels_file}:{number}: expected '<filename> <index>', got {line!r}")
        path = root / fields[0]
        if not path.is_file():
            raise FileNotFoundError(f"{labels_file}:{number}: image {path} not found")
        paths.append(path)
        labels.append(int(fields[1]))
    if not paths:
        raise ValueError(f"{labels_file}: no '<filename> <index>' lines")
    return ImageNetVal(root, tuple(paths), tuple(labels), ())


# --- ImageNet-segmentation --------------------------------------------------------------------


class ImageNetSegmentation:
    """Images and fg/bg masks of ``gtsegs_ijcv.mat``; items are {"image" (H, W, 3), "mask" (H, W)}, uint8.

    Keeps the HDF5 file open; use as a context manager or call :meth:`close`. An h5py handle
    must not be shared across processes: open one reader per worker.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"{self.path}: ImageNet-segmentation file (gtsegs_ijcv.mat) not found")
        try:
            self._file = h5py.File(self.path, "r")
        except OSError as error:
            raise ValueError(f"{self.path}: not an HDF5 file; expected gtsegs_ijcv.mat saved as MATLAB v7.3 ({error})") from error
        try:
            self._images = self._references("value/img")
            self._masks = self._references("value/gt")
            if len(self._images) != len(self._masks):
                raise ValueError(f"{self.path}: /value/img has {len(self._images)} entries but /value/gt has {len(self._masks)}")
        except Exception:
            self._file.close()
            raise

    def _references(self, name: str) -> np.ndarray:
        if name not in self._file:
            raise ValueError(f"{self.path}: no dataset /{name}; expected the ImageNet-segmentation layout (/value/img, /value/gt)")
        dataset = self._file[name]
        if not isinstance(dataset, h5py.Dataset) or h5py.check_dtype(ref=dataset.dtype) is not h5py.Reference:
            raise ValueError(f"{self.path}: /{name} must be a dataset of object references (a MATLAB cell array)")
        return dataset[()].reshape(-1)  # (N, 1) or (1, N) cell array, in order

    def _array(self, reference: h5py.Reference, what: str, index: int) -> np.ndarray:
        array = np.asarray(self._file[reference][()])
        if array.dtype != np.uint8:
            if not np.issubdtype(array.dtype, np.number) or np.any(array != np.round(array)) or array.min() < 0 or array.max() > 255:
                raise ValueError(f"{self.path}: {what} {index} is {array.dtype}, not 8-bit integer values")
            array = array.astype(np.uint8)
        return array

    def __len__(self) -> int:
        return len(self._images)

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not 0 <= index < len(self):
            raise IndexError(f"{self.path}: index {index} out of range for {len(self)} images")
        image = self._array(self._images[index], "image", index)
        mask = self._array(self._masks[index], "mask", index)
        if image.ndim == 2:
            image = np.repeat(image.T[:, :, None], 3, axis=2)
        elif image.ndim == 3 and image.shape[0] == 3:
            image = image.transpose(2, 1, 0)
        else:
            raise ValueError(f"{self.path}: image {index} has shape {image.shape}; expected (3, W, H) as MATLAB stores H×W×3")
        if mask.ndim != 2:
            raise ValueError(f"{self.path}: mask {index} has shape {mask.shape}; expected (W, H)")
        mask = mask.T
        if mask.shape != image.shape[:2]:
            raise ValueError(f"{self.path}: image {index} is {image.shape[:2]} but its mask is {mask.shape}")
        return {"image": np.ascontiguousarray(image), "mask": np.ascontiguousarray(mask)}

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> ImageNetSegmentation:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


# --- batches ----------------------------------------------------------------------------------


class _Items(Protocol):
    def __len__(self) -> int: ...
    def __getitem__(self, index: int) -> dict[str, Any]: ...


def batches(dataset: _Items, batch_size: int, size: int = 224, indices: Sequence[int] | None = None) -> Iterator[dict[str, torch.Tensor]]:
    """Batches for :func:`pipeline.evaluation.explanations.evaluate_method`: "images" (B, 3, size, size) float
    in [0, 1], unnormalised, plus "labels" (B,) long and/or "masks" (B, size, size) uint8,
    whichever the dataset's items carry. `indices` picks a subset, in that order."""
    order = range(len(dataset)) if indices is None else indices
    for start in range(0, len(order), batch_size):
        items = [dataset[i] for i in order[start:start + batch_size]]
        images = np.stack([resize_image(item["image"], size) for item in items])
        batch = {"images": torch.from_numpy(images).permute(0, 3, 1, 2).float().div(255.0)}
        if "label" in items[0]:
            batch["labels"] = torch.tensor([item["label"] for item in items], dtype=torch.long)
        if "mask" in items[0]:
            batch["masks"] = torch.from_numpy(np.stack([resize_mask(item["mask"], size) for item in items]))
        yield batch
