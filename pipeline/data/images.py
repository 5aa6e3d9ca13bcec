"""Image files as every stage reads them: uint8 RGB arrays, and sizes from headers.

Errors name the file and what to do; a stage reading an indexed image reports it the same way.
"""
from __future__ import annotations

import hashlib
import io
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from pipeline.core.errors import DatasetError

IMAGE_SUFFIXES = (".jpeg", ".jpg", ".png")  # what `wsss predict` picks up from a folder


def file_digest(data: bytes) -> np.ndarray:
    """MD5 of a file's bytes as 16 uint8: what the index records of each image, so that the
    index, and every stage reading it, changes exactly when an image's content does."""
    return np.frombuffer(hashlib.md5(data).digest(), dtype=np.uint8)


def read_image_bytes(path: str | Path) -> bytes:
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        raise DatasetError(f"image {path} does not exist; restore it or remove it from the dataset's list") from None
    except OSError as error:
        raise DatasetError(f"cannot read image {path}: {error}; check the file's permissions") from error


def decode_image(data: bytes, path: str | Path) -> np.ndarray:
    """The image in ``data`` (read from ``path``, named in errors) as uint8 HxWx3 RGB; greyscale,
    CMYK, palette and alpha images are converted (alpha dropped, not composited)."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            rgb = image.convert("RGB") if image.mode != "RGB" else image.copy()
    except (OSError, UnidentifiedImageError) as error:
        raise DatasetError(f"cannot read image {path}: {error}; re-download it or remove it from the dataset's list") from error
    return np.asarray(rgb, dtype=np.uint8)


def read_image(path: str | Path) -> np.ndarray:
    """The image file as uint8 HxWx3 RGB (:func:`decode_image`)."""
    return decode_image(read_image_bytes(path), path)


def image_size(path: str | Path) -> tuple[int, int]:
    """(height, width) from the file's header, without decoding the pixels."""
    try:
        with Image.open(path) as image:
            width, height = image.size
    except FileNotFoundError:
        raise DatasetError(f"image {path} does not exist; restore it or remove it from the dataset's list") from None
    except (OSError, UnidentifiedImageError) as error:
        raise DatasetError(f"cannot read image {path}: {error}; re-download it or remove it from the dataset's list") from error
    return height, width
