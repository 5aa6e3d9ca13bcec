"""Synthetic set: determinism, VOC layout, and the label/mask contract."""
from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

from pipeline.core.config import ConfigError
from pipeline.data.label_maps import load_label_png
from pipeline.sources.synthetic import SHAPES, SyntheticConfig, SyntheticSummary, generate, image_id, render
from pipeline.sources.voc import DatasetError, VOCDataset
from tests.configs import project_config

SIZE, K = 64, 5


def _config(num_train: int, num_val: int, **settings) -> SyntheticConfig:
    return project_config("synthetic", SyntheticConfig, num_train=num_train, num_val=num_val, **settings)


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _check_contract(root: Path, num_classes: int, max_objects: int = 3) -> None:
    """Every labelled class has pixels, every class in a mask is labelled, 1..max objects counted."""
    ds = VOCDataset(root, "trainval")
    for i in ds.ids:
        mask = ds.mask(i)
        values = set(np.unique(mask).tolist())
        assert values <= set(range(num_classes + 1)) | {255}, (i, values)
        in_mask = {v for v in values if 0 < v < 255}
        assert {k + 1 for k in np.flatnonzero(ds.labels(i))} == in_mask, i
        objects = ET.parse(root / "Annotations" / f"{i}.xml").getroot().findall("object")
        assert 1 <= len(objects) <= max_objects, i


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, SyntheticSummary]:
    root = tmp_path_factory.mktemp("syn") / "a"
    return root, generate(root, _config(12, 4, image_size=SIZE, num_classes=K, seed=3))


def test_layout_is_readable_as_voc(generated: tuple[Path, SyntheticSummary]) -> None:
    root, summary = generated
    assert summary.class_names == SHAPES[:K] and summary.num_train == 12 and summary.num_val == 4
    train, val, trainval = (VOCDataset(root, s) for s in ("train", "val", "trainval"))
    assert train.ids == tuple(image_id(i) for i in range(12)) and train.ids[0] == "syn_000000"
    assert val.ids == tuple(image_id(i) for i in range(12, 16))
    assert trainval.ids == train.ids + val.ids
    assert train.class_names == SHAPES[:K]
    assert train.image("syn_000000").shape == (SIZE, SIZE, 3) and train.size("syn_000000") == (SIZE, SIZE)
    labels = np.stack([trainval.labels(i) for i in trainval.ids])
    assert summary.images_per_class == tuple(labels.sum(0).tolist())
    assert summary.objects >= len(trainval)


def test_labels_match_masks(generated: tuple[Path, SyntheticSummary]) -> None:
    root, _ = generated
    _check_contract(root, K)
    assert (load_label_png(root / "SegmentationClass/syn_000000.png") == 255).any()  # the ignore band


def test_same_seed_same_bytes_other_seed_differs(generated: tuple[Path, SyntheticSummary], tmp_path: Path) -> None:
    root, _ = generated
    generate(tmp_path / "b", _config(12, 4, image_size=SIZE, num_classes=K, seed=3))
    assert _files(root) == _files(tmp_path / "b")
    generate(tmp_path / "c", _config(12, 4, image_size=SIZE, num_classes=K, seed=4))
    other = _files(tmp_path / "c")
    assert other.keys() == _files(root).keys()
    assert other["JPEGImages/syn_000000.jpg"] != _files(root)["JPEGImages/syn_000000.jpg"]


def test_images_render_independently(generated: tuple[Path, SyntheticSummary]) -> None:
    root, _ = generated
    config = _config(12, 4, image_size=SIZE, num_classes=K, seed=3)
    sample = render(config, 13)  # alone, out of order
    np.testing.assert_array_equal(sample.mask, load_label_png(root / "SegmentationClass/syn_000013.png"))
    assert sample.labels(K).tolist() == VOCDataset(root, "val").labels("syn_000013").tolist()


def test_occluded_objects_do_not_count(tmp_path: Path) -> None:
    # Crowded, large objects and a strict visibility rule force drops.
    summary = generate(tmp_path / "crowd", _config(20, 0, image_size=48, num_classes=3, seed=0,
                                                  objects=[3, 3], scale=[0.3, 0.4], min_visible=0.7))
    assert summary.dropped > 0
    assert summary.objects + summary.dropped == 3 * 20
    _check_contract(tmp_path / "crowd", 3)


def test_no_border_and_no_drops_means_no_ignore(tmp_path: Path) -> None:
    generate(tmp_path / "clean", _config(6, 0, image_size=48, num_classes=K, seed=1, ignore_border=0, min_visible=0.0))
    for path in (tmp_path / "clean/SegmentationClass").iterdir():
        assert 255 not in load_label_png(path)


def test_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"num_classes' = 11 is out of range \[1, 10\]"):
        _config(2, 1, num_classes=11)
    with pytest.raises(ConfigError, match="clutterr"):
        _config(2, 1, clutterr=2.0)
    (tmp_path / "full").mkdir()
    (tmp_path / "full/old.txt").write_text("")
    with pytest.raises(DatasetError, match="not an empty folder"):
        generate(tmp_path / "full", _config(2, 1))
