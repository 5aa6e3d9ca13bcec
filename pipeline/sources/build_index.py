"""Building the dataset index (data/dataset.zarr) from a source, for the dataset and masks stages.

The dataset stage reads a source (``dataset.format``: a VOC-layout folder, COCO instances
files, or a folder with a labels CSV), decodes and checks every file, and writes ids, split
membership, image-level labels, sizes, whether each image has a mask, and each image's file.
Later stages read it with :class:`pipeline.data.index.DatasetIndex`, which needs none of
the format readers here; ground-truth masks live in a store of their own
(:mod:`pipeline.data.ground_truth`), read by evaluation only. The index records each image
file's MD5 and a second store each mask's (:func:`write_mask_digests`), so that they, and
not the folder, are what the stages after the dataset stage depend on.
"""
from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from pipeline.core.artifacts import Artifact, ArtifactWriter
from pipeline.core.config import knob
from pipeline.core.errors import DatasetError
from pipeline.data import ground_truth
from pipeline.data.images import decode_image, file_digest, read_image_bytes
from pipeline.data.index import KIND, DatasetIndex
from pipeline.sources.base import MAX_REPORTED, Source, report_problems
from pipeline.sources.coco import COCOConfig, COCOSource
from pipeline.sources.folder import FolderConfig, FolderSource
from pipeline.sources.voc import VOCConfig, VOCSource

MASK_DIGESTS_KIND = "mask_digests"


@dataclass(frozen=True)
class DatasetConfig:
    """The ``dataset`` section: where the images are, in which format, and which splits to index."""

    format: Literal["voc", "coco", "folder"] = knob("voc: a VOC-layout folder; coco: COCO instances files; folder: images/ plus a labels CSV")
    root: str = knob("the dataset's folder: data/synthetic (built-in, VOC layout), /data/VOCdevkit/VOC2012, /data/coco ...")
    splits: list[str] = knob("splits to index; an image may belong to several (VOC's train is inside train_aug)")
    held_out: list[str] = knob("indexed splits that must share no image with any other indexed split (evaluation splits)")
    allow_held_out_overlap: bool = knob("true indexes even when a held-out split shares images with another split (leakage accepted knowingly)")
    voc: VOCConfig | None = knob("format voc: SBD masks (absent: VOC masks only)", optional=True)
    coco: COCOConfig | None = knob("format coco: each split's image folder and instances file", optional=True)
    folder: FolderConfig | None = knob("format folder: the labels CSV (absent: <root>/labels.csv)", optional=True)

    def check(self) -> None:
        if self.format == "coco" and self.coco is None:  # voc and folder have defaults; coco's files do not
            raise ValueError("format is 'coco' but the subsection 'dataset.coco' is missing; add it (see configs/coco2014.yaml)")
        if not self.splits:
            raise ValueError("splits is empty; name at least one split")
        if len(set(self.splits)) != len(self.splits):
            raise ValueError(f"splits {self.splits} names a split twice; name each once")
        outside = [s for s in self.held_out if s not in self.splits]
        if outside:
            raise ValueError(f"held_out names '{outside[0]}', which is not in splits {self.splits}")


def open_source(config: DatasetConfig) -> Source:
    """The configured format's reader (constructing it validates the folder and list files)."""
    if config.format == "coco":
        return COCOSource(config.root, config.coco, config.splits)
    if config.format == "folder":
        return FolderSource(config.root, config.folder or FolderConfig())
    return VOCSource(config.root, config.voc or VOCConfig())


@dataclass(frozen=True)
class ImageRecord:
    """What the index stores per image, read while every file was decoded and checked."""

    labels: np.ndarray
    size: tuple[int, int]
    has_mask: bool
    digest: np.ndarray  # the image file's MD5 (16 uint8)


def split_membership(source: Source, config: DatasetConfig) -> tuple[list[str], np.ndarray]:
    """Ids of the configured splits in order of first appearance, and (N, S) bool membership.

    Stops when a held-out split shares images with another split, unless allowed.
    """
    members = {split: source.split_ids(split) for split in config.splits}
    ids = list(dict.fromkeys(i for split in config.splits for i in members[split]))
    row = {image_id: k for k, image_id in enumerate(ids)}
    membership = np.zeros((len(ids), len(config.splits)), dtype=bool)
    for column, split in enumerate(config.splits):
        membership[[row[i] for i in members[split]], column] = True
    if not config.allow_held_out_overlap:
        for held in config.held_out:
            column = config.splits.index(held)
            for other, split in enumerate(config.splits):
                shared = np.flatnonzero(membership[:, column] & membership[:, other]) if other != column else []
                if len(shared):
                    examples = ", ".join(ids[k] for k in shared[:5])
                    raise DatasetError(f"dataset.held_out: {len(shared)} images of split '{held}' are also in split '{split}' (e.g. {examples}); "
                                       f"a model trained on '{split}' would be scored on images it saw. Remove them from '{split}' "
                                       "(the standard VOC train_aug list excludes every val image) or set dataset.allow_held_out_overlap: true")
    return ids, membership


