"""evaluate stage: mIoU of the seeds, the CRF confident labels and the random-walk masks."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline.artifacts import Artifact, require_same_ids
from pipeline.dataset_index import DatasetIndex
from pipeline.errors import InputError
from pipeline.evaluation import EvaluateConfig, SegmentationScore, seed_labels
from pipeline.progress import progress
from pipeline.seeds import cam_positions, present_class_maps, upsample_seeds
from stages.common import PARAMS_OPTION, StageParams, echo, write_csv, write_json
from stages.paths import CAMS, CONFUSION, CRF_LABELS, DATASET, PER_CLASS_IOU, REFINED, SEGMENTATION_METRICS

METRICS = SEGMENTATION_METRICS
PER_CLASS = PER_CLASS_IOU


def _rounded(values: np.ndarray) -> list:
    return [None if np.isnan(v) else round(float(v) * 100, 3) for v in values]


def main(params_file: Path = PARAMS_OPTION) -> None:
    """Confusion matrices over evaluate.split (255 ignored) -> metrics/segmentation.json, per-class IoU table."""
    params = StageParams(params_file)
    cfg = params.section("evaluate", EvaluateConfig)
    index = DatasetIndex(DATASET)
    cams, crf, refined = Artifact(CAMS, "cams"), Artifact(CRF_LABELS, "crf_labels"), Artifact(REFINED, "refined")
    positions = cam_positions(index, cams)
    require_same_ids(cams, crf)
    require_same_ids(cams, refined)
    split = index.splits.index(cfg.split) if cfg.split in index.splits else None
    rows = [r for r, p in enumerate(positions) if split is not None and index.split_of[p] == split and index.has_mask[p]]
    if not rows:
        raise InputError(f"evaluate.split='{cfg.split}': no image of that split with a ground-truth mask is in {CAMS}; "
                         f"choose one of cams.splits ({', '.join(cams.attrs.get('splits', []) or index.splits)})")
    num_classes = index.num_classes + 1
    scores = {name: SegmentationScore(num_classes) for name in ("seed", "crf", "random_walk")}
    # The seeds' mIoU depends on the background score; the best of a sweep is reported beside it.
    sweep = {round(b, 2): SegmentationScore(num_classes) for b in np.arange(0.05, 0.55, 0.05)}
    for row in progress(rows, total=len(rows), desc="evaluate"):
        target = index.mask(positions[row])
        maps, labels = present_class_maps(cams.read("cams", row), cams.read("labels", row))
        full = upsample_seeds(maps, target.shape)  # once per image, for every background score
        scores["seed"].add(seed_labels(full, labels, cfg.seed_background), target)
        for background, score in sweep.items():
            score.add(seed_labels(full, labels, background), target)
        scores["crf"].add(crf.read("labels", row), target)
        scores["random_walk"].add(refined.read("labels", row), target)
    seed, crf_score, walk = scores["seed"], scores["crf"], scores["random_walk"]
    metrics = {
        "images": len(rows),
        "split": cfg.split,
        "seed_miou": round(seed.miou() * 100, 3),
        "seed_miou_best_background": round(max(score.miou() for score in sweep.values()) * 100, 3),
        "seed_best_background": max(sweep, key=lambda b: sweep[b].miou()),
        "crf_confident_miou": round(float(np.nanmean(crf_score.confident_iou())) * 100, 3),
        "crf_pixel_precision": round(crf_score.pixel_precision() * 100, 3),
        "crf_coverage": round(crf_score.coverage() * 100, 3),
        "random_walk_miou": round(walk.miou() * 100, 3),
    }
    metrics["random_walk_gain"] = round(metrics["random_walk_miou"] - metrics["seed_miou"], 3)
    write_json(METRICS, metrics)
    names = ["background", *index.class_names]
    per_class = zip(names, _rounded(seed.iou()), _rounded(crf_score.confident_iou()), _rounded(walk.iou()))
    write_csv(PER_CLASS, [{"class": n, "seed": s, "crf_confident": c, "random_walk": w} for n, s, c, w in per_class])
    write_json(CONFUSION, {"classes": names, "columns": [*names, "unlabelled"], **{k: v.confusion.tolist() for k, v in scores.items()}})
    echo(f"evaluate: seed mIoU {metrics['seed_miou']:.2f}, CRF confident mIoU {metrics['crf_confident_miou']:.2f} "
         f"(coverage {metrics['crf_coverage']:.1f}%), random walk mIoU {metrics['random_walk_miou']:.2f} on {len(rows)} {cfg.split} images")
