"""A plain folder of images with a CSV of image-level labels, as users keep their own photos.

Layout::

    <root>/images/<any/sub/folders/>name.jpg   the images (any format PIL reads)
    <root>/labels.csv                          header ``image,split,labels``
    <root>/masks/<same relative path>.png      (optional) ground truth, palette or greyscale PNG
    <root>/class_names.txt                     (optional) fixes the class order

A CSV row gives the image's path relative to images/, its split, and its class names separated
by ``;`` (an empty cell: a pure-background image). An image listed under several splits
belongs to each (its labels must agree). An image's id is its path without the extension
("cats/001"); files made from ids escape the "/" (:func:`pipeline.core.files.id_filename`).
Classes are the CSV's names, sorted, unless class_names.txt lists them in label order.
"""
from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np

from pipeline.core.config import knob
from pipeline.core.errors import DatasetError
from pipeline.data.images import image_size
from pipeline.data.label_maps import load_label_png
from pipeline.sources.base import check_mask, class_names_file, file_mask_digest

HEADER = ["image", "split", "labels"]


@dataclass(frozen=True)
class FolderConfig:
    """The ``dataset.folder`` subsection."""

    labels_file: str = knob("CSV under dataset.root with the header image,split,labels", default="labels.csv")


@dataclass(frozen=True)
class _Row:
    line: int
    file: str
    split: str
    names: tuple[str, ...]


def _read_rows(path: Path) -> list[_Row]:
    if not path.is_file():
        raise DatasetError(f"labels file {path} not found; write it with the header {','.join(HEADER)} (dataset.folder.labels_file)")
    with path.open(newline="", encoding="utf-8-sig") as handle:  # utf-8-sig: spreadsheets write a BOM
        reader = csv.reader(handle)
        header = next(reader, None)
        if header is None or [h.strip() for h in header] != HEADER:
            raise DatasetError(f"{path}: the first line must be the header {','.join(HEADER)}, got {header}")
        rows = []
        for line, cells in enumerate(reader, start=2):
            if not any(c.strip() for c in cells):
                continue
            if len(cells) != 3:
                raise DatasetError(f"{path}, row {line}: expected 3 cells (image, split, labels), got {len(cells)}: {cells}")
            file, split, labels = (c.strip() for c in cells)
            pure = PurePosixPath(file)
            if not file or pure.is_absolute() or ".." in pure.parts:
                raise DatasetError(f"{path}, row {line}: image '{file}' must be a path relative to images/, without '..'")
            if not split:
                raise DatasetError(f"{path}, row {line}: the split cell is empty; name the split (e.g. train)")
            names = tuple(sorted({n.strip() for n in labels.split(";") if n.strip()}))
            rows.append(_Row(line, file, split, names))
    if not rows:
        raise DatasetError(f"{path} lists no images; add one row per image under the header")
    return rows


class FolderSource:
    """Images under ``<root>/images`` described by ``<root>/<labels_file>``; pixels read on demand."""

    masks_are_files = True

    def __init__(self, root: str | Path, config: FolderConfig) -> None:
        self.root = Path(root)
        self.csv = self.root / config.labels_file
        rows = _read_rows(self.csv)
        fixed = class_names_file(self.root)
        self.class_names: tuple[str, ...] = fixed if fixed is not None else tuple(sorted({n for r in rows for n in r.names}))
        position = {name: k for k, name in enumerate(self.class_names)}
        self._files: dict[str, str] = {}
        self._labels: dict[str, np.ndarray] = {}
        self._line: dict[str, int] = {}
        self._splits: dict[str, dict[str, None]] = {}
        for row in rows:
            unknown = [n for n in row.names if n not in position]
            if unknown:
                raise DatasetError(f"{self.csv}, row {row.line}: class '{unknown[0]}' is not in {self.root / 'class_names.txt'} "
                                   f"({', '.join(self.class_names)}); add it there or fix the row")
            image_id = str(PurePosixPath(row.file).with_suffix(""))
            vector = np.zeros(len(self.class_names), dtype=np.uint8)
            vector[[position[n] for n in row.names]] = 1
            if image_id in self._files:
                if self._files[image_id] != row.file:
                    raise DatasetError(f"{self.csv}, row {row.line}: '{row.file}' and '{self._files[image_id]}' (row {self._line[image_id]}) "
                                       "have the same id (path without extension); rename one")
                if not np.array_equal(self._labels[image_id], vector):
                    raise DatasetError(f"{self.csv}, row {row.line}: '{row.file}' has other labels than in row {self._line[image_id]}; "
                                       "an image has one set of labels whatever its splits")
            else:
                if not (self.root / "images" / row.file).is_file():
                    raise DatasetError(f"{self.csv}, row {row.line}: image {self.root / 'images' / row.file} does not exist; "
                                       "add the file or remove the row")
                self._files[image_id], self._labels[image_id], self._line[image_id] = row.file, vector, row.line
            members = self._splits.setdefault(row.split, {})  # a dict: ordered, and O(1) to test (COCO-size CSVs)
            if image_id in members:
                raise DatasetError(f"{self.csv}, row {row.line}: '{row.file}' is listed twice in split '{row.split}'; list it once")
            members[image_id] = None

    def split_ids(self, split: str) -> tuple[str, ...]:
        if split not in self._splits:
            raise DatasetError(f"{self.csv} has no row of split '{split}' (splits: {', '.join(sorted(self._splits))}); "
                               "fix dataset.splits or the CSV")
        return tuple(self._splits[split])

    def image_file(self, image_id: str) -> str:
        return f"images/{self._files[image_id]}"

    def size(self, image_id: str) -> tuple[int, int]:
        return image_size(self.root / self.image_file(image_id))

    def labels(self, image_id: str) -> np.ndarray:
        return self._labels[image_id].copy()

    def _mask_path(self, image_id: str) -> Path:
        return self.root / "masks" / f"{image_id}.png"

    def has_mask(self, image_id: str) -> bool:
        return self._mask_path(image_id).is_file()

    def mask_digest(self, image_id: str) -> np.ndarray | None:
        path = self._mask_path(image_id)
        return file_mask_digest(path if path.is_file() else None)

    def mask(self, image_id: str) -> np.ndarray | None:
        path = self._mask_path(image_id)
        if not path.is_file():
            return None
        return check_mask(load_label_png(path), self.size(image_id), len(self.class_names), str(path))
