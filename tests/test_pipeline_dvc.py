"""`dvc repro` of the wired stages on a tiny copy of the project."""
import json

import numpy as np

from pipeline.artifacts import Artifact
from pipeline.voc import load_label_png
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
    report = (project / "report/index.html").read_text()
    assert report.count("<img") >= 3 * 6 and "transformer_attribution" in report
    shown = run(["dvc", "metrics", "show"], project).stdout
    assert "val_map" in shown and "random_walk_miou" in shown and "positive_auc_predicted" in shown


def test_second_repro_does_nothing(reproduced_project):
    status = run(["dvc", "status"], reproduced_project).stdout
    assert "up to date" in status.lower() or status.strip() == ""
