"""The dataset formats through the stages: nothing upstream of evaluation reads mask pixels, a
folder + CSV dataset without masks runs to the report, presets validate."""
from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from pipeline.sources.voc import VOCDataset
from stages.check import SECTIONS
from stages.preset import merged
from stages.runner.params import section
from tests.conftest import ROOT, make_project_copy, run

pytestmark = pytest.mark.slow  # torchrun / dvc repro end to end


def _digest(path: Path) -> str:
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    digest = hashlib.sha256()
    for file in files:
        digest.update(str(file.relative_to(path.parent)).encode() + file.read_bytes())
    return digest.hexdigest()


def test_train_cls_and_cams_do_not_read_masks(tmp_path):
    """With annotations present, deleting every mask after the dataset stage changes nothing upstream of evaluation."""
    project = make_project_copy(tmp_path / "project")
    for stage in ("synthetic", "dataset", "train_cls", "cams"):
        run(["wsss", stage], project)
    before = {p: _digest(project / p) for p in ("data/models/classifier.pt", "data/cams.zarr")}
    masks = list((project / "data/synthetic/SegmentationClass").glob("*.png"))
    assert len(masks) == 36
    for mask in masks:
        mask.unlink()
    for stage in ("train_cls", "cams"):
        run(["wsss", stage], project)
    assert {p: _digest(project / p) for p in before} == before


def _folder_dataset(voc: Path, root: Path) -> None:
    """The generated VOC-layout images as a folder + CSV dataset without masks, in one subfolder per split."""
    rows = ["image,split,labels"]
    for split in ("train", "val"):
        dataset = VOCDataset(voc, split)
        (root / "images" / split).mkdir(parents=True)
        for image_id in dataset.ids:
            shutil.copy(voc / "JPEGImages" / f"{image_id}.jpg", root / "images" / split / f"{image_id}.jpg")
            names = ";".join(dataset.class_names[k] for k in np.flatnonzero(dataset.labels(image_id)))
            rows.append(f"{split}/{image_id}.jpg,{split},{names}")
    (root / "labels.csv").write_text("\n".join(rows) + "\n")


def test_folder_dataset_without_masks_runs_to_the_report(tmp_path):
    dataset = {"format": "folder", "root": "own", "splits": ["train", "val"], "held_out": ["val"], "folder": {"labels_file": "labels.csv"}}
    project = make_project_copy(tmp_path / "project", {"dataset": dataset})
    run(["dvc", "repro", "synthetic"], project)  # through DVC: the full run below then skips it
    _folder_dataset(project / "data/synthetic", project / "own")
    run(["dvc", "repro"], project)
    note = "no ground truth for split"
    assert json.loads((project / "metrics/segmentation.json").read_text())["note"] == f"{note} train"
    assert json.loads((project / "metrics/segmenter.json").read_text())["note"] == f"{note} val"
    explain = json.loads((project / "metrics/explainability.json").read_text())
    assert explain["segmentation_test"] == f"segmentation test skipped: {note} val"
    assert explain["transformer_attribution"]["positive_auc_predicted"] is not None and "seg_miou" not in explain["transformer_attribution"]
    report = (project / "report/index.html").read_text()
    assert f"{note} train" in report and f"{note} val" in report
    pngs = sorted(p.name for p in (project / "data/pseudo_labels").iterdir())
    assert len(pngs) == 24 and pngs[0] == "train%2Fsyn_000000.png"  # ids hold "/": escaped, not a folder
    summary = run(["wsss", "summary"], project).stdout
    assert f"{note} train" in summary


@pytest.mark.parametrize("preset", sorted((ROOT / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_each_preset_merged_with_the_defaults_is_valid(preset):
    params = merged(yaml.safe_load((ROOT / "params.yaml").read_text()), yaml.safe_load(preset.read_text()))
    for name, cls in SECTIONS.items():
        section(params, name, cls, preset.name)  # raises, naming the key, on any wrong value
    assert params["dataset"]["format"] in ("voc", "coco")


def test_wsss_preset_writes_valid_params_and_refuses_a_bad_value(tmp_path):
    shutil.copy(ROOT / "params.yaml", tmp_path / "params.yaml")
    run(["wsss", "preset", str(ROOT / "configs/voc2012.yaml"), "--set", "dataset.root=/data/VOC2012"], tmp_path)
    params = yaml.safe_load((tmp_path / "params.yaml").read_text())
    assert params["dataset"]["root"] == "/data/VOC2012" and params["dataset"]["splits"] == ["train_aug", "train", "val"]
    assert params["train_cls"]["demo_hybrid"]["embed_dim"] == 192  # keys the preset leaves alone stay
    before = (tmp_path / "params.yaml").read_text()
    result = run(["wsss", "preset", str(ROOT / "configs/coco2014.yaml"), "--set", "crf.alpha_low=-3"], tmp_path, check=False)
    assert result.returncode == 2 and "crf.alpha_low" in result.stderr and "nothing was written" in result.stderr
    assert (tmp_path / "params.yaml").read_text() == before


def test_voc_train_aug_protocol_runs_end_to_end(tmp_path):
    """Seeds and pseudo-labels on train_aug, pseudo-label mIoU on train (inside train_aug), the segmenter on val."""
    protocol = {
        "dataset": {"root": "voc", "splits": ["train_aug", "train", "val"], "held_out": ["val"], "voc": {"use_aug": True}},
        "train_cls": {"train_split": "train_aug"}, "cams": {"splits": ["train_aug"]}, "aff_pairs": {"split": "train_aug"},
        "train_seg": {"splits": ["train_aug"]}, "evaluate": {"split": "train"}, "report": {"gallery_split": "train"},
    }
    project = make_project_copy(tmp_path / "project", protocol)
    run(["dvc", "repro", "synthetic"], project)
    voc = project / "voc"
    shutil.copytree(project / "data/synthetic", voc)
    lists = voc / "ImageSets/Segmentation"
    train = (lists / "train.txt").read_text().split()
    (lists / "train_aug.txt").write_text("".join(f"{i}\n" for i in train))
    (lists / "train.txt").write_text("".join(f"{i}\n" for i in train[:10]))
    # SBD-style masks for the rest of train_aug: official masks stay where they exist.
    (voc / "SegmentationClassAug").mkdir()
    for image_id in train[10:]:
        shutil.move(voc / "SegmentationClass" / f"{image_id}.png", voc / "SegmentationClassAug" / f"{image_id}.png")
    run(["dvc", "repro", "evaluate", "evaluate_seg"], project)  # and what they need; the explanation benchmark and report add nothing here
    assert json.loads((project / "metrics/segmentation.json").read_text())["images"] == 10
    segmenter = json.loads((project / "metrics/segmenter.json").read_text())
    assert segmenter["split"] == "val" and segmenter["images"] == 12
    assert len(list((project / "data/pseudo_labels").iterdir())) == 24  # every train_aug image
