"""evaluate_seg stage: segment every image of a split (multi-scale + flip), with and without
dense-CRF post-processing, and score both against the ground truth."""
from __future__ import annotations

import numpy as np

from pipeline.core.artifacts import Artifact
from pipeline.core.errors import InputError
from pipeline.core.files import id_filename
from pipeline.core.memory import MemoryConfig
from pipeline.data.ground_truth import GroundTruth, no_ground_truth
from pipeline.data.index import DatasetIndex
from pipeline.data.label_maps import save_label_png
from pipeline.evaluation.pseudo_labels import SegmentationScore
from pipeline.segmentation.infer import EvaluateSegConfig, check_inference_fits, crf_labels, predict_probs
from pipeline.segmentation.net import load_segmenter
from stages.runner.outputs import echo, write_csv, write_json
from stages.runner.paths import DATASET, MASKS, SEG_PREDICTION_PNGS, SEG_PREDICTIONS, SEGMENTER, SEGMENTER_METRICS, SEGMENTER_PER_CLASS_IOU
from stages.runner.spec import StageResult
from stages.runner.stage import Stage

KIND = "seg_predictions"
VARIANTS = ("network", "network_crf")  # without and with CRF post-processing


def _scores(score: SegmentationScore, names: list[str]) -> dict[str, object]:
    iou = score.iou()
    return {
        "miou": round(score.miou() * 100, 3),
        "pixel_accuracy": round(score.pixel_precision() * 100, 3),
        "per_class_iou": {n: (None if np.isnan(v) else round(float(v) * 100, 3)) for n, v in zip(names, iou)},
    }


def check_held_out(index: DatasetIndex, split: str, trained_on: dict) -> None:
    """Stop when the images scored were seen with pixel supervision (train_seg.supervision: ground_truth)."""
    if trained_on.get("supervision") != "ground_truth":
        return
    trained = np.zeros(len(index.ids), dtype=bool)
    trained[index.indices(trained_on["splits"])] = True
    seen = index.in_split(split) & trained
    if seen.any():
        raise InputError(f"evaluate_seg.split='{split}': {int(seen.sum())} of its images were in the segmenter's ground-truth training "
                         f"splits {trained_on['splits']}; score a split it did not train on, or train on splits without these images")


def run(stage: Stage) -> StageResult:
    """Predictions -> data/seg_predictions.zarr and PNGs, metrics/segmenter.json, per-class IoU plot."""
    cfg = stage.section("evaluate_seg", EvaluateSegConfig)
    device = stage.device
    index, truth = DatasetIndex(DATASET), GroundTruth(MASKS)
    positions = index.indices([cfg.split])
    if len(positions) == 0:
        raise InputError(f"{stage.source}: evaluate_seg.split='{cfg.split}' has no image")
    net, meta = load_segmenter(SEGMENTER, device)
    names = ["background", *index.class_names]
    if meta["class_names"] != names:
        raise InputError(f"{SEGMENTER} predicts {meta['class_names']} but {DATASET} has {names}; rerun train_seg")
    check_held_out(index, cfg.split, meta.get("trained_on", {}))
    ids = [index.ids[p] for p in positions]
    max_size = tuple(int(v) for v in index.sizes[positions].max(axis=0))
    # the largest height and width of the split together bound every image's peak
    check_inference_fits(net, max_size, cfg.scales, cfg.flip, stage.section("memory", MemoryConfig).budget_bytes, device,
                         f"evaluate_seg on {cfg.split}")
    attrs = {"class_names": index.class_names, "split": cfg.split, "scales": cfg.scales, "flip": cfg.flip,
             "values": "0 background, k class k; labels: the network, labels_crf: after the dense CRF"}
    with stage.sharded(SEG_PREDICTIONS, KIND, ids, attrs) as job:
        job.out.create("labels", max_size, "uint8", max_shape=True)
        job.out.create("labels_crf", max_size, "uint8", max_shape=True)
        png_folder = job.out.attach_folder(SEG_PREDICTION_PNGS)
        (png_folder / "crf").mkdir(exist_ok=True)
        for rows in job.batches(1):
            row = rows.start
            image = index.image(int(positions[row]))
            probs = predict_probs(net, image, cfg.scales, cfg.flip, device)
            network, with_crf = probs.argmax(axis=0).astype(np.uint8), crf_labels(image, probs, cfg.crf)
            save_label_png(png_folder / f"{id_filename(ids[row])}.png", network)
            save_label_png(png_folder / "crf" / f"{id_filename(ids[row])}.png", with_crf)
            job.out.write("labels", row, network)
            job.out.write("labels_crf", row, with_crf)
    stage.say(f"{len(ids)} {cfg.split} images predicted -> {SEG_PREDICTIONS}, {SEG_PREDICTION_PNGS}/")
    if stage.group.is_main:
        write_scores(Artifact(SEG_PREDICTIONS, KIND), truth, cfg.split, names)
    return StageResult(len(ids), "image")


def write_scores(predictions: Artifact, truth: GroundTruth, split: str, names: list[str]) -> None:
    """Score the committed predictions (those of a resumed run included) against the ground truth."""
    rows = [row for row, image_id in enumerate(predictions.ids) if image_id in truth]
    if not rows:
        note = no_ground_truth(split)
        write_json(SEGMENTER_METRICS, {"split": split, "images": 0, "predicted": len(predictions), "note": note})
        write_csv(SEGMENTER_PER_CLASS_IOU, [{"class": n, "network": None, "network_crf": None} for n in names])
        echo(f"evaluate_seg: {note}, nothing scored")
        return
    scores = {variant: SegmentationScore(len(names)) for variant in VARIANTS}
    targets = list(truth.masks([predictions.ids[row] for row in rows]))
    for variant, array in zip(VARIANTS, ("labels", "labels_crf")):
        for prediction, target in zip(predictions.iter_rows(array, rows), targets):
            scores[variant].add(prediction, target)
    network, with_crf = _scores(scores["network"], names), _scores(scores["network_crf"], names)
    write_json(SEGMENTER_METRICS, {"split": split, "images": len(rows), **network, "crf": with_crf})
    write_csv(SEGMENTER_PER_CLASS_IOU, [{"class": n, "network": network["per_class_iou"][n], "network_crf": with_crf["per_class_iou"][n]}
                                        for n in names])
    echo(f"evaluate_seg: {split} mIoU {network['miou']:.2f} (with CRF {with_crf['miou']:.2f}) on {len(rows)} images -> {SEGMENTER_METRICS}")
