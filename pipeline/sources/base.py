"""What every dataset source provides, and reading image files whatever the source."""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import numpy as np

from pipeline.core.errors import DatasetError
from pipeline.data.images import file_digest

IGNORE = 255  # mask value of pixels that are not scored (VOC's boundary band, COCO's crowd regions)
MAX_REPORTED = 20  # bad files listed in one error before "... and N more"


class Source(Protocol):
    """A dataset as the dataset and masks stages see it: ids per split, files, labels, masks.

    Ids are unique across splits (an image listed in two splits is one image); every method
    takes any id of any split. Image-level labels are multi-hot uint8 vectors of length K;
    masks are uint8 HxW with 0 background, k class k, 255 ignored.
    """

    root: Path
    class_names: tuple[str, ...]
    #: True where masks are files to check when indexing (VOC, folder); False where the masks
    #: stage draws them from annotations already checked when loaded (COCO).
    masks_are_files: bool

    def split_ids(self, split: str) -> tuple[str, ...]:
        """The ids of `split`, in the source's order; a DatasetError names a split that does not exist."""

    def image_file(self, image_id: str) -> str:
        """The image's path relative to ``root`` (the index stores it; stages decode it from there)."""

    def size(self, image_id: str) -> tuple[int, int]:
        """(height, width) the image must have: its file header, or its annotation's record."""

    def labels(self, image_id: str) -> np.ndarray:
        """Multi-hot image-level labels."""

    def has_mask(self, image_id: str) -> bool:
        """Whether the image has a ground-truth mask, without reading it."""

    def mask(self, image_id: str) -> np.ndarray | None:
        """The ground-truth mask, checked against the image size and the classes; None without one."""

    def mask_digest(self, image_id: str) -> np.ndarray | None:
        """MD5 (16 uint8) of what the mask is made from (its file, or its annotation records),
        without decoding it; None without a mask."""


def report_problems(problems: Sequence[str], total: int, what: str, max_reported: int = MAX_REPORTED) -> None:
    """One :class:`DatasetError` listing up to ``max_reported`` problems, if there are any."""
    if problems:
        shown = "\n  ".join(problems[:max_reported])
        more = f"\n  ... and {len(problems) - max_reported} more" if len(problems) > max_reported else ""
        raise DatasetError(f"{len(problems)} of {total} {what}:\n  {shown}{more}\n"
                           "fix or remove these files (or their entries in the dataset's lists), then rerun")


def file_mask_digest(path: Path | None) -> np.ndarray | None:
    """`Source.mask_digest` of a source whose masks are files: the file's MD5, None without a file."""
    return None if path is None else file_digest(path.read_bytes())


def check_mask(mask: np.ndarray, size: tuple[int, int], num_classes: int, where: str) -> np.ndarray:
    """`mask` if it matches the image size and holds only 0..K and 255; else one DatasetError naming `where`."""
    if mask.shape != tuple(size):
        raise DatasetError(f"mask {where} is {mask.shape[1]}x{mask.shape[0]} but its image is {size[1]}x{size[0]}; they must match")
    bad = np.unique(mask[(mask > num_classes) & (mask != IGNORE)])
    if bad.size:
        raise DatasetError(f"mask {where} has values {bad.tolist()} beyond the {num_classes} classes; check the class list matches the masks")
    return mask


def class_names_file(root: Path) -> tuple[str, ...] | None:
    """``<root>/class_names.txt`` (foreground classes in label order, one a line) if present, checked."""
    path = root / "class_names.txt"
    if not path.is_file():
        return None
    names = tuple(line.strip() for line in path.read_text().splitlines() if line.strip())
    if not names:
        raise DatasetError(f"{path} is empty; list the foreground class names, one a line, or delete it")
    if len(set(names)) != len(names):
        raise DatasetError(f"{path} names a class twice; each class once, in label order")
    if "background" in names:
        raise DatasetError(f"{path} lists 'background'; list foreground classes only (index 0 is background)")
    if len(names) > 254:
        raise DatasetError(f"{path} lists {len(names)} classes; uint8 masks hold at most 254 (255 is ignore)")
    return names