def check_files(source: Source, ids: Sequence[str], progress: Callable[[Sequence[str]], Iterable[str]] | None = None,
                max_reported: int = MAX_REPORTED, check_masks: bool = True) -> list[ImageRecord]:
    """Decode every image (its size must be the source's), read its labels and, with
    ``check_masks``, decode its mask file (``wsss check`` does; the dataset stage leaves mask
    pixels to the masks stage, reading a VOC mask only for the labels of an image without XML).

    Unreadable images, size mismatches, masks that do not fit their image or the classes, and
    annotations naming unknown classes are collected and reported together (up to
    ``max_reported``) in one :class:`DatasetError`. Masks drawn from annotations (COCO) are
    checked when their file is loaded, and drawn by the masks stage.
    """
    records: list[ImageRecord] = []
    problems: list[str] = []
    for image_id in progress(ids) if progress else ids:
        try:
            path = source.root / source.image_file(image_id)
            data = read_image_bytes(path)
            shape = decode_image(data, path).shape[:2]
            if shape != tuple(source.size(image_id)):
                height, width = source.size(image_id)
                raise DatasetError(f"image {path} is {shape[1]}x{shape[0]} but the dataset says {width}x{height}; fix its annotation or the file")
            if check_masks and source.masks_are_files:
                source.mask(image_id)  # checks size and values against the image and the classes
            records.append(ImageRecord(source.labels(image_id), shape, source.has_mask(image_id), file_digest(data)))
        except DatasetError as error:
            problems.append(str(error))
    report_problems(problems, len(ids), "images have bad files", max_reported)
    return records


def write_index(path: str | os.PathLike, config: DatasetConfig, progress=None, source: Source | None = None) -> dict:
    """Index the configured splits into a store; returns a summary.

    Every file is decoded and checked (:func:`check_files`) before the store is committed.
    ``source``: the opened ``config`` source, when the caller has it already.
    """
    source = source or open_source(config)
    ids, membership = split_membership(source, config)
    records = check_files(source, ids, progress, check_masks=False)
    attrs = {"class_names": list(source.class_names), "splits": list(config.splits), "root": str(config.root),
             "format": config.format, "files": [source.image_file(i) for i in ids]}
    with ArtifactWriter(path, KIND, ids, attrs) as out:
        out.create("labels", (len(source.class_names),), "uint8")
        out.create("splits", (len(config.splits),), "uint8")
        out.create("size", (2,), "int32")
        out.create("has_mask", (), "uint8")
        out.create("md5", (16,), "uint8")
        for index, record in enumerate(records):
            out.write("labels", index, record.labels)
            out.write("splits", index, membership[index].astype(np.uint8))
            out.write("size", index, np.array(record.size, dtype=np.int32))
            out.write("has_mask", index, np.uint8(record.has_mask))
            out.write("md5", index, record.digest)
    counts = {split: int(membership[:, k].sum()) for k, split in enumerate(config.splits)}
    return {"images": len(ids), "per_split": counts, "classes": len(source.class_names),
            "masks": int(sum(r.has_mask for r in records))}


def _mask_ids(index: DatasetIndex) -> list[str]:
    return [index.ids[p] for p in np.flatnonzero(index.has_mask)]


def write_mask_digests(path: str | os.PathLike, source: Source, index: DatasetIndex,
                       progress: Callable[[Sequence[str]], Iterable[str]] | None = None) -> int:
    """Record the MD5 of every indexed mask's source (:meth:`Source.mask_digest`) in a store of
    its own; returns how many. The dataset stage writes it beside the index, so that only that
    stage lists the dataset folder in dvc.yaml: the masks stage depends on these digests, and a
    mask edit reruns what reads masks, never the stages that depend on the index alone."""
    ids = _mask_ids(index)
    with ArtifactWriter(path, MASK_DIGESTS_KIND, ids) as out:
        out.create("md5", (16,), "uint8")
        for row, image_id in enumerate(progress(ids) if progress else ids):
            out.write("md5", row, source.mask_digest(image_id))
    return len(ids)


def write_masks(path: str | os.PathLike, source: Source, index: DatasetIndex, digests: str | os.PathLike,
                progress: Callable[[Sequence[str]], Iterable[str]] | None = None) -> int:
    """Store the mask of every indexed image that has one, as uint8 padded to the largest.
    Returns how many were stored (zero is a valid, empty store).

    Every mask is checked against its image and the classes, and against the digest the
    dataset stage recorded (``digests``, :func:`write_mask_digests`): a mask edited since then
    is refused, since DVC reruns the dataset stage, not this one, when the folder changes. All
    bad ones are reported together and nothing is written.
    """
    ids = _mask_ids(index)
    recorded = Artifact(digests, MASK_DIGESTS_KIND)
    if recorded.ids != ids:
        raise DatasetError(f"{digests} lists other masks than {index.store.path} has; rerun the dataset stage (`dvc repro dataset`)")
    expected = recorded.read_all("md5")
    positions = np.flatnonzero(index.has_mask)
    max_shape = tuple(int(v) for v in index.sizes[positions].max(axis=0)) if len(ids) else (1, 1)
    problems: list[str] = []
    with ArtifactWriter(path, ground_truth.KIND, list(ids)) as out:
        out.create("masks", max_shape, "uint8", max_shape=True)
        for row, image_id in enumerate(progress(ids) if progress else ids):
            try:
                if not np.array_equal(source.mask_digest(image_id), expected[row]):
                    raise DatasetError(f"the mask of {image_id} changed since the dataset stage recorded it; "
                                       "run `dvc repro` (it reruns the dataset stage first)")
                out.write("masks", row, source.mask(image_id))
            except DatasetError as error:
                problems.append(str(error))
        report_problems(problems, len(ids), "masks are bad")
    return len(ids)
