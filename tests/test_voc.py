"""VOC-layout reader on a tiny folder written here: ids, labels, masks, colour modes, errors."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline.data.label_maps import load_label_png, palette, save_label_png
from pipeline.sources.voc import VOC_CLASSES, DatasetError, VOCDataset

CAT, PERSON, DOG, CAR = (VOC_CLASSES.index(n) + 1 for n in ("cat", "person", "dog", "car"))
H, W = 20, 30


def _xml(*names: str, parts: bool = False) -> str:
    part = "<part><name>head</name></part>" if parts else ""  # VOC person layout; not a class
    objects = "".join(f"<object><name> {n} </name><difficult>1</difficult>{part}</object>" for n in names)
    return f"<annotation><filename>x.jpg</filename>{objects}</annotation>"


def _mask_with_border(value: int) -> np.ndarray:
    mask = np.zeros((H, W), dtype=np.uint8)
    mask[4:12, 5:15] = 255  # the VOC boundary band around the object
    mask[5:11, 6:14] = value
    return mask


def _write_split(root: Path, name: str, ids: list[str]) -> None:
    (root / "ImageSets" / "Segmentation" / f"{name}.txt").write_text("".join(f"{i}\n" for i in ids))


@pytest.fixture()
def voc(tmp_path: Path) -> Path:
    root = tmp_path / "VOC"
    for folder in ("JPEGImages", "SegmentationClass", "Annotations", "ImageSets/Segmentation"):
        (root / folder).mkdir(parents=True)
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (H, W, 3), dtype=np.uint8)).save(root / "JPEGImages/rgb.jpg")
    Image.new("L", (W, H), 90).save(root / "JPEGImages/grey.jpg")
    Image.new("CMYK", (W, H), (0, 255, 255, 0)).save(root / "JPEGImages/cmyk.jpg")  # red in CMYK
    Image.new("RGBA", (W, H), (0, 0, 255, 128)).save(root / "JPEGImages/alpha.jpg", format="PNG")  # misnamed PNG
    Image.new("RGB", (W, H)).save(root / "JPEGImages/empty.jpg")

    mask = _mask_with_border(CAT)
    mask[14:18, 20:26] = PERSON
    save_label_png(root / "SegmentationClass/rgb.png", mask)
    save_label_png(root / "SegmentationClass/grey.png", _mask_with_border(DOG))
    save_label_png(root / "SegmentationClass/alpha.png", _mask_with_border(DOG))
    save_label_png(root / "SegmentationClass/empty.png", np.zeros((H, W), dtype=np.uint8))

    (root / "Annotations/rgb.xml").write_text(_xml("cat", "person", parts=True))
    (root / "Annotations/cmyk.xml").write_text(_xml("car"))
    (root / "Annotations/alpha.xml").write_text(_xml())  # no objects: labels come from the mask
    # grey and empty have no XML at all: mask fallback
    _write_split(root, "train", ["rgb", "grey", "cmyk", "alpha", "empty"])
    return root


def test_palette_is_the_voc_colour_map() -> None:
    pal = palette()
    assert pal.shape == (256, 3) and pal.dtype == np.uint8
    assert pal[0].tolist() == [0, 0, 0] and pal[1].tolist() == [128, 0, 0]
    assert pal[15].tolist() == [192, 128, 128] and pal[255].tolist() == [224, 224, 192]
    assert len({tuple(c) for c in pal}) == 256


def test_label_png_roundtrip_is_a_palette_png(tmp_path: Path) -> None:
    mask = _mask_with_border(CAT)
    save_label_png(tmp_path / "m.png", mask)
    with Image.open(tmp_path / "m.png") as image:
        assert image.mode == "P"
        assert list(image.getpalette()[:6]) == [0, 0, 0, 128, 0, 0]
    np.testing.assert_array_equal(load_label_png(tmp_path / "m.png"), mask)
    Image.fromarray(palette()[mask]).save(tmp_path / "rgb.png")  # colour-coded RGB maps back too
    np.testing.assert_array_equal(load_label_png(tmp_path / "rgb.png"), mask)
    with pytest.raises(ValueError, match="2-D uint8"):
        save_label_png(tmp_path / "bad.png", mask.astype(np.int32))


def test_ids_labels_and_masks(voc: Path) -> None:
    ds = VOCDataset(voc, "train")
    assert ds.ids == ("rgb", "grey", "cmyk", "alpha", "empty") and len(ds) == 5
    assert ds.class_names == VOC_CLASSES and ds.num_classes == 20

    def labelled(image_id: str) -> set[str]:
        vector = ds.labels(image_id)
        assert vector.dtype == np.uint8 and vector.shape == (20,)
        return {VOC_CLASSES[k] for k in np.flatnonzero(vector)}

    assert labelled("rgb") == {"cat", "person"}  # XML; the <part> name "head" is ignored
    assert labelled("grey") == {"dog"}  # no XML: mask classes, 255 border not a class
    assert labelled("alpha") == {"dog"}  # XML without objects: mask classes
    assert labelled("cmyk") == {"car"}  # XML without a mask
    assert labelled("empty") == set()  # kept, all zero

    mask = ds.mask("rgb")
    assert mask.dtype == np.uint8 and mask.shape == (H, W)
    assert set(np.unique(mask).tolist()) == {0, CAT, PERSON, 255}
    assert ds.mask("cmyk") is None and not ds.has_mask("cmyk") and ds.has_mask("rgb")
    assert ds.size("rgb") == (H, W)


def test_images_are_converted_to_rgb(voc: Path) -> None:
    ds = VOCDataset(voc, "train")
    for image_id in ds.ids:
        image = ds.image(image_id)
        assert image.dtype == np.uint8 and image.shape == (H, W, 3), image_id
    grey = ds.image("grey").astype(int)
    assert np.abs(grey - 90).max() <= 2 and (grey[..., 0] == grey[..., 2]).all()
    red = ds.image("cmyk").astype(int).mean(axis=(0, 1))
    assert red[0] > 200 and red[1] < 60 and red[2] < 60
    assert ds.image("alpha")[0, 0].tolist() == [0, 0, 255]


def test_official_masks_first_then_sbd_where_none(voc: Path) -> None:
    (voc / "SegmentationClassAug").mkdir()
    aug = np.zeros((H, W), dtype=np.uint8)
    aug[:5, :5] = CAR
    Image.fromarray(aug).save(voc / "SegmentationClassAug/grey.png")  # SBD masks are greyscale PNGs
    Image.fromarray(aug).save(voc / "SegmentationClassAug/rgb.png")
    (voc / "SegmentationClass/rgb.png").unlink()
    ds = VOCDataset(voc, "train", use_aug=True)
    assert ds.mask("grey")[6, 6] == DOG and ds.mask("grey")[0, 0] != CAR  # the official mask, void band and all
    np.testing.assert_array_equal(ds.mask("rgb"), aug)  # no official mask: SBD's
    assert VOCDataset(voc, "train").mask("rgb") is None  # use_aug off: SBD is not read


def test_class_names_file(voc: Path) -> None:
    (voc / "class_names.txt").write_text("cat\nperson\ncar\ndog\n\n")
    ds = VOCDataset(voc, "train")
    assert ds.class_names == ("cat", "person", "car", "dog")
    assert ds.labels("rgb").tolist() == [1, 1, 0, 0]
    with pytest.raises(DatasetError, match=r"rgb.png has values \[8, 15\]"):
        ds.mask("rgb")  # VOC indices beyond the 4 listed classes
    (voc / "Annotations/cmyk.xml").write_text(_xml("bus"))
    with pytest.raises(DatasetError, match="'bus', which is not a class"):
        ds.labels("cmyk")
    (voc / "class_names.txt").write_text("background\ncat\n")
    with pytest.raises(DatasetError, match="foreground classes only"):
        VOCDataset(voc, "train")


def test_split_file_variants(voc: Path) -> None:
    (voc / "ImageSets/Segmentation/list.txt").write_text("\n/JPEGImages/rgb.jpg /SegmentationClassAug/rgb.png\ngrey\n")
    assert VOCDataset(voc, "list").ids == ("rgb", "grey")


@pytest.mark.parametrize("case, message", [
    ("missing_root", "does not exist"),
    ("empty_root", "is empty"),
    ("file_root", "is not a folder"),
    ("missing_split", r"val.txt not found \(available: train\)"),
    ("empty_split", "lists no ids"),
    ("duplicate_id", "more than once: rgb"),
    ("missing_image", "1 of 2 ids in split 'val' have no image .*: nope"),
])
def test_bad_dataset_fails_up_front(voc: Path, tmp_path: Path, case: str, message: str) -> None:
    root, split = voc, "val"
    if case == "missing_root":
        root = tmp_path / "nowhere"
    elif case == "empty_root":
        root = tmp_path / "empty"
        root.mkdir()
    elif case == "file_root":
        root = tmp_path / "file"
        root.write_text("")
    elif case == "empty_split":
        _write_split(voc, "val", [])
    elif case == "duplicate_id":
        _write_split(voc, "val", ["rgb", "grey", "rgb"])
    elif case == "missing_image":
        _write_split(voc, "val", ["rgb", "nope"])
    with pytest.raises(DatasetError, match=message):
        VOCDataset(root, split)


def test_unreadable_files_fail_when_read(voc: Path) -> None:
    (voc / "JPEGImages/rgb.jpg").write_bytes(b"not a jpeg")
    (voc / "Annotations/cmyk.xml").write_text("<annotation><object>")
    ds = VOCDataset(voc, "train")  # construction only checks existence
    with pytest.raises(DatasetError, match=r"cannot read image .*rgb.jpg.*remove it from the dataset's list"):
        ds.image("rgb")
    with pytest.raises(DatasetError, match="cannot read image"):
        ds.size("rgb")
    with pytest.raises(DatasetError, match="cannot parse annotation .*cmyk.xml"):
        ds.labels("cmyk")
    (voc / "SegmentationClass/grey.png").write_bytes(b"junk")
    with pytest.raises(DatasetError, match="cannot read label PNG"):
        ds.mask("grey")
