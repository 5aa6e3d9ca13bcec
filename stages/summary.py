"""summary: the headline numbers of the last run as one short table (not a DVC stage)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from stages.runner import params as P
from stages.runner.paths import CLASSIFIER_METRICS, EXPLAINABILITY_METRICS, SEGMENTATION_METRICS, SEGMENTER_METRICS, TIMINGS
from stages.timings import stage_timings


def _read(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _fmt(value: Any, suffix: str = "") -> str:
    return "–" if value is None else f"{value:.2f}{suffix}" if isinstance(value, (int, float)) else str(value)


def rows(params_file: Path) -> list[tuple[str, str, str, str]]:
    """(group, figure, value, file) for every number the summary shows; absent files give '–'."""
    classifier = _read(CLASSIFIER_METRICS)
    pseudo = _read(SEGMENTATION_METRICS)
    segmenter = _read(SEGMENTER_METRICS)
    explain = _read(EXPLAINABILITY_METRICS)
    try:
        raw = P.load(params_file)
    except P.ParamsError:
        raw = {}
    method = raw.get("cams", {}).get("method", "")
    background = raw.get("evaluate", {}).get("seed_background")
    aucs = explain.get(method, {})
    val_map = classifier.get("val_map")
    pseudo_group, segmenter_group = f"pseudo-masks ({pseudo.get('split', '?')})", f"segmenter ({segmenter.get('split', '?')})"
    # Without ground truth the evaluation stages write a note instead of scores: show it.
    pseudo_rows = [(pseudo_group, pseudo["note"], "–", str(SEGMENTATION_METRICS))] if "note" in pseudo else [
        (pseudo_group, f"seeds mIoU (background {_fmt(background)})", _fmt(pseudo.get("seed_miou")), str(SEGMENTATION_METRICS)),
        ("", f"seeds mIoU at best background ({_fmt(pseudo.get('seed_best_background'))})", _fmt(pseudo.get("seed_miou_best_background")), ""),
        ("", f"CRF confident mIoU ({_fmt(pseudo.get('crf_coverage'), '%')} of pixels)", _fmt(pseudo.get("crf_confident_miou")), ""),
        ("", "random walk mIoU", _fmt(pseudo.get("random_walk_miou")), ""),
    ]
    segmenter_rows = [(segmenter_group, segmenter["note"], "–", str(SEGMENTER_METRICS))] if "note" in segmenter else [
        (segmenter_group, "mIoU", _fmt(segmenter.get("miou")), str(SEGMENTER_METRICS)),
        ("", "mIoU with dense CRF", _fmt(segmenter.get("crf", {}).get("miou")), ""),
    ]
    out = [
        ("classifier", "val mAP (%)", _fmt(val_map * 100 if val_map is not None else None), str(CLASSIFIER_METRICS)),
        *pseudo_rows,
        *segmenter_rows,
        (f"explanations ({method or '?'})", "perturbation AUC: positive ↓ / negative ↑",
         f"{_fmt(aucs.get('positive_auc_predicted'))} / {_fmt(aucs.get('negative_auc_predicted'))}", str(EXPLAINABILITY_METRICS)),
        ("", explain.get("segmentation_test", "segmentation test mIoU"), _fmt(aucs.get("seg_miou")), ""),
    ]
    for i, timing in enumerate(stage_timings(TIMINGS)):
        # CPU time, peak memory and throughput where recorded (older timings files have fewer fields).
        extra = f" ({timing['cpu_seconds']:.0f} s CPU, {timing['peak_memory_mib']:.0f} MiB" if "cpu_seconds" in timing else ""
        if extra and "items_per_second" in timing:
            extra += f", {timing['items_per_second']:.1f} {timing['items'][1]}/s"
        if timing.get("processes", 1) > 1:
            extra += f", {timing['processes']} processes"
        extra += ")" if extra else ""
        out.append(("stage wall time (s)" if i == 0 else "", timing["stage"] + extra, f"{timing['seconds']:.0f}", f"{TIMINGS}/" if i == 0 else ""))
    return out


def main(params_file: Path = typer.Option(Path("params.yaml"), "--params", help="Params file (cams.method, evaluate.seed_background).")) -> None:
    """Print the classifier, pseudo-mask, segmenter and explanation figures, stage times, and their files."""
    table = rows(params_file)
    widths = [max(len(row[i]) for row in table) for i in range(3)]
    typer.echo(f"{'':<{widths[0]}}  {'figure':<{widths[1]}}  {'value':>{widths[2]}}  file")
    for group, figure, value, source in table:
        typer.echo(f"{group:<{widths[0]}}  {figure:<{widths[1]}}  {value:>{widths[2]}}  {source}")
    typer.echo("(all metrics: dvc metrics show; curves: dvc plots show; pictures: report/index.html)")
