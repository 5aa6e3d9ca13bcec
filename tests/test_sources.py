"""Dataset formats: COCO instances files, a folder with a labels CSV, split membership and leakage guards."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image, ImageDraw
from scipy import ndimage
from typer.testing import CliRunner

from pipeline.core.errors import DatasetError, InputError
from pipeline.core.files import id_filename
from pipeline.data.ground_truth import GroundTruth
from pipeline.data.index import DatasetIndex
from pipeline.data.label_maps import save_label_png
from pipeline.sources.build_index import DatasetConfig, open_source, write_index, write_mask_digests, write_masks
from pipeline.sources.synthetic import SyntheticConfig, generate
from stages.cli import app
from stages.evaluate_seg import check_held_out
from tests.configs import project_config
from tests.conftest import ROOT, run

# -- COCO ------------------------------------------------------------------------------------------
# Category ids out of order and with gaps: labels follow category-id order (person 1, car 2, dog 3).
CATEGORIES = [{"id": 18, "name": "dog"}, {"id": 3, "name": "car"}, {"id": 1, "name": "person"}]
PERSON, CAR, DOG = 1, 2, 3
H, W = 40, 50


def rle_counts(mask: np.ndarray) -> list[int]:
    """COCO's uncompressed RLE: run lengths in column-major order, starting with a run of zeros."""
    flat = mask.ravel(order="F").astype(np.int8)
    edges = np.flatnonzero(np.diff(flat)) + 1
    runs = np.diff(np.concatenate([[0], edges, [flat.size]])).tolist()
    return ([0] + runs) if flat[0] else runs


def rle_string(counts: list[int]) -> str:
    """COCO's compressed RLE string: 5 bits a character (offset 48), counts after the second as deltas."""
    chars = []
    for i, count in enumerate(counts):
        value = count - counts[i - 2] if i > 2 else count
        more = True
        while more:
            chunk = value & 0x1F
            value >>= 5
            more = value != -1 if chunk & 0x10 else value != 0
            chars.append(chr((chunk | 0x20 if more else chunk) + 48))
    return "".join(chars)


def rle_decode(counts: list[int], height: int, width: int) -> np.ndarray:
    """The test's own decoding of uncompressed RLE."""
    values = np.concatenate([np.full(n, k % 2, dtype=bool) for k, n in enumerate(counts)])
    return values.reshape((width, height)).T


def draw_polygon(points: list[float], height: int, width: int) -> np.ndarray:
    """An independent rasterisation (PIL's) of one polygon."""
    canvas = Image.new("L", (width, height), 0)
    ImageDraw.Draw(canvas).polygon(list(zip(points[0::2], points[1::2])), fill=1)
    return np.asarray(canvas, dtype=bool)


def boundary_band(region: np.ndarray) -> np.ndarray:
    """Pixels within one pixel (diagonals included) of the region's outline, where two
    rasterisations that put pixel centres differently may disagree."""
    square = np.ones((3, 3), bool)
    return ndimage.binary_dilation(region, square) & ~ndimage.binary_erosion(region, square)


def _disc(height: int, width: int, cy: float, cx: float, r: float) -> np.ndarray:
    y, x = np.mgrid[:height, :width]
    return (y - cy) ** 2 + (x - cx) ** 2 <= r * r


DOG_POLYGON = [4.0, 4.0, 46.0, 4.0, 46.0, 36.0, 4.0, 36.0]  # large
CAR_POLYGON = [10.0, 8.0, 30.0, 8.0, 20.0, 30.0]            # small, on the dog
PERSON_DISC = _disc(H, W, 20, 25, 9)                          # compressed RLE
CROWD_CAR = np.zeros((H, W), bool)
CROWD_CAR[5:35, 15:45] = True                                 # uncompressed RLE, under the disc
CROWD_ONLY_DOG = np.zeros((30, 20), bool)
CROWD_ONLY_DOG[3:20, 2:12] = True


