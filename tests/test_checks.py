"""Fail in the first minute: the dataset's files and every params section are checked up front."""
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from pipeline.data.label_maps import save_label_png
from pipeline.sources.build_index import DatasetConfig, ImageRecord, check_files, open_source, split_membership, write_index
from pipeline.sources.synthetic import SyntheticConfig, generate
from pipeline.sources.voc import DatasetError
from tests.configs import project_config
from tests.conftest import ROOT, run


@pytest.fixture(scope="module")
def generated(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("synthetic") / "voc"
    generate(root, project_config("synthetic", SyntheticConfig, num_train=6, num_val=2, image_size=32, num_classes=3, seed=0))
    return root


def _dataset(root: Path, splits: tuple[str, ...] = ("train", "val")) -> DatasetConfig:
    return project_config("dataset", DatasetConfig, root=str(root), splits=list(splits), held_out=[])


def _check(root: Path, splits: tuple[str, ...] = ("train", "val"), **options) -> list[ImageRecord]:
    config = _dataset(root, splits)
    source = open_source(config)
    ids, _ = split_membership(source, config)
    return check_files(source, ids, **options)


def _damage(root: Path) -> dict[str, Path]:
    """Three bad files of three kinds; returns them by kind."""
    truncated = root / "JPEGImages/syn_000001.jpg"
    truncated.write_bytes(truncated.read_bytes()[: truncated.stat().st_size // 2])
    wrong_size = root / "SegmentationClass/syn_000002.png"
    save_label_png(wrong_size, np.zeros((16, 32), np.uint8))
    wrong_value = root / "SegmentationClass/syn_000007.png"
    save_label_png(wrong_value, np.full((32, 32), 9, np.uint8))  # class 9 of 3
    return {"truncated": truncated, "size": wrong_size, "value": wrong_value}


@pytest.fixture()
def damaged(generated, tmp_path) -> tuple[Path, dict[str, Path]]:
    root = tmp_path / "voc"
    shutil.copytree(generated, root)
    return root, _damage(root)


def test_every_bad_file_is_reported_at_once(damaged):
    root, bad = damaged
    with pytest.raises(DatasetError) as caught:
        _check(root)
    message = str(caught.value)
    assert message.startswith("3 of 8 images have bad files")
    assert str(bad["truncated"]) in message and "truncated" in message
    assert str(bad["size"]) in message and "32x16 but its image is 32x32" in message
    assert str(bad["value"]) in message and "[9]" in message


def test_the_report_is_capped(damaged):
    root, _ = damaged
    with pytest.raises(DatasetError, match=r"(?s)3 of 8 images.*\.\.\. and 2 more"):
        _check(root, max_reported=1)


def test_index_is_not_written_when_a_file_is_bad(damaged, tmp_path):
    root, _ = damaged
    with pytest.raises(DatasetError):
        write_index(tmp_path / "dataset.zarr", _dataset(root))
    assert not (tmp_path / "dataset.zarr").exists()


def test_a_clean_dataset_passes(generated):
    records = _check(generated)
    assert len(records) == 8 and all(r.size == (32, 32) and r.has_mask for r in records)
    assert all(r.labels.sum() >= 1 for r in records)  # the generator labels at least one object per image


def _params(tmp_path: Path, root: Path, **edits) -> Path:
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["dataset"]["root"] = str(root)
    for dotted, value in edits.items():
        section, key = dotted.split("__")
        params[section][key] = value
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return path


@pytest.mark.slow  # `wsss` / python subprocesses that import torch
def test_wsss_check_passes_a_good_project(generated, tmp_path):
    result = run(["wsss", "check", "--params", str(_params(tmp_path, generated))], tmp_path)
    assert "sections valid" in result.stderr and "8 images decoded, 8 masks match" in result.stderr


@pytest.mark.slow  # `wsss` / python subprocesses that import torch
def test_wsss_check_reports_every_bad_param_before_any_stage(generated, tmp_path):
    path = _params(tmp_path, generated, crf__alpha_low=-1, random_walk__beta="high")
    raw = yaml.safe_load(path.read_text())
    raw["crff"] = {}
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    result = run(["wsss", "check", "--params", str(path)], tmp_path, check=False)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "3 problem(s)" in result.stderr
    assert "'crf.alpha_low' = -1.0 is out of range" in result.stderr
    assert "'random_walk.beta' must be float" in result.stderr
    assert "unknown section 'crff'" in result.stderr


@pytest.mark.slow  # `wsss` / python subprocesses that import torch
def test_wsss_check_names_a_bad_image(damaged, tmp_path):
    root, bad = damaged
    result = run(["wsss", "check", "--params", str(_params(tmp_path, root))], tmp_path, check=False)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert str(bad["truncated"]) in result.stderr


@pytest.mark.slow  # `wsss` / python subprocesses that import torch
def test_wsss_check_leaves_the_generated_dataset_to_its_stage(tmp_path):
    shutil.copy(ROOT / "params.yaml", tmp_path / "params.yaml")
    result = run(["wsss", "check"], tmp_path)
    assert "made by the synthetic stage" in result.stderr
    assert not (tmp_path / "data").exists() and os.listdir(tmp_path) == ["params.yaml"]


@pytest.mark.slow  # `wsss` / python subprocesses that import torch
def test_a_synthetic_knob_out_of_range_is_named(tmp_path):
    shutil.copy(ROOT / "params.yaml", tmp_path / "params.yaml")
    raw = yaml.safe_load((tmp_path / "params.yaml").read_text())
    raw["synthetic"]["scale"] = [0.1, 0.2, 0.3]
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    result = run(["wsss", "check"], tmp_path, check=False)
    assert result.returncode == 2 and "'synthetic.scale' must be a list of 2 items" in result.stderr


def test_greyscale_and_png_images_decode(generated, tmp_path):
    root = tmp_path / "voc"
    shutil.copytree(generated, root)
    image = root / "JPEGImages/syn_000000.jpg"
    Image.open(image).convert("L").save(image, format="JPEG")
    assert len(_check(root, ("train",))) == 6


@pytest.mark.slow  # `wsss` / python subprocesses that import torch
def test_wsss_check_names_both_keys_of_sizes_that_must_agree(generated, tmp_path):
    path = _params(tmp_path, generated, cams__image_size=112, aff_pairs__image_size=120)
    result = run(["wsss", "check", "--params", str(path)], tmp_path, check=False)
    assert result.returncode == 2 and "2 problem(s)" in result.stderr
    assert "cams.image_size=112 differs from train_cls.image_size=96" in result.stderr
    assert "aff_pairs.image_size=120 must be a multiple of the classifier's token stride 16" in result.stderr


def test_random_walk_refuses_an_affinitynet_without_its_radius(tmp_path):
    """The walk reuses the radius AffinityNet trained on; a checkpoint that does not record it is retrained, not guessed."""
    import torch

    from pipeline.core.errors import InputError
    from pipeline.refine.affinity.net import load_affinitynet

    torch.save({"meta": {"image_size": 128, "hidden_channels": 8, "out_channels": 8}, "state_dict": {}}, tmp_path / "old.pt")
    with pytest.raises(InputError, match="rerun `dvc repro train_aff`"):
        load_affinitynet(tmp_path / "old.pt", tmp_path / "classifier.pt", torch.device("cpu"))
