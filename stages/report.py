"""report stage: one self-contained HTML page with the tables, curves and a gallery of examples."""
from __future__ import annotations

import csv
import html
import json
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.core.artifacts import Artifact
from pipeline.data.ground_truth import GroundTruth
from pipeline.data.index import DatasetIndex
from pipeline.report.config import ReportConfig
from pipeline.report.figures import colour_labels, heatmap, line_chart_svg, png_data_uri, resize_smooth, seed_overlay
from pipeline.seeds.stored import cam_positions, full_resolution_seeds
from stages.runner.outputs import write_text
from stages.runner.paths import (
    AFFINITY_CURVE,
    CAMS,
    CLASSIFIER_CURVE,
    CLASSIFIER_METRICS,
    CRF_LABELS,
    DATASET,
    EXPLAINABILITY_METRICS,
    MASKS,
    PER_CLASS_IOU,
    PERTURBATION_CURVES,
    REFINED,
    REPORT,
    SEG_PREDICTIONS,
    SEGMENTATION_METRICS,
    SEGMENTER_CURVE,
    SEGMENTER_METRICS,
    TIMINGS_PAGE,
)
from stages.runner.spec import StageResult
from stages.runner.stage import Stage

OUTPUT = REPORT

STYLE = """body{font-family:sans-serif;margin:24px;color:#222}table{border-collapse:collapse;margin:8px 0 20px}
td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}
.gallery td{text-align:center;vertical-align:middle}.gallery img{width:128px;height:auto;image-rendering:pixelated;margin:1px}.charts svg{margin-right:12px}"""


def _read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.is_file() else {}


