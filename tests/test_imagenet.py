"""ImageNet validation and ImageNet-segmentation readers, on tiny files written in the same formats."""
from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from PIL import Image

from pipeline.evaluation.imagenet import ImageNetSegmentation, batches, read_imagenet_val, resize_image, resize_mask


def rgb(seed: int, height: int = 5, width: int = 7) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def test_class_folders_index_classes_by_sorted_wnid(tmp_path):
    for wnid, names in {"n02000002": ["b.png", "a.PNG"], "n01000001": ["c.JPEG"]}.items():
        (tmp_path / wnid).mkdir()
        for i, name in enumerate(names):
            Image.fromarray(rgb(i)).save(tmp_path / wnid / name, format="JPEG" if name.endswith("JPEG") else "PNG")
    (tmp_path / "n01000001" / "notes.txt").write_text("not an image")
    dataset = read_imagenet_val(tmp_path)
    assert dataset.wnids == ("n01000001", "n02000002")
    assert [p.name for p in dataset.paths] == ["c.JPEG", "a.PNG", "b.png"]
    assert dataset.labels == (0, 1, 1)
    item = dataset[2]
    assert item["label"] == 1
    np.testing.assert_array_equal(item["image"], rgb(0))  # PNG: lossless
    assert dataset[0]["image"].shape == (5, 7, 3) and dataset[0]["image"].dtype == np.uint8


def test_flat_folder_with_a_labels_file(tmp_path):
    for i, name in enumerate(["ILSVRC2012_val_00000001.png", "ILSVRC2012_val_00000002.png"]):
        Image.fromarray(rgb(i)).save(tmp_path / name)
    labels = tmp_path / "val.txt"
    labels.write_text("ILSVRC2012_val_00000002.png 7\n\nILSVRC2012_val_00000001.png 65\n")
    dataset = read_imagenet_val(tmp_path, labels)
    assert [p.name for p in dataset.paths] == ["ILSVRC2012_val_00000002.png", "ILSVRC2012_val_00000001.png"]
    assert dataset.labels == (7, 65) and dataset.wnids == ()
    np.testing.assert_array_equal(dataset[1]["image"], rgb(0))


def test_imagenet_layout_errors_name_the_file(tmp_path):
    Image.fromarray(rgb(0)).save(tmp_path / "x.png")
    with pytest.raises(ValueError, match=f"{tmp_path}: no class folders.*labels file"):
        read_imagenet_val(tmp_path)
    bad = tmp_path / "labels.txt"
    bad.write_text("x.png 1\nx.png one\n")
    with pytest.raises(ValueError, match=f"{bad}:2: expected '<filename> <index>'"):
        read_imagenet_val(tmp_path, bad)
    bad.write_text("y.png 1\n")
    with pytest.raises(FileNotFoundError, match=f"{bad}:1: image .*y.png not found"):
        read_imagenet_val(tmp_path, bad)
    with pytest.raises(FileNotFoundError, match="missing"):
        read_imagenet_val(tmp_path / "missing")


def write_gtsegs(path: Path, images: list[np.ndarray], masks: list[np.ndarray], cell_shape: str = "column") -> None:
    """Mimic MATLAB v7.3: a 512-byte user block, arrays under #refs#, cell arrays of references,
    and every array stored with its dimensions reversed (column-major)."""
    with h5py.File(path, "w", userblock_size=512) as f:
        refs = f.create_group("#refs#")
        value = f.create_group("value")
        value.attrs["MATLAB_class"] = np.bytes_("struct")
        for key, arrays in (("img", images), ("gt", masks)):
            stored = []
            for i, array in enumerate(arrays):
                dataset = refs.create_dataset(f"{key}{i}", data=array.T)  # .T reverses all dimensions
                dataset.attrs["MATLAB_class"] = np.bytes_("uint8")
                stored.append(dataset.ref)
            shape = (len(arrays), 1) if cell_shape == "column" else (1, len(arrays))
            cell = value.create_dataset(key, shape=shape, dtype=h5py.ref_dtype)
            cell[...] = np.array(stored, dtype=object).reshape(shape)
            cell.attrs["MATLAB_class"] = np.bytes_("cell")
    with open(path, "r+b") as raw:
        raw.write(b"MATLAB 7.3 MAT-file, Platform: GLNXA64, HDF5 schema 1.00 .".ljust(116))


