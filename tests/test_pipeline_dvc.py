"""`dvc repro` of the wired stages on a tiny copy of the project."""
import json

import numpy as np

from pipeline.core.artifacts import Artifact
from pipeline.data.label_maps import load_label_png
from tests.conftest import run


def test_repro_runs_every_stage_and_writes_metrics(reproduced_project):
    project = reproduced_project
    classifier = json.loads((project / "metrics/classifier.json").read_text())
    assert 0.0 <= classifier["val_map"] <= 1.0
    segmentation = json.loads((project / "metrics/segmentation.json").read_text())
    for key in ("seed_miou", "crf_confident_miou", "crf_coverage", "random_walk_miou"):
        assert 0.0 <= segmentation[key] <= 100.0
    cams = Artifact(project / "data/cams.zarr", "cams")
    assert len(cams) == 24 and cams.array("cams").dtype == np.float16  # cams.splits: the 24 training images
    refined = Artifact(project / "data/refined.zarr", "refined")
    first = refined.ids[0]
    png = load_label_png(project / "data/pseudo_labels" / f"{first}.png")
    assert np.array_equal(png, refined.read("labels", 0))
    explainability = json.loads((project / "metrics/explainability.json").read_text())
    for method in ("transformer_attribution", "rollout", "raw_attention", "gradcam", "partial_lrp"):
        assert set(explainability[method]) >= {"positive_auc_predicted", "negative_auc_target", "seg_miou", "seg_map"}
    assert (project / "plots/perturbation/transformer_attribution.csv").is_file()
    segmenter = json.loads((project / "metrics/segmenter.json").read_text())
    assert segmenter["split"] == "val" and segmenter["images"] == 12
    for scores in (segmenter, segmenter["crf"]):
        assert 0.0 <= scores["miou"] <= 100.0 and set(scores["per_class_iou"]) == {"background", *classifier["val_ap"]}
    predictions = Artifact(project / "data/seg_predictions.zarr", "seg_predictions")
    png = load_label_png(project / "data/seg_predictions/crf" / f"{predictions.ids[0]}.png")
    assert np.array_equal(png, predictions.read("labels_crf", 0))
    report = (project / "report/index.html").read_text()
    assert report.count("<img") >= 3 * 6 + 3 * 4 and "transformer_attribution" in report and "Segmentation network" in report
    shown = run(["dvc", "metrics", "show"], project).stdout
    assert "val_map" in shown and "random_walk_miou" in shown and "positive_auc_predicted" in shown


def test_second_repro_does_nothing(reproduced_project):
    status = run(["dvc", "status"], reproduced_project).stdout
    assert "up to date" in status.lower() or status.strip() == ""


def test_summary_shows_the_headline_numbers_their_files_and_stage_times(reproduced_project):
    project = reproduced_project
    out = run(["wsss", "summary"], project).stdout
    segmentation = json.loads((project / "metrics/segmentation.json").read_text())
    segmenter = json.loads((project / "metrics/segmenter.json").read_text())
    for value in (segmentation["random_walk_miou"], segmentation["crf_confident_miou"], segmenter["miou"], segmenter["crf"]["miou"]):
        assert f"{value:.2f}" in out
    for path in ("metrics/classifier.json", "metrics/segmentation.json", "metrics/segmenter.json", "metrics/explainability.json"):
        assert path in out
    timed = json.loads((project / "metrics/timings/train_seg.json").read_text())
    assert timed["seconds"] > 0 and timed["cpu_seconds"] > 0 and timed["peak_memory_mib"] > 50  # torch alone is more
    assert "train_seg (" in out and "MiB, " in out and "crop/s)" in out  # memory and throughput
    assert max(len(line) for line in out.splitlines()) < 160  # a table a person reads, not one long line
