"""Label maps on disk and in memory: VOC palette PNGs (the convention every source and stage
writes: uint8, 0 background, k class k, 255 ignore) and nearest-neighbour resizing."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from pipeline.core.errors import DatasetError


def resize_labels(labels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of a uint8 label map to (height, width); labels are never blended.

    This is how AffinityNet's labels reach feature resolution here (as IRN reduces its label
    maps); PSA instead averages the two CRF score maps over 8x8 cells before deciding.
    """
    if labels.shape == tuple(size):
        return labels
    return np.asarray(Image.fromarray(labels).resize((size[1], size[0]), Image.NEAREST))


def _voc_colour_map() -> np.ndarray:
    # Bits 0, 1, 2 of the index go to the top bit of R, G, B, bits 3, 4, 5 to the next bit, ...
    index = np.arange(256)
    colours = np.zeros((256, 3), dtype=np.int64)
    for shift in range(8):
        for channel in range(3):
            bit = (index >> (3 * shift + channel)) & 1
            colours[:, channel] |= bit << (7 - shift)
    return colours.astype(np.uint8)


_PALETTE = _voc_colour_map()
_PALETTE.flags.writeable = False  # shared by every save; palette() hands out copies


def palette() -> np.ndarray:
    """The standard VOC colour map, (256, 3) uint8, built by interleaving the index bits into R, G, B.

    0 is black, 1 (128, 0, 0), 2 (0, 128, 0), 15 (192, 128, 128), 255 (224, 224, 192).
    """
    return _PALETTE.copy()


def save_label_png(path: str | Path, mask: np.ndarray) -> None:
    """Write a uint8 HxW label mask as a VOC palette PNG (indices stored, colours for viewing)."""
    mask = np.asarray(mask)
    if mask.ndim != 2 or mask.dtype != np.uint8:
        raise ValueError(f"label mask must be a 2-D uint8 array, got {mask.dtype} of shape {mask.shape}")
    image = Image.frombytes("P", (mask.shape[1], mask.shape[0]), np.ascontiguousarray(mask).tobytes())
    image.putpalette(_PALETTE.tobytes())
    image.save(path, format="PNG")


def load_label_png(path: str | Path) -> np.ndarray:
    """Read a label PNG as its uint8 HxW index array.

    Palette and greyscale PNGs hold the indices directly (VOC and SBD respectively); an RGB
    PNG drawn in VOC colours is mapped back through :func:`palette`.
    """
    path = Path(path)
    try:
        with Image.open(path) as image:
            image.load()
    except (OSError, UnidentifiedImageError) as error:
        raise DatasetError(f"cannot read label PNG {path}: {error}; re-create or re-download it") from error
    if image.mode in ("P", "L"):
        return np.asarray(image, dtype=np.uint8).copy()
    if image.mode in ("RGB", "RGBA"):
        return _rgb_to_index(np.asarray(image.convert("RGB")), path)
    raise DatasetError(f"label PNG {path} has mode {image.mode!r}; expected a palette (P) or greyscale (L) PNG")


def _rgb_to_index(rgb: np.ndarray, path: Path) -> np.ndarray:
    """Invert the VOC colour map (it is one-to-one: each index has its own colour)."""
    pal = _PALETTE.astype(np.int64)
    keys = (pal[:, 0] << 16) | (pal[:, 1] << 8) | pal[:, 2]
    order = np.argsort(keys)
    codes = (rgb[..., 0].astype(np.int64) << 16) | (rgb[..., 1].astype(np.int64) << 8) | rgb[..., 2]
    pos = np.clip(np.searchsorted(keys[order], codes), 0, 255)
    found = keys[order][pos] == codes
    if not found.all():
        colour = tuple(int(c) for c in rgb[~found][0])
        raise DatasetError(f"label PNG {path} has colour {colour}, which is not in the VOC palette; "
                           "save labels as palette PNGs (pipeline.sources.voc.save_label_png)")
    return order[pos].astype(np.uint8)
