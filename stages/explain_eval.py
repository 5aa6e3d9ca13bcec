"""explain_eval stage: perturbation and segmentation tests of every explanation method."""
from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from pipeline.classifier.model import build_classifier, load_classifier
from pipeline.core.distributed import Group, batch_rows
from pipeline.core.errors import InputError
from pipeline.core.memory import MemoryConfig
from pipeline.core.progress import progress_bar
from pipeline.data.ground_truth import GroundTruth, no_ground_truth
from pipeline.data.index import DatasetIndex
from pipeline.data.label_maps import resize_labels
from pipeline.data.preprocess import normalise, resize_square, to_tensor
from pipeline.evaluation import imagenet
from pipeline.evaluation.explanations import ExplainEvalConfig, evaluate_method
from pipeline.explain.planning import planned_explainers
from pipeline.seeds.relevance import require_method
from stages.runner.outputs import write_csv, write_json
from stages.runner.paths import CLASSIFIER, DATASET, EXPLAINABILITY_METRICS, MASKS, PERTURBATION_CURVES
from stages.runner.spec import StageResult
from stages.runner.stage import Stage

METRICS = EXPLAINABILITY_METRICS
CURVES = PERTURBATION_CURVES


def dataset_batches(index: DatasetIndex, positions: np.ndarray, size: int, batch_size: int,
                    truth: GroundTruth | None) -> Iterator[dict[str, torch.Tensor]]:
    """Unnormalised [0, 1] images, multi-hot labels and, given ground truth, masks (nearest-resized)."""
    for start in range(0, len(positions), batch_size):
        part = positions[start : start + batch_size]
        images = to_tensor([resize_square(index.image(int(p)), size) for p in part]).float() / 255.0
        batch = {"images": images, "labels": torch.from_numpy(index.labels[part]).long()}
        if truth is not None:
            masks = truth.masks([index.ids[int(p)] for p in part])
            batch["masks"] = torch.from_numpy(np.stack([resize_labels(m, (size, size)) for m in masks]))
        yield batch


