"""PASCAL VOC 2012 layout: reading images, label masks and image-level labels.

Layout, relative to a root folder::

    JPEGImages/<id>.jpg                 the image
    SegmentationClass/<id>.png          palette PNG: 0 background, k class k, 255 ignore
    SegmentationClassAug/<id>.png       (optional, SBD) same convention, often greyscale
    Annotations/<id>.xml                <object><name> elements -> image-level labels
    ImageSets/Segmentation/<split>.txt  one id per line
    class_names.txt                     (optional) foreground class names, one a line

Label convention: masks are uint8 HxW with 0 = background, k = ``class_names[k - 1]``,
255 = ignore. Image-level labels are a uint8 multi-hot vector of length K (no background).

Where an image's labels come from, first that applies:

1. ``Annotations/<id>.xml`` with at least one ``<object>``: the object names (every object,
   ``difficult`` ones included: they are in the image). Only direct ``object/name`` is read,
   so VOC's person-layout ``<part><name>head</name>`` entries are not mistaken for classes.
   A name outside the class list is an error naming the file.
2. the mask: every class index present in it.
3. neither: the image is kept with an all-zero label vector (a pure-background image). It is
   a legitimate negative for the classifier; :meth:`VOCDataset.labels` never fails for it.
"""
from __future__ import annotations

import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from pipeline.errors import InputError

VOC_CLASSES: tuple[str, ...] = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
    "train", "tvmonitor",
)
IGNORE = 255

_SPLIT_DIR = Path("ImageSets") / "Segmentation"
_MAX_LISTED = 5  # ids named in an error message before "... and N more"


class DatasetError(InputError):
    """A dataset folder or file is missing, empty or malformed; the message names the fix."""


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
                           "save labels as palette PNGs (pipeline.voc.save_label_png)")
    return order[pos].astype(np.uint8)


def read_class_names(root: str | Path) -> tuple[str, ...]:
    """Foreground class names from ``<root>/class_names.txt`` if present, else VOC_CLASSES."""
    path = Path(root) / "class_names.txt"
    if not path.is_file():
        return VOC_CLASSES
    names = tuple(line.strip() for line in path.read_text().splitlines() if line.strip())
    if not names:
        raise DatasetError(f"{path} is empty; list the foreground class names, one a line, or delete it to use VOC's")
    if len(set(names)) != len(names):
        raise DatasetError(f"{path} names a class twice; each class once, in label order")
    if "background" in names:
        raise DatasetError(f"{path} lists 'background'; list foreground classes only (index 0 is background)")
    if len(names) > 254:
        raise DatasetError(f"{path} lists {len(names)} classes; uint8 masks hold at most 254 (255 is ignore)")
    return names