def _read_csv(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        return []
    with path.open() as handle:
        return list(csv.DictReader(handle))


def _number(value: Any) -> str:
    if value is None or value == "":
        return "–"
    try:
        return f"{float(value):.2f}"
    except (TypeError, ValueError):
        return html.escape(str(value))


def table(header: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{_number(c) if i else html.escape(str(c))}</td>" for i, c in enumerate(row)) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _picture_cells(pictures: list[np.ndarray | None]) -> str:
    return "".join(f"<td><img src='{png_data_uri(p)}' alt=''></td>" if p is not None else "<td>–</td>" for p in pictures)


def segmentation_section() -> str:
    metrics = _read_json(SEGMENTATION_METRICS)
    per_class = _read_csv(PER_CLASS_IOU)
    if not metrics:
        return "<p>No segmentation metrics yet.</p>"
    if "note" in metrics:  # no ground truth for the evaluated split
        return f"<p>{html.escape(metrics['note'])}.</p>"
    summary = table(["", "mIoU (%)"], [["seeds", metrics["seed_miou"]], ["CRF confident labels (on labelled pixels)", metrics["crf_confident_miou"]],
                                        ["random walk", metrics["random_walk_miou"]]])
    extra = f"<p>CRF labels cover {metrics['crf_coverage']:.1f}% of pixels at {metrics['crf_pixel_precision']:.1f}% pixel precision; {metrics['images']} {html.escape(metrics['split'])} images.</p>"
    rows = [[r["class"], r["seed"], r["crf_confident"], r["random_walk"]] for r in per_class]
    rows.append(["mean", metrics["seed_miou"], metrics["crf_confident_miou"], metrics["random_walk_miou"]])
    return summary + extra + table(["class", "seed IoU", "CRF confident IoU", "random walk IoU"], rows)


def segmenter_section(count: int) -> str:
    """Val mIoU without and with CRF beside the pseudo-masks' mIoU, per-class IoU, and val examples."""
    metrics, pseudo = _read_json(SEGMENTER_METRICS), _read_json(SEGMENTATION_METRICS)
    if not metrics:
        return "<p>No segmenter metrics yet.</p>"
    if "note" in metrics:
        return f"<p>{html.escape(metrics['note'])}.</p>"
    split = html.escape(metrics["split"])
    summary = table(["", "mIoU (%)", "pixel accuracy (%)"], [
        [f"random-walk pseudo-masks ({html.escape(pseudo.get('split', '?'))}, the training targets)", pseudo.get("random_walk_miou"), None],
        [f"segmenter on {split}", metrics["miou"], metrics["pixel_accuracy"]],
        [f"segmenter on {split}, dense CRF after", metrics["crf"]["miou"], metrics["crf"]["pixel_accuracy"]],
    ])
    per_class = table(["class", "IoU", "IoU with CRF"], [[name, iou, metrics["crf"]["per_class_iou"][name]]
                                                         for name, iou in metrics["per_class_iou"].items()])
    index, truth = DatasetIndex(DATASET), GroundTruth(MASKS)
    predictions = Artifact(SEG_PREDICTIONS, "seg_predictions")
    where = {image_id: i for i, image_id in enumerate(index.ids)}
    lines = []
    for row, image_id in enumerate(predictions.ids[:count]):
        pictures = [index.image(where[image_id]), colour_labels(predictions.read("labels", row)),
                    colour_labels(predictions.read("labels_crf", row)),
                    colour_labels(truth.mask(image_id)) if image_id in truth else None]
        lines.append(f"<tr><td>{html.escape(image_id)}</td>{_picture_cells(pictures)}</tr>")
    header = "".join(f"<th>{h}</th>" for h in ("id", "image", "prediction", "prediction + CRF", "ground truth"))
    return (summary + f"<p>{metrics['images']} {split} images; multi-scale and flip averaged.</p>" + per_class
            + f"<table class='gallery'><tr>{header}</tr>{''.join(lines)}</table>")


def explanation_section() -> str:
    metrics = _read_json(EXPLAINABILITY_METRICS)
    methods = [m for m, v in metrics.items() if isinstance(v, dict)]
    if not methods:
        return "<p>No explanation metrics yet.</p>"
    skipped = f"<p>{html.escape(metrics['segmentation_test'])}.</p>" if "segmentation_test" in metrics else ""
    subset = f"<p>{html.escape(metrics['note'])}.</p>" if "note" in metrics else ""
    perturbation = table(["method", "pos. AUC pred. ↓", "neg. AUC pred. ↑", "pos. AUC target ↓", "neg. AUC target ↑"],
                         [[m, metrics[m].get("positive_auc_predicted"), metrics[m].get("negative_auc_predicted"),
                           metrics[m].get("positive_auc_target"), metrics[m].get("negative_auc_target")] for m in methods])
    segmentation = table(["method", "pixel accuracy", "mAP", "mIoU"],
                         [[m, metrics[m].get("seg_pixel_accuracy"), metrics[m].get("seg_map"), metrics[m].get("seg_miou")] for m in methods])
    charts = []
    for m in methods:
        rows = _read_csv(PERTURBATION_CURVES / f"{m}.csv")
        if rows:
            x = [float(r["fraction"]) for r in rows]
            series = {k: [float(r[k]) if r[k] else None for r in rows] for k in rows[0] if k != "fraction"}
            charts.append(line_chart_svg(x, series, f"{m}: accuracy (%) vs fraction removed"))
    return (subset + f"<h3>Perturbation test (source: {html.escape(str(metrics['source']))})</h3>" + perturbation
            + "<h3>Segmentation test</h3>" + (skipped or segmentation) + f"<div class='charts'>{''.join(charts)}</div>")


def curves_section() -> str:
    charts = []
    for path, title, keys in ((CLASSIFIER_CURVE, "classifier", ["loss", "val_map"]),
                              (AFFINITY_CURVE, "AffinityNet", ["loss"]),
                              (SEGMENTER_CURVE, "segmenter", ["loss"])):
        rows = _read_csv(path)
        if rows:
            x = [float(r["epoch"]) for r in rows]
            for key in keys:
                charts.append(line_chart_svg(x, {key: [float(r[key]) for r in rows]}, f"{title} {key} per epoch"))
    return f"<div class='charts'>{''.join(charts)}</div>" if charts else "<p>No training curves yet.</p>"


def gallery_section(count: int, split: str) -> str:
    index, truth = DatasetIndex(DATASET), GroundTruth(MASKS)
    cams, crf, refined = Artifact(CAMS, "cams"), Artifact(CRF_LABELS, "crf_labels"), Artifact(REFINED, "refined")
    positions = cam_positions(index, cams)
    in_split = index.in_split(split) if split in index.splits else np.zeros(len(index.ids), dtype=bool)
    rows = [r for r, p in enumerate(positions) if in_split[p]][:count]
    header = "".join(f"<th>{h}</th>" for h in ("image", "seed map", "CRF confident labels", "affinity (mean to neighbours)", "refined mask", "ground truth"))
    lines = []
    for row in rows:
        image = index.image(positions[row])
        size = image.shape[:2]
        seeds, _ = full_resolution_seeds(cams, row, size)
        affinity = refined.read("affinity", row).astype(np.float32)
        image_id = index.ids[positions[row]]
        pictures = [image, seed_overlay(image, seeds), colour_labels(crf.read("labels", row)), resize_smooth(heatmap(affinity), size),
                    colour_labels(refined.read("labels", row)), colour_labels(truth.mask(image_id)) if image_id in truth else None]
        cells = _picture_cells(pictures)
        names = ", ".join(index.class_names[k] for k in np.nonzero(index.labels[positions[row]])[0])
        lines.append(f"<tr><td>{html.escape(index.ids[positions[row]])}<br><small>{html.escape(names)}</small></td>{cells}</tr>")
    return f"<table class='gallery'><tr><th>id</th>{header}</tr>{''.join(lines)}</table>"


def run(stage: Stage) -> StageResult:
    """Write report/index.html: segmentation and explanation tables, training curves, example gallery."""
    cfg = stage.section("report", ReportConfig)
    classifier = _read_json(CLASSIFIER_METRICS)
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>vit-wsss report</title>", f"<style>{STYLE}</style></head><body>",
        "<h1>vit-wsss report</h1>",
        f"<p>Classifier validation mAP: {_number(classifier.get('val_map'))}</p>" if classifier else "",
        "<h2>Pseudo-mask quality</h2>", segmentation_section(),
        "<h2>Segmentation network</h2>", segmenter_section(cfg.gallery_images),
        "<h2>Explanation methods</h2>", explanation_section(),
        "<h2>Training curves</h2>", curves_section(),
        "<h2>Examples</h2>", gallery_section(cfg.gallery_images, cfg.gallery_split),
        "<h2>Where the time goes</h2>",
        # Embedded, not copied: timings belong to the machine that ran each stage, not to the cached report.
        f"<p>Wall time, CPU time, peak memory and throughput of each stage's last run on this machine "
        f"(<a href='{TIMINGS_PAGE.name}'>{TIMINGS_PAGE.name}</a>, rewritten by every stage).</p>",
        f"<iframe src='{TIMINGS_PAGE.name}' title='stage timings' style='width:100%;height:420px;border:0'></iframe>",
        "</body></html>",
    ]
    write_text(OUTPUT, "\n".join(parts))
    stage.say(f"{OUTPUT} ({OUTPUT.stat().st_size // 1024} KiB)")
    return StageResult(cfg.gallery_images, "gallery image")