def _write_images(folder: Path, sizes: dict[str, tuple[int, int]]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for name, (height, width) in sizes.items():
        Image.fromarray(rng.integers(0, 255, (height, width, 3), dtype=np.uint8)).save(folder / name, quality=95)


def make_coco(root: Path, annotations: list[dict] | None = None, categories: list[dict] | None = None) -> Path:
    """A small COCO-2014-style dataset: train with polygons, both RLE kinds, crowd and overlaps; val with one polygon."""
    train_images = [
        {"id": 11, "file_name": "COCO_train2014_poly.jpg", "height": H, "width": W},
        {"id": 12, "file_name": "COCO_train2014_rle.jpg", "height": H, "width": W},
        {"id": 13, "file_name": "COCO_train2014_crowd.jpg", "height": 30, "width": 20},
        {"id": 14, "file_name": "COCO_train2014_empty.jpg", "height": 24, "width": 24},
    ]
    train_annotations = annotations if annotations is not None else [
        {"id": 1, "image_id": 11, "category_id": 18, "iscrowd": 0, "segmentation": [DOG_POLYGON]},
        {"id": 2, "image_id": 11, "category_id": 3, "iscrowd": 0, "segmentation": [CAR_POLYGON]},
        {"id": 3, "image_id": 12, "category_id": 1, "iscrowd": 0,
         "segmentation": {"size": [H, W], "counts": rle_string(rle_counts(PERSON_DISC))}},
        {"id": 4, "image_id": 12, "category_id": 3, "iscrowd": 1, "segmentation": {"size": [H, W], "counts": rle_counts(CROWD_CAR)}},
        {"id": 5, "image_id": 13, "category_id": 18, "iscrowd": 1, "segmentation": {"size": [30, 20], "counts": rle_counts(CROWD_ONLY_DOG)}},
    ]
    val_images = [{"id": 21, "file_name": "COCO_val2014_poly.jpg", "height": H, "width": W}]
    val_annotations = [{"id": 9, "image_id": 21, "category_id": 3, "iscrowd": 0, "segmentation": [CAR_POLYGON]}]
    (root / "annotations").mkdir(parents=True)
    for split, images, anns in (("train", train_images, train_annotations), ("val", val_images, val_annotations)):
        data = {"images": images, "annotations": anns, "categories": categories or CATEGORIES}
        (root / "annotations" / f"instances_{split}2014.json").write_text(json.dumps(data))
        _write_images(root / f"{split}2014", {i["file_name"]: (i["height"], i["width"]) for i in images})
    return root


def coco_config(root: Path, skip_unannotated: bool = False) -> DatasetConfig:
    coco = {"images": "{split}2014", "annotations": "annotations/instances_{split}2014.json", "skip_unannotated": skip_unannotated}
    return project_config("dataset", DatasetConfig, format="coco", root=str(root), coco=coco)


def _index(tmp_path: Path, config: DatasetConfig) -> DatasetIndex:
    """What the dataset stage writes: the index, and the digests of the masks beside it."""
    write_index(tmp_path / "dataset.zarr", config)
    index = DatasetIndex(tmp_path / "dataset.zarr")
    write_mask_digests(tmp_path / "mask_digests.zarr", open_source(config), index)
    return index


def _index_with_masks(tmp_path: Path, config: DatasetConfig) -> tuple[DatasetIndex, GroundTruth]:
    index = _index(tmp_path, config)
    write_masks(tmp_path / "masks.zarr", open_source(config), index, tmp_path / "mask_digests.zarr")
    return index, GroundTruth(tmp_path / "masks.zarr")


@pytest.fixture()
def coco(tmp_path) -> tuple[DatasetIndex, GroundTruth]:
    return _index_with_masks(tmp_path, coco_config(make_coco(tmp_path / "coco")))


def test_coco_classes_follow_category_id_order_and_labels_count_crowd(coco):
    index, _ = coco
    assert index.class_names == ["person", "car", "dog"]
    assert index.ids == ["COCO_train2014_poly", "COCO_train2014_rle", "COCO_train2014_crowd", "COCO_train2014_empty", "COCO_val2014_poly"]
    labels = {i: index.labels[k].tolist() for k, i in enumerate(index.ids)}
    assert labels["COCO_train2014_poly"] == [0, 1, 1]
    assert labels["COCO_train2014_rle"] == [1, 1, 0]       # the crowd-only car counts
    assert labels["COCO_train2014_crowd"] == [0, 0, 1]     # a class present only as a crowd is a label
    assert labels["COCO_train2014_empty"] == [0, 0, 0]
    assert index.files[0] == "train2014/COCO_train2014_poly.jpg" and index.image(0).shape == (H, W, 3)


def test_coco_rle_masks_equal_the_tests_own_decoding(coco):
    _, truth = coco
    assert np.array_equal(rle_decode(rle_counts(CROWD_CAR), H, W), CROWD_CAR)  # the test's decoder, checked
    expected = np.zeros((H, W), np.uint8)
    expected[rle_decode(rle_counts(CROWD_CAR), H, W)] = 255   # crowd: ignored ...
    expected[rle_decode(rle_counts(PERSON_DISC), H, W)] = PERSON  # ... under any non-crowd instance
    np.testing.assert_array_equal(truth.mask("COCO_train2014_rle"), expected)
    crowd_only = np.where(rle_decode(rle_counts(CROWD_ONLY_DOG), 30, 20), 255, 0).astype(np.uint8)
    np.testing.assert_array_equal(truth.mask("COCO_train2014_crowd"), crowd_only)
    np.testing.assert_array_equal(truth.mask("COCO_train2014_empty"), np.zeros((24, 24), np.uint8))


def test_coco_polygons_match_an_independent_rasterisation_off_the_boundary(coco):
    _, truth = coco
    dog, car = draw_polygon(DOG_POLYGON, H, W), draw_polygon(CAR_POLYGON, H, W)
    expected = np.zeros((H, W), np.uint8)
    expected[dog] = DOG
    expected[car] = CAR  # the smaller instance wins where they overlap
    band = boundary_band(dog) | boundary_band(car)
    mask = truth.mask("COCO_train2014_poly")
    assert (mask[~band] == expected[~band]).all()
    assert band.mean() < 0.25 and (mask[car & ~band] == CAR).sum() > 100  # the comparison covers most pixels


def test_coco_category_missing_from_the_class_list_is_named(tmp_path):
    root = make_coco(tmp_path / "coco")
    (root / "class_names.txt").write_text("person\ncar\n")
    with pytest.raises(DatasetError, match=r"instances_train2014\.json: category 18 'dog' is not in the class list"):
        open_source(coco_config(root))


def test_coco_annotation_outside_the_image_is_named(tmp_path):
    outside = [{"id": 77, "image_id": 11, "category_id": 3, "iscrowd": 0, "segmentation": [[10.0, 10.0, 80.0, 10.0, 20.0, 30.0]]}]
    root = make_coco(tmp_path / "coco", annotations=outside)
    with pytest.raises(DatasetError, match=r"instances_train2014\.json: annotation 77 \(image 11, 50x40\): polygon reaches .* outside the image"):
        open_source(coco_config(root))


def test_coco_image_whose_size_differs_from_its_record_is_named(tmp_path):
    root = make_coco(tmp_path / "coco")
    _write_images(root / "train2014", {"COCO_train2014_empty.jpg": (25, 24)})
    with pytest.raises(DatasetError, match=r"COCO_train2014_empty\.jpg is 24x25 but the dataset says 24x24"):
        write_index(tmp_path / "dataset.zarr", coco_config(root))


# -- folder + CSV ------------------------------------------------------------------------------------

def make_folder(root: Path, rows: list[str], masks: dict[str, np.ndarray] | None = None) -> Path:
    """images/cats/001.jpg, images/dogs/001.jpg (same name, two folders), images/both.png; a labels CSV."""
    _write_images(root / "images" / "cats", {"001.jpg": (20, 24)})
    _write_images(root / "images" / "dogs", {"001.jpg": (20, 24)})
    _write_images(root / "images", {"both.png": (16, 16)})
    (root / "labels.csv").write_text("image,split,labels\n" + "\n".join(rows) + "\n")
    for image_id, mask in (masks or {}).items():
        (root / "masks" / image_id).parent.mkdir(parents=True, exist_ok=True)
        save_label_png(root / "masks" / f"{image_id}.png", mask)
    return root


ROWS = ["cats/001.jpg,train,cat", "dogs/001.jpg,train,dog;", "both.png,train,dog; cat", "both.png,extra,cat;dog", "dogs/001.jpg,val,dog"]


def folder_config(root: Path, **overrides) -> DatasetConfig:
    values = {"format": "folder", "root": str(root), "splits": ["train", "extra"], "held_out": [], "folder": {"labels_file": "labels.csv"}}
    return project_config("dataset", DatasetConfig, **{**values, **overrides})


def test_folder_ids_classes_membership_and_masks(tmp_path):
    mask = np.zeros((20, 24), np.uint8)
    mask[5:10, 5:10] = 1
    root = make_folder(tmp_path / "own", ROWS, masks={"cats/001": mask})
    index, truth = _index_with_masks(tmp_path, folder_config(root))
    assert index.class_names == ["cat", "dog"]  # sorted: no class_names.txt
    assert index.ids == ["cats/001", "dogs/001", "both"]
    assert index.labels.tolist() == [[1, 0], [0, 1], [1, 1]]
    assert index.in_split("extra").tolist() == [False, False, True] and index.indices(["train"]).tolist() == [0, 1, 2]
    assert index.has_mask.tolist() == [True, False, False] and len(truth) == 1
    np.testing.assert_array_equal(truth.mask("cats/001"), mask)
    assert index.image(2).shape == (16, 16, 3)
    assert id_filename("cats/001") == "cats%2F001" and id_filename("cats%2F001") != id_filename("cats/001")


def test_folder_class_names_file_fixes_the_order(tmp_path):
    root = make_folder(tmp_path / "own", ROWS)
    (root / "class_names.txt").write_text("dog\ncat\nbird\n")
    index, _ = _index_with_masks(tmp_path, folder_config(root))
    assert index.class_names == ["dog", "cat", "bird"] and index.labels.tolist() == [[0, 1, 0], [1, 0, 0], [1, 1, 0]]


@pytest.mark.parametrize("rows, message", [
    (["cats/001.jpg,train,cat", "dogs/001.jpg,train,horse"], r"labels\.csv, row 3: class 'horse' is not in"),
    (["cats/001.jpg,train,cat", "cats/002.jpg,train,cat"], r"labels\.csv, row 3: image .*images/cats/002\.jpg does not exist"),
    (["cats/001.jpg,train,cat", "cats/001.jpg,val,dog"], r"labels\.csv, row 3: 'cats/001\.jpg' has other labels than in row 2"),
    (["cats/001.jpg,train"], r"labels\.csv, row 2: expected 3 cells"),
], ids=["unknown class", "missing image", "labels disagree", "short row"])
def test_folder_bad_rows_are_named_with_file_and_row(tmp_path, rows, message):
    root = make_folder(tmp_path / "own", rows)
    (root / "class_names.txt").write_text("cat\ndog\n")
    with pytest.raises(DatasetError, match=message):
        open_source(folder_config(root))


# -- leakage guards ------------------------------------------------------------------------------------

def test_held_out_split_sharing_images_stops_the_index_unless_allowed(tmp_path):
    root = make_folder(tmp_path / "own", ROWS)
    config = folder_config(root, splits=["train", "val"], held_out=["val"])
    with pytest.raises(DatasetError, match=r"1 images of split 'val' are also in split 'train' \(e\.g\. dogs/001\)"):
        write_index(tmp_path / "dataset.zarr", config)
    assert not (tmp_path / "dataset.zarr").exists()
    write_index(tmp_path / "dataset.zarr", folder_config(root, splits=["train", "val"], held_out=["val"], allow_held_out_overlap=True))
    assert DatasetIndex(tmp_path / "dataset.zarr").membership.sum(axis=1).tolist() == [1, 2, 1]


def test_evaluating_images_trained_on_with_ground_truth_is_refused(tmp_path):
    root = make_folder(tmp_path / "own", ROWS)
    write_index(tmp_path / "dataset.zarr", folder_config(root))
    index = DatasetIndex(tmp_path / "dataset.zarr")
    check_held_out(index, "extra", {"supervision": "pseudo", "splits": ["train"]})  # pseudo-masks: no pixel labels seen
    with pytest.raises(InputError, match=r"evaluate_seg.split='extra': 1 of its images were in the segmenter's ground-truth training splits"):
        check_held_out(index, "extra", {"supervision": "ground_truth", "splits": ["train"]})


def test_a_format_without_its_subsection_is_refused():
    with pytest.raises(InputError, match=r"format is 'coco' but the subsection 'dataset.coco' is missing"):
        project_config("dataset", DatasetConfig, format="coco")


def _coco_params(tmp_path: Path, root: Path) -> Path:
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["dataset"] = {"format": "coco", "root": str(root), "splits": ["train", "val"], "held_out": ["val"], "allow_held_out_overlap": False,
                         "coco": {"images": "{split}2014", "annotations": "annotations/instances_{split}2014.json", "skip_unannotated": False}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return tmp_path / "params.yaml"


@pytest.mark.slow  # `wsss` / python subprocesses that import torch
def test_coco_through_the_dataset_and_masks_stages(tmp_path):
    _coco_params(tmp_path, make_coco(tmp_path / "coco"))
    assert "indexed 5 images {'train': 4, 'val': 1} with 3 classes (coco, 5 with a mask)" in run(["wsss", "dataset"], tmp_path).stderr
    assert "5 of 5 images have a ground-truth mask" in run(["wsss", "masks"], tmp_path).stderr
    truth = GroundTruth(tmp_path / "data/masks.zarr")
    assert (truth.mask("COCO_val2014_poly") == CAR).sum() > 100


@pytest.mark.slow  # `wsss` / python subprocesses that import torch
def test_a_bad_annotation_ends_the_dataset_stage_in_one_message(tmp_path):
    outside = [{"id": 77, "image_id": 11, "category_id": 3, "iscrowd": 0, "segmentation": {"size": [H, W + 1], "counts": [5, 5]}}]
    _coco_params(tmp_path, make_coco(tmp_path / "coco", annotations=outside))
    result = run(["wsss", "dataset"], tmp_path, check=False)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().count("\n") == 0  # one line
    assert "instances_train2014.json: annotation 77" in result.stderr and "RLE size [40, 51]" in result.stderr
    assert not (tmp_path / "data/dataset.zarr").exists()


def test_voc_train_aug_protocol_membership(tmp_path):
    """train inside train_aug, val apart: each image indexed once, with every split it is in."""
    root = tmp_path / "voc"
    generate(root, project_config("synthetic", SyntheticConfig, num_train=6, num_val=2, image_size=32, num_classes=3, seed=0))
    lists = root / "ImageSets/Segmentation"
    train = (lists / "train.txt").read_text().split()
    (lists / "train_aug.txt").write_text("\n".join(f"/JPEGImages/{i}.jpg /SegmentationClassAug/{i}.png" for i in train) + "\n")
    (lists / "train.txt").write_text("\n".join(train[:3]) + "\n")
    write_index(tmp_path / "dataset.zarr", project_config("dataset", DatasetConfig, root=str(root), splits=["train_aug", "train", "val"]))
    index = DatasetIndex(tmp_path / "dataset.zarr")
    assert len(index.ids) == 8 and index.ids[:6] == train
    assert index.indices(["train"]).tolist() == [0, 1, 2] and index.indices(["train_aug"]).tolist() == list(range(6))
    assert index.in_split("val").tolist() == [False] * 6 + [True] * 2


def test_coco_images_without_annotations_can_be_left_out(tmp_path):
    root = make_coco(tmp_path / "coco")
    assert open_source(coco_config(root, skip_unannotated=True)).split_ids("train") == ("COCO_train2014_poly", "COCO_train2014_rle", "COCO_train2014_crowd")


def test_coco_two_images_with_one_id_are_refused(tmp_path):
    root = make_coco(tmp_path / "coco")
    path = root / "annotations/instances_val2014.json"
    data = json.loads(path.read_text())
    data["images"][0]["file_name"] = "COCO_train2014_poly.jpg"  # the train image's name, in another folder
    path.write_text(json.dumps(data))
    with pytest.raises(DatasetError, match=r"instances_val2014\.json: image 21 'val2014/COCO_train2014_poly\.jpg' has the same id"):
        open_source(coco_config(root))


def test_coco_malformed_record_is_named(tmp_path):
    root = make_coco(tmp_path / "coco")
    path = root / "annotations/instances_val2014.json"
    data = json.loads(path.read_text())
    del data["images"][0]["height"]
    path.write_text(json.dumps(data))
    with pytest.raises(DatasetError, match=r"instances_val2014\.json: image record 0 is malformed \(KeyError: 'height'\)"):
        open_source(coco_config(root))


def test_bad_masks_are_all_reported_by_the_masks_writer_and_nothing_is_written(tmp_path):
    mask = np.zeros((20, 24), np.uint8)
    root = make_folder(tmp_path / "own", ROWS, masks={"cats/001": mask[:10], "dogs/001": np.full((20, 24), 7, np.uint8)})
    config = folder_config(root)
    index = _index(tmp_path, config)  # the dataset stage leaves mask pixels alone
    with pytest.raises(DatasetError, match=r"(?s)2 of 2 masks are bad:.*cats/001\.png is 24x10 but its image is 24x20.*dogs/001\.png has values \[7\]"):
        write_masks(tmp_path / "masks.zarr", open_source(config), index, tmp_path / "mask_digests.zarr")
    assert not (tmp_path / "masks.zarr").exists()


def test_folder_format_works_as_the_readme_shows(tmp_path, monkeypatch):
    """The README's edit of params.yaml's dataset section: format, root and the CSV's splits, no
    `dataset.folder` subsection (the labels CSV is then <root>/labels.csv)."""
    root = make_folder(tmp_path / "own", ROWS)
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["dataset"].update(format="folder", root=str(root), splits=["train", "extra"], held_out=[])
    assert "folder" not in params["dataset"]
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["dataset"])
    assert result.exit_code == 0, result.output
    assert DatasetIndex(tmp_path / "data" / "dataset.zarr").ids == ["cats/001", "dogs/001", "both"]


def test_the_index_records_each_images_md5_and_refuses_a_file_changed_since(tmp_path):
    import hashlib

    root = make_folder(tmp_path / "own", ROWS)
    write_index(tmp_path / "dataset.zarr", folder_config(root))
    index = DatasetIndex(tmp_path / "dataset.zarr")
    for k, name in enumerate(index.files):
        assert bytes(index.digests[k]) == hashlib.md5((root / name).read_bytes()).digest()
    assert index.image(0).shape == (20, 24, 3)
    Image.new("RGB", (24, 20), (9, 9, 9)).save(root / "images" / "cats" / "001.jpg")  # same size, other pixels
    with pytest.raises(InputError, match=r"cats/001\.jpg changed since the dataset stage indexed it; run `dvc repro`"):
        index.image(0)


def test_a_mask_changed_since_the_dataset_stage_is_refused_by_the_masks_writer(tmp_path):
    # Only the dataset stage lists the folder in dvc.yaml: the masks stage trusts the digests it recorded.
    root = make_folder(tmp_path / "own", ROWS, masks={"cats/001": np.zeros((20, 24), np.uint8), "dogs/001": np.ones((20, 24), np.uint8)})
    config = folder_config(root)
    index = _index(tmp_path, config)
    save_label_png(root / "masks" / "dogs" / "001.png", np.full((20, 24), 2, np.uint8))  # still a valid mask
    with pytest.raises(DatasetError, match=r"(?s)1 of 2 masks are bad:.*the mask of dogs/001 changed since the dataset stage recorded it; run `dvc repro`"):
        write_masks(tmp_path / "masks.zarr", open_source(config), index, tmp_path / "mask_digests.zarr")
    assert not (tmp_path / "masks.zarr").exists()
    write_mask_digests(tmp_path / "mask_digests.zarr", open_source(config), index)  # what the dataset stage's rerun does
    write_masks(tmp_path / "masks.zarr", open_source(config), index, tmp_path / "mask_digests.zarr")
    assert GroundTruth(tmp_path / "masks.zarr").mask("dogs/001").max() == 2


def test_a_coco_masks_digest_follows_its_annotations_not_the_other_images(tmp_path):
    root = make_coco(tmp_path / "coco")
    before = open_source(coco_config(root))
    path = root / "annotations/instances_val2014.json"
    data = json.loads(path.read_text())
    data["annotations"][0]["segmentation"][0][0] += 1  # move one polygon vertex of the val image
    path.write_text(json.dumps(data))
    after = open_source(coco_config(root))
    (val_image,) = before.split_ids("val")
    assert not np.array_equal(before.mask_digest(val_image), after.mask_digest(val_image))
    assert all(np.array_equal(before.mask_digest(i), after.mask_digest(i)) for i in before.split_ids("train"))