class VOCDataset:
    """An index over one split of a VOC-layout folder; pixels are read on demand.

    Construction validates the folder, the split file and that every image exists, so a
    broken dataset fails before any stage does work. Unreadable files are reported when read.
    The per-image methods take any id under the root, not only this split's.
    """

    def __init__(self, root: str | Path, split: str, use_aug: bool = False) -> None:
        self.root = Path(root)
        self.split = split
        self.use_aug = use_aug
        _check_root(self.root)
        self.class_names: tuple[str, ...] = read_class_names(self.root)
        self.ids: tuple[str, ...] = _read_split(self.root, split)
        missing = [i for i in self.ids if not self._image_path(i).is_file()]
        if missing:
            raise DatasetError(
                f"{len(missing)} of {len(self.ids)} ids in split {split!r} have no image "
                f"{self.root / 'JPEGImages'}/<id>.jpg: {_listing(missing)}; "
                "restore the images or remove those ids from the split file")
        self._class_index = {name: k for k, name in enumerate(self.class_names)}

    @property
    def num_classes(self) -> int:
        """K, the number of foreground classes (label vector length)."""
        return len(self.class_names)

    def __len__(self) -> int:
        return len(self.ids)

    def __repr__(self) -> str:
        return f"VOCDataset(root={str(self.root)!r}, split={self.split!r}, {len(self)} images, K={self.num_classes})"

    def image(self, image_id: str) -> np.ndarray:
        """The image as uint8 HxWx3 RGB; greyscale, CMYK, palette and alpha images are converted."""
        path = self._image_path(image_id)
        try:
            with Image.open(path) as image:
                # convert() decodes; alpha is dropped, not composited, as VOC has none to honour.
                rgb = image.convert("RGB") if image.mode != "RGB" else image.copy()
        except (OSError, UnidentifiedImageError) as error:
            raise DatasetError(f"cannot read image {path}: {error}; "
                               f"re-download it or remove {image_id!r} from the split file") from error
        return np.asarray(rgb, dtype=np.uint8)

    def size(self, image_id: str) -> tuple[int, int]:
        """(height, width) from the image header, without decoding the pixels."""
        path = self._image_path(image_id)
        try:
            with Image.open(path) as image:
                width, height = image.size
        except (OSError, UnidentifiedImageError) as error:
            raise DatasetError(f"cannot read image {path}: {error}; "
                               f"re-download it or remove {image_id!r} from the split file") from error
        return height, width

    def mask(self, image_id: str) -> np.ndarray | None:
        """The uint8 HxW label mask, or None where the image has none (e.g. VOC test images)."""
        path = self._mask_path(image_id)
        if path is None:
            return None
        mask = load_label_png(path)
        height, width = self.size(image_id)
        if mask.shape != (height, width):
            raise DatasetError(f"mask {path} is {mask.shape[1]}x{mask.shape[0]} but its image is "
                               f"{width}x{height}; they must match")
        bad = np.unique(mask[(mask > self.num_classes) & (mask != IGNORE)])
        if bad.size:
            raise DatasetError(f"mask {path} has values {bad.tolist()} beyond the {self.num_classes} classes; "
                               "check class_names.txt matches the masks")
        return mask

    def has_mask(self, image_id: str) -> bool:
        """Whether the image has a label mask, without reading it."""
        return self._mask_path(image_id) is not None

    def labels(self, image_id: str) -> np.ndarray:
        """Multi-hot uint8 vector of length K: XML objects, else mask classes, else all zero."""
        vector = np.zeros(self.num_classes, dtype=np.uint8)
        names = self._xml_names(image_id)
        if names:
            for name in names:
                if name not in self._class_index:
                    raise DatasetError(
                        f"{self._xml_path(image_id)} names object {name!r}, which is not a class "
                        f"({', '.join(self.class_names)}); add it to class_names.txt or fix the annotation")
                vector[self._class_index[name]] = 1
            return vector
        mask = self.mask(image_id)
        if mask is not None:
            present = np.unique(mask)
            present = present[(present > 0) & (present != IGNORE)]
            vector[present.astype(np.int64) - 1] = 1
        return vector

    def _image_path(self, image_id: str) -> Path:
        return self.root / "JPEGImages" / f"{image_id}.jpg"

    def _xml_path(self, image_id: str) -> Path:
        return self.root / "Annotations" / f"{image_id}.xml"

    def _mask_path(self, image_id: str) -> Path | None:
        folders = ("SegmentationClassAug", "SegmentationClass") if self.use_aug else ("SegmentationClass",)
        for folder in folders:
            path = self.root / folder / f"{image_id}.png"
            if path.is_file():
                return path
        return None

    def _xml_names(self, image_id: str) -> list[str]:
        path = self._xml_path(image_id)
        if not path.is_file():
            return []
        try:
            tree = ET.parse(path)
        except ET.ParseError as error:
            raise DatasetError(f"cannot parse annotation {path}: {error}; fix or delete it "
                               "(labels then come from the mask)") from error
        return [(obj.findtext("name") or "").strip() for obj in tree.getroot().findall("object")]


def _check_root(root: Path) -> None:
    if not root.exists():
        raise DatasetError(f"dataset root {root} does not exist; point dataset.root at a VOC-layout folder "
                           "(JPEGImages/, ImageSets/Segmentation/, ...) or use the synthetic source")
    if not root.is_dir():
        raise DatasetError(f"dataset root {root} is not a folder; point it at the folder holding JPEGImages/")
    if not any(root.iterdir()):
        raise DatasetError(f"dataset root {root} is empty; download/extract VOC2012 there "
                           "(the folder holding JPEGImages/) or use the synthetic source")


def _read_split(root: Path, split: str) -> tuple[str, ...]:
    path = root / _SPLIT_DIR / f"{split}.txt"
    if not path.is_file():
        available = sorted(p.stem for p in (root / _SPLIT_DIR).glob("*.txt"))
        hint = f"available: {', '.join(available)}" if available else f"{root / _SPLIT_DIR} has no split files"
        raise DatasetError(f"split file {path} not found ({hint}); fix the split name or add the file")
    ids = []
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        token = line.split()[0]
        # DeepLab-style lists give "/JPEGImages/<id>.jpg /SegmentationClassAug/<id>.png"; keep the id.
        ids.append(Path(token).stem if "/" in token else token)
    if not ids:
        raise DatasetError(f"split file {path} lists no ids; put one image id per line")
    duplicates = sorted(i for i, n in Counter(ids).items() if n > 1)
    if duplicates:
        raise DatasetError(f"split file {path} lists ids more than once: {_listing(duplicates)}; list each once")
    return tuple(ids)


def _listing(items: Sequence[str]) -> str:
    shown = ", ".join(items[:_MAX_LISTED])
    return shown if len(items) <= _MAX_LISTED else f"{shown} ... and {len(items) - _MAX_LISTED} more"
