"""evaluate stage: mIoU of the seeds, the CRF confident labels and the random-walk masks."""
from __future__ import annotations

import numpy as np

from pipeline.core.artifacts import Artifact, require_same_ids
from pipeline.core.errors import InputError
from pipeline.core.progress import progress
from pipeline.data.ground_truth import GroundTruth, no_ground_truth
from pipeline.data.index import DatasetIndex
from pipeline.evaluation.pseudo_labels import EvaluateConfig, PseudoLabelEvaluation
from pipeline.seeds.stored import cam_positions, present_class_maps, upsample_seeds
from stages.runner.outputs import write_csv, write_json
from stages.runner.paths import CAMS, CONFUSION, CRF_LABELS, DATASET, MASKS, PER_CLASS_IOU, REFINED, SEGMENTATION_METRICS
from stages.runner.spec import StageResult
from stages.runner.stage import Stage

METRICS = SEGMENTATION_METRICS
PER_CLASS = PER_CLASS_IOU


def run(stage: Stage) -> StageResult:
    """Confusion matrices over evaluate.split (255 ignored) -> metrics/segmentation.json, per-class IoU table."""
    cfg = stage.section("evaluate", EvaluateConfig)
    index, truth = DatasetIndex(DATASET), GroundTruth(MASKS)
    cams, crf, refined = Artifact(CAMS, "cams"), Artifact(CRF_LABELS, "crf_labels"), Artifact(REFINED, "refined")
    positions = cam_positions(index, cams)
    require_same_ids(cams, crf)
    require_same_ids(cams, refined)
    in_split = index.in_split(cfg.split) if cfg.split in index.splits else np.zeros(len(index.ids), dtype=bool)
    in_cams = [r for r, p in enumerate(positions) if in_split[p]]
    if not in_cams:
        raise InputError(f"evaluate.split='{cfg.split}': no image of that split is in {CAMS}; "
                         f"choose one of cams.splits ({', '.join(cams.attrs.get('splits', []) or index.splits)})")
    names = ["background", *index.class_names]
    rows = [r for r in in_cams if cams.ids[r] in truth]
    if not rows:
        note = no_ground_truth(cfg.split)
        write_json(METRICS, {"split": cfg.split, "images": 0, "note": note})
        write_csv(PER_CLASS, [{"class": n, "seed": None, "crf_confident": None, "random_walk": None} for n in names])
        write_json(CONFUSION, {"note": note})
        stage.say(f"{note}; {len(in_cams)} pseudo-masks made, nothing scored")
        return StageResult(len(in_cams), "image")
    evaluation = PseudoLabelEvaluation(index.num_classes + 1, cfg)
    stores = zip(truth.masks([cams.ids[r] for r in rows]), cams.iter_rows("cams", rows), cams.iter_rows("labels", rows),
                 crf.iter_rows("labels", rows), refined.iter_rows("labels", rows))
    for target, cam, cam_labels, crf_labels, walked in progress(stores, total=len(rows), desc="evaluate"):
        maps, labels = present_class_maps(cam, cam_labels)
        full = upsample_seeds(maps, target.shape)  # once per image, for every background score
        evaluation.add(target, full, labels, crf_labels, walked)
    metrics = evaluation.metrics()
    write_json(METRICS, metrics)
    write_csv(PER_CLASS, evaluation.per_class(names))
    write_json(CONFUSION, evaluation.confusion(names))
    stage.say(f"seed mIoU {metrics['seed_miou']:.2f}, CRF confident mIoU {metrics['crf_confident_miou']:.2f} "
         f"(coverage {metrics['crf_coverage']:.1f}%), random walk mIoU {metrics['random_walk_miou']:.2f} on {len(rows)} {cfg.split} images")
    return StageResult(len(rows), "image")