@pytest.mark.parametrize("cell_shape", ["column", "row"])
def test_gtsegs_reader_restores_matlab_orientation(tmp_path, cell_shape):
    images = [rgb(1, 4, 6), rgb(2, 3, 5)]
    masks = [(np.arange(24).reshape(4, 6) % 3 == 0).astype(np.uint8), np.eye(3, 5, dtype=np.uint8)]
    path = tmp_path / "gtsegs_ijcv.mat"
    write_gtsegs(path, images, masks, cell_shape)
    with h5py.File(path, "r") as f:  # the file really holds the transposed layout
        assert f[f["value/img"][()].reshape(-1)[0]].shape == (3, 6, 4)
    with ImageNetSegmentation(path) as dataset:
        assert len(dataset) == 2
        for i in range(2):
            item = dataset[i]
            np.testing.assert_array_equal(item["image"], images[i])
            np.testing.assert_array_equal(item["mask"], masks[i])
            assert item["image"].dtype == np.uint8 and item["mask"].dtype == np.uint8
        with pytest.raises(IndexError):
            dataset[2]


def test_gtsegs_grayscale_image_gets_three_channels(tmp_path):
    gray = rgb(3, 4, 6)[:, :, 0]
    path = tmp_path / "gtsegs_ijcv.mat"
    write_gtsegs(path, [gray], [np.ones((4, 6), np.uint8)])
    with ImageNetSegmentation(path) as dataset:
        np.testing.assert_array_equal(dataset[0]["image"], np.repeat(gray[:, :, None], 3, axis=2))


def test_gtsegs_layout_errors_name_the_file(tmp_path):
    path = tmp_path / "gtsegs_ijcv.mat"
    path.write_bytes(b"MATLAB 5.0 MAT-file")
    with pytest.raises(ValueError, match=f"{path}: not an HDF5 file"):
        ImageNetSegmentation(path)
    with h5py.File(path, "w") as f:
        f.create_group("value").create_dataset("img", data=np.zeros((1, 1)))
    with pytest.raises(ValueError, match=f"{path}: /value/img must be a dataset of object references"):
        ImageNetSegmentation(path)
    write_gtsegs(path, [rgb(0, 4, 6)], [np.zeros((4, 5), np.uint8)])
    with ImageNetSegmentation(path) as dataset, pytest.raises(ValueError, match=f"{path}: image 0 is \\(4, 6\\) but its mask is \\(4, 5\\)"):
        dataset[0]
    with h5py.File(path, "r+") as f:
        del f["value/gt"]
    with pytest.raises(ValueError, match=f"{path}: no dataset /value/gt"):
        ImageNetSegmentation(path)
    with pytest.raises(FileNotFoundError, match="gtsegs_ijcv.mat"):
        ImageNetSegmentation(tmp_path / "absent.mat")


def test_resize_without_crop():
    assert resize_image(rgb(0, 5, 9), 8).shape == (8, 8, 3)
    mask = np.zeros((5, 9), np.uint8)
    mask[1:4, 2:7] = 1
    resized = resize_mask(mask, 8)
    assert resized.shape == (8, 8) and set(np.unique(resized)) == {0, 1}


def test_batches_from_both_readers(tmp_path):
    path = tmp_path / "gtsegs_ijcv.mat"
    write_gtsegs(path, [rgb(i, 4, 6) for i in range(3)], [np.ones((4, 6), np.uint8)] * 3)
    with ImageNetSegmentation(path) as dataset:
        out = list(batches(dataset, batch_size=2, size=8))
    assert [b["images"].shape for b in out] == [(2, 3, 8, 8), (1, 3, 8, 8)]
    assert out[0]["images"].dtype == torch.float32 and 0.0 <= out[0]["images"].min() <= out[0]["images"].max() <= 1.0
    assert out[0]["masks"].shape == (2, 8, 8) and out[0]["masks"].dtype == torch.uint8 and "labels" not in out[0]

    (tmp_path / "n01").mkdir()
    for i in range(3):
        Image.fromarray(rgb(i)).save(tmp_path / "n01" / f"{i}.png")
    val = list(batches(read_imagenet_val(tmp_path), batch_size=4, size=8, indices=[2, 0]))
    assert len(val) == 1 and val[0]["labels"].tolist() == [0, 0] and "masks" not in val[0]
    expected = torch.from_numpy(resize_image(rgb(2), 8)).permute(2, 0, 1).float() / 255
    torch.testing.assert_close(val[0]["images"][0], expected)