def summarise(result: dict[str, Any]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Headline numbers (percent) and the per-step accuracy rows of one method's results."""
    headline: dict[str, Any] = {}
    rows: dict[float, dict[str, Any]] = {}
    for mode, summary in result.get("perturbation", {}).items():
        for sign in ("positive", "negative"):
            headline[f"{sign}_auc_{mode}"] = summary[sign]["auc"]
            for fraction, accuracy in zip(summary["fractions"], summary[sign]["accuracy"]):
                rows.setdefault(fraction, {"fraction": round(fraction, 2)})[f"{sign}_{mode}"] = accuracy
    if "segmentation" in result:
        segmentation = result["segmentation"]
        headline.update(seg_pixel_accuracy=segmentation["pixel_accuracy"], seg_miou=segmentation["miou"], seg_map=segmentation["map"])
    return headline, [rows[f] for f in sorted(rows)]


def _limit(n: int, max_images: int) -> int:
    return n if max_images == 0 else min(n, max_images)


def run_on_dataset(cfg: ExplainEvalConfig, device: torch.device, group: Group, budget: int) -> tuple[dict[str, dict[str, Any]], dict[str, str], int]:
    """Each method's results on explain_eval.split, notes (the segmentation test skipped: no
    ground truth; or both tests run on the images that have ground truth only), and the number
    of (image, method) evaluations."""
    index, truth = DatasetIndex(DATASET), GroundTruth(MASKS)
    model, meta = load_classifier(CLASSIFIER, device)
    in_split = [int(p) for p in index.indices([cfg.split])]
    with_mask = [p for p in in_split if index.ids[p] in truth]
    # Without ground truth the perturbation test still runs (it needs image labels only).
    segment = bool(with_mask)
    positions = with_mask if segment else in_split
    positions = np.array(positions[: _limit(len(positions), cfg.max_images)], dtype=np.int64)
    if len(positions) == 0:
        raise InputError(f"explain_eval.split='{cfg.split}' has no image; choose a split of dataset.splits")
    for method in cfg.methods:
        require_method(model, method, "explain_eval.methods")
    results = {}
    mine = positions[batch_rows(len(positions), cfg.batch_size, group)]
    explainers, max_forward, _ = planned_explainers(model, cfg.methods, cfg.start_layer, meta["image_size"], cfg.batch_size,
                                                  cfg.max_forward_batch, budget, device, "explain_eval")
    for method in cfg.methods:
        bar = progress_bar(len(mine), desc=f"explain_eval {method}")
        results[method] = evaluate_method(
            model, dataset_batches(index, mine, meta["image_size"], cfg.batch_size, truth if segment else None), normalise,
            explainers[method], rule="multi_label", segmentation_mode="predicted" if segment else None, max_batch=max_forward,
            progress=bar.update, group=group,
        )
        bar.close()
    evaluations = len(positions) * len(cfg.methods)
    if not segment:
        return results, {"segmentation_test": f"segmentation test skipped: {no_ground_truth(cfg.split)}"}, evaluations
    if len(with_mask) < len(in_split):
        return results, {"note": f"both tests on the {len(with_mask)} of {len(in_split)} images of split {cfg.split} that have ground truth"}, evaluations
    return results, {}, evaluations


def run_on_imagenet(cfg: ExplainEvalConfig, device: torch.device, group: Group, budget: int) -> tuple[dict[str, dict[str, Any]], dict[str, str], int]:
    """Each method's results on ImageNet val (perturbation) and/or ImageNet-segmentation, no
    notes, and the number of (image, method) evaluations."""
    settings = cfg.imagenet
    if not settings.val_root and not settings.segmentation_file:
        raise InputError("explain_eval.source=imagenet needs explain_eval.imagenet.val_root and/or segmentation_file")
    model = build_classifier(settings.model, 1000, settings.image_size, settings.pretrained).to(device).eval()
    for method in cfg.methods:
        require_method(model, method, "explain_eval.methods")
    results: dict[str, dict[str, Any]] = {method: {} for method in cfg.methods}
    evaluations = 0
    explainers, max_forward, _ = planned_explainers(model, cfg.methods, cfg.start_layer, settings.image_size, cfg.batch_size,
                                                  cfg.max_forward_batch, budget, device, "explain_eval")
    for method in cfg.methods:
        explainer = explainers[method]
        if settings.val_root:
            val = imagenet.read_imagenet_val(settings.val_root, settings.labels_file)
            rows = batch_rows(_limit(len(val), cfg.max_images), cfg.batch_size, group)
            evaluations += _limit(len(val), cfg.max_images)
            bar = progress_bar(len(rows), desc=f"perturbation {method}")
            results[method].update(evaluate_method(
                model, imagenet.batches(val, cfg.batch_size, settings.image_size, rows), normalise,
                explainer, rule="single_label", segmentation_mode=None, max_batch=max_forward, progress=bar.update, group=group))
            bar.close()
        if settings.segmentation_file:
            with imagenet.ImageNetSegmentation(settings.segmentation_file) as seg:
                rows = batch_rows(_limit(len(seg), cfg.max_images), cfg.batch_size, group)
                evaluations += _limit(len(seg), cfg.max_images)
                bar = progress_bar(len(rows), desc=f"segmentation {method}")
                results[method].update(evaluate_method(
                    model, imagenet.batches(seg, cfg.batch_size, settings.image_size, rows), normalise,
                    explainer, rule="single_label", perturbation_modes=(), max_batch=max_forward, progress=bar.update,
                    group=group))
                bar.close()
    return results, {}, evaluations


def run(stage: Stage) -> StageResult:
    """Positive/negative perturbation AUCs (predicted and target class) and the segmentation test, per method."""
    cfg = stage.section("explain_eval", ExplainEvalConfig)
    group, device = stage.join()
    budget = stage.section("memory", MemoryConfig).budget_bytes
    results, notes, evaluations = (run_on_dataset if cfg.source == "dataset" else run_on_imagenet)(cfg, device, group, budget)
    stage.done()
    if not group.is_main:
        return StageResult(evaluations, "evaluation")
    metrics: dict[str, Any] = {"source": cfg.source, **notes}
    for note in notes.values():
        stage.say(note)
    CURVES.mkdir(parents=True, exist_ok=True)
    for stale in CURVES.glob("*.csv"):
        stale.unlink()
    for method, result in results.items():
        headline, rows = summarise(result)
        metrics[method] = headline
        if rows:
            write_csv(CURVES / f"{method}.csv", rows)
        stage.say(f"{method}: " + ", ".join(f"{k} {v:.2f}" for k, v in headline.items() if v is not None))
    write_json(METRICS, metrics)
    return StageResult(evaluations, "evaluation")
